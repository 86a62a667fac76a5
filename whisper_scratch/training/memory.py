"""The GPU memory of a training run, found without a GPU: the run's own step and evaluation code
(`Trainer._train_step`, `evaluate`) traced once over fake tensors (torch's FakeTensorMode: shapes
and dtypes, no data), every storage it creates and frees fed to a model of PyTorch's CUDA caching
allocator. A large-v3 step, more than this machine's RAM in fp32 with AdamW, takes seconds.

    cfg = config_from_args(parse_args(["@configs/6gb.args"]))
    estimate(cfg, SIZES["base"], CARDS["6gb"]).total        # bytes, CUDA context included

What is traced is the worst case the preset allows: every clip as long as --max-duration (trimmed as
--trim-padding trims it), every transcript of --max-label-tokens tokens (else the decoder context),
full batches; a first optimizer step (which creates the AdamW states), a second one of up to two
micro-batches (a third allocates as the second did), then the evaluation of one eval batch. The
card class decides the precision and the attention path: capability 7.5 (the 6gb and 12gb classes)
runs fp16 with a gradient scaler and the math attention, full (B, H, T, T) fp32 matrices; 8.x runs
bf16 with flash attention.

The trace runs on the CPU, so what differs on a GPU is modelled: the batch is copied from the host
as `.to(device)` copies it, AdamW is the fused one `make_optimizer` picks on CUDA, and the flash
kernel's backward scratch that the CPU kernel lacks is added. A fake tensor has no values, so the
few values the code reads back are answered here (`FakeAnswers`): the last non-zero mel frame is the
longest clip's, losses and norms are finite, decoding runs `decode_steps` steps.
"""
from __future__ import annotations

import bisect
import gc
import weakref
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..audio.geometry import HOP_LENGTH, SAMPLE_RATE
from ..common.precision import DTYPES
from ..model.loaded import whisper_vocabulary
from ..model.whisper import ModelDimensions, Whisper
from .config import TrainConfig
from .dataset import Example, collate
from .loop import Trainer, evaluate
from .setup import Distributed, TrainData, configure_trainable, lr_factor, make_optimizer
from .state import TrainState

GiB = 2**30
MiB = 2**20
# A process's CUDA context before any tensor: 287 MB measured with lazy module loading (PyTorch's
# default since 1.13, pytorch/pytorch#86509), plus the cuBLAS and cuDNN kernels a training step
# loads on first use. `bench/preset_memory.py --device cuda` measures it on the card at hand.
CUDA_CONTEXT_GIB = 0.4

WEIGHTS, GRADIENTS, OPTIMIZER, OTHER = "weights", "gradients", "AdamW states", "activations and temporaries"


@dataclass(frozen=True)
class CardClass:
    """A class of GPU by what decides a run's memory: how much of it a run may use (the CUDA
    context included) and its compute capability (precision and attention kernels)."""

    name: str
    capacity_gib: float
    capability: tuple[int, int]

    @property
    def math_attention(self) -> bool:
        """Below 8.0 the run takes the math attention path (`--sdpa math` rehearses it)."""
        return self.capability < (8, 0)

    @property
    def dtype(self) -> torch.dtype:
        """`--precision auto` on this card: bf16 from capability 8.0 on, else fp16 with loss scaling."""
        return torch.float16 if self.math_attention else torch.bfloat16

    def describe(self) -> str:
        attention = "math attention" if self.math_attention else "flash attention"
        precision = "fp16" if self.dtype == torch.float16 else "bf16"
        return f"{self.name} card (capability {self.capability[0]}.{self.capability[1]}, {precision}, {attention})"


# Capacity: the card's size less 0.5 GiB for the driver's own reserve, a desktop and other processes.
CARDS: dict[str, CardClass] = {c.name: c for c in (
    CardClass("6gb", 5.5, (7, 5)),
    CardClass("12gb", 11.5, (7, 5)),
    CardClass("24gb", 23.5, (8, 6)),
    CardClass("40gb", 39.5, (8, 0)),
    CardClass("80gb", 79.5, (8, 0)),
)}


class _Block:
    """A piece of a segment, allocated or cached; neighbours in the same segment are linked."""

    __slots__ = ("address", "size", "small", "free", "prev", "next")

    def __init__(self, address: int, size: int, small: bool):
        self.address, self.size, self.small = address, size, small
        self.free = False
        self.prev: _Block | None = None
        self.next: _Block | None = None


class CachingAllocator:
    """PyTorch's CUDA caching allocator with its default settings (c10/cuda/CUDACachingAllocator.cpp),
    for one stream. Requests are rounded up to 512 bytes; those of at most 1 MiB come from 2 MiB
    segments, larger ones from 20 MiB segments below 10 MiB and from segments of their own size
    rounded up to 2 MiB above. A request takes the smallest cached free block that holds it, split
    when the rest is worth keeping (512 B in the small pool, over 1 MiB in the large one); a freed
    block merges with its free neighbours.

    When no cached block fits, a card with room to spare takes a new segment and keeps the cached
    ones; a card without gives its wholly free segments back first and retries. `tight=True` models
    a card just large enough to run the trace: it gives them back whenever it needs a new segment,
    so `peak_reserved` is what such a card must hold. `tight=False` keeps everything, as
    max_memory_reserved on a large card shows it."""

    MIN_BLOCK = 512
    SMALL_SIZE = MiB
    SMALL_SEGMENT = 2 * MiB
    LARGE_SEGMENT = 20 * MiB
    MIN_LARGE_ALLOC = 10 * MiB
    ROUND_LARGE = 2 * MiB

    def __init__(self, tight: bool = True) -> None:
        self.tight = tight
        self._pools: dict[bool, list[tuple[int, int]]] = {True: [], False: []}  # small? -> sorted (size, address)
        self._cached: dict[int, _Block] = {}  # address -> free block
        self._next_address = 0
        self.allocated = self.reserved = 0
        self.peak_allocated = self.peak_reserved = 0

    def malloc(self, nbytes: int) -> _Block | None:
        """A block for `nbytes` (None for 0 bytes: CUDA allocates nothing for an empty tensor)."""
        if nbytes == 0:
            return None
        size = max(self.MIN_BLOCK, -(-nbytes // self.MIN_BLOCK) * self.MIN_BLOCK)
        small = size <= self.SMALL_SIZE
        pool = self._pools[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i < len(pool):
            block = self._cached.pop(pool.pop(i)[1])
        else:
            if self.tight:
                self._release_free_segments()
            block = _Block(self._next_address, self._segment_size(size, small), small)
            self._next_address += block.size
            self.reserved += block.size
            self.peak_reserved = max(self.peak_reserved, self.reserved)
        rest = block.size - size
        if rest >= self.MIN_BLOCK if small else rest > self.SMALL_SIZE:
            tail = _Block(block.address + size, rest, small)
            tail.prev, tail.next = block, block.next
            if block.next is not None:
                block.next.prev = tail
            block.next, block.size = tail, size
            self._cache(tail)
        block.free = False
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: _Block) -> None:
        self.allocated -= block.size
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._uncache(neighbour)
                first, second = (neighbour, block) if neighbour is block.prev else (block, neighbour)
                first.size += second.size
                first.next = second.next
                if second.next is not None:
                    second.next.prev = first
                block = first
        self._cache(block)

    def _segment_size(self, size: int, small: bool) -> int:
        if small:
            return self.SMALL_SEGMENT
        if size < self.MIN_LARGE_ALLOC:
            return self.LARGE_SEGMENT
        return -(-size // self.ROUND_LARGE) * self.ROUND_LARGE

    def _release_free_segments(self) -> None:
        for block in [b for b in self._cached.values() if b.prev is None and b.next is None]:
            self._uncache(block)
            self.reserved -= block.size

    def _cache(self, block: _Block) -> None:
        block.free = True
        self._cached[block.address] = block
        bisect.insort(self._pools[block.small], (block.size, block.address))

    def _uncache(self, block: _Block) -> None:
        pool = self._pools[block.small]
        del pool[bisect.bisect_left(pool, (block.size, block.address))]
        del self._cached[block.address]


@dataclass
class FakeAnswers:
    """What values the traced code reads back from fake tensors: `content_frames` non-zero mel
    frames (the longest clip; `micro_batch_loss` trims after the last one), any other count 1,
    losses, norms and overflow flags 0.0 (finite: every step is taken), and `decode_steps` greedy
    decoding steps before every row is done (the static KV cache is allocated at the first step
    for the whole sample length; each later step allocates what the second did)."""

    content_frames: int
    decode_steps: int = 3
    _held: weakref.ref | None = None
    _done_queries: int = 0

    def nonzero(self, mask: torch.Tensor) -> torch.Tensor:
        held = torch.empty(self.content_frames, mask.dim(), dtype=torch.long, device=mask.device)
        self._held = weakref.ref(held.untyped_storage())
        return held

    def scalar(self, t: torch.Tensor) -> bool | int | float:
        if t.dtype == torch.bool:
            self._done_queries += 1
            return self._done_queries >= self.decode_steps
        if self._held is not None and self._held() is t.untyped_storage():
            return self.content_frames - 1  # int(held[-1]): the last non-zero frame
        return 0.0 if t.dtype.is_floating_point else 1


@dataclass
class _Record:
    """One storage on the traced device: its block, when it was allocated and freed (allocation
    counts), and what it holds."""

    block: _Block | None
    nbytes: int
    size: int  # the block's size when allocated (a freed block merges into others)
    born: int
    died: int | None = None
    category: str = OTHER


class MemoryTrace(TorchDispatchMode):
    """Follows every storage created on `device` by the ops run under it, real or fake tensors
    alike (a storage is freed when its last tensor goes: a weakref to it), through a
    CachingAllocator. `tag` names what a storage holds, for the breakdown at the peak.

    `answers` answers the values fake tensors cannot give. `flash_scratch` adds the fp32 scratch
    of FlashAttention-2's CUDA backward (softmax_d, and dq_accum when the keys span more than one
    block) to each flash backward, which the CPU kernel traced here does without."""

    def __init__(self, device: torch.device = torch.device("cpu"), answers: FakeAnswers | None = None,
                 flash_scratch: bool = False):
        super().__init__()
        self.device = device
        self.answers = answers
        self.flash_scratch = flash_scratch
        self.allocator = CachingAllocator()
        self.records: list[_Record] = []
        self._live: dict[int, _Record] = {}  # storage's C++ address -> its record
        self.phase = "setup"
        self.peak_phase = self.phase
        self.peak_at = 0  # allocation count at the allocated peak
        self.phase_peaks: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.answers is not None and func is torch.ops.aten._local_scalar_dense.default:
            return self.answers.scalar(args[0])
        if self.answers is not None and func is torch.ops.aten.nonzero.default:
            out = self.answers.nonzero(args[0])
        else:
            out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and t.device == self.device:
                self._see(t.untyped_storage())
        if self.flash_scratch and func is torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
            self._flash_backward_scratch(args[1], args[2])
        return out

    def _see(self, storage: torch.UntypedStorage) -> None:
        record = self._live.get(storage._cdata)
        nbytes = storage.nbytes()
        if record is not None and record.nbytes == nbytes:
            return
        if record is not None:  # resized in place: the allocator moves it to a new block
            self._release(record)
        record = self._allocate(nbytes)
        self._live[storage._cdata] = record
        weakref.finalize(storage, self._storage_freed, storage._cdata, record)

    def _allocate(self, nbytes: int) -> _Record:
        block = self.allocator.malloc(nbytes)
        record = _Record(block, nbytes, block.size if block is not None else 0, len(self.records))
        self.records.append(record)
        allocated = self.allocator.allocated
        if allocated >= self.allocator.peak_allocated:
            self.peak_at, self.peak_phase = record.born, self.phase
        self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), allocated)
        return record

    def _release(self, record: _Record) -> None:
        if record.died is None:
            record.died = len(self.records)
            if record.block is not None:
                self.allocator.free(record.block)

    def _storage_freed(self, key: int, record: _Record) -> None:
        if self._live.get(key) is record:
            del self._live[key]
        self._release(record)

    def _flash_backward_scratch(self, query: torch.Tensor, key: torch.Tensor) -> None:
        batch, heads, t_q, d_head = query.shape
        rounded_q = -(-t_q // 128) * 128
        scratch = [self._allocate(batch * heads * rounded_q * 4)]  # softmax_d (B, H, Tq rounded) fp32
        if key.shape[2] > (128 if d_head > 64 else 256):
            rounded_d = -(-d_head // 32) * 32
            scratch.append(self._allocate(batch * rounded_q * heads * rounded_d * 4))  # dq_accum fp32
        for record in scratch:
            self._release(record)

    def tag(self, tensors, category: str) -> None:
        """Name what the storages of `tensors` hold (weights, gradients, optimizer states)."""
        for t in tensors:
            if isinstance(t, torch.Tensor):
                record = self._live.get(t.untyped_storage()._cdata)
                if record is not None:
                    record.category = category

    def breakdown(self) -> dict[str, int]:
        """Bytes by what they hold at the allocated peak (they add up to it)."""
        parts = dict.fromkeys((WEIGHTS, GRADIENTS, OPTIMIZER, OTHER), 0)
        for r in self.records:
            if r.born <= self.peak_at and (r.died is None or r.died > self.peak_at):
                parts[r.category] += r.size
        return parts


@dataclass(frozen=True)
class Workload:
    """The largest micro-batch a preset lets through: `batch` clips of `content_frames` mel frames
    (--max-duration) and `label_tokens` decoder tokens (--max-label-tokens, else the context)."""

    batch: int
    grad_accum: int
    eval_batch: int
    content_frames: int
    label_tokens: int

    @classmethod
    def of(cls, cfg: TrainConfig, dims: ModelDimensions, batch: int | None = None) -> Workload:
        window = 2 * dims.n_audio_ctx
        # What log_mel_window keeps of the longest clip the dataset lets through.
        content = min(int(cfg.data.max_duration * SAMPLE_RATE) // HOP_LENGTH, window)
        tokens = min(cfg.data.max_label_tokens or dims.n_text_ctx, dims.n_text_ctx)
        return cls(batch or cfg.train_batch_size, cfg.grad_accum, cfg.eval_batch_size, content, tokens)


@dataclass
class MemoryEstimate:
    """A traced run's memory: the simulated allocator's peaks, what the allocated peak holds and
    where it falls, and the CUDA context."""

    workload: Workload
    card: CardClass
    dtype: torch.dtype
    peak_allocated: int
    peak_reserved: int
    breakdown: dict[str, int]
    peak_phase: str
    phase_peaks: dict[str, int]
    context: int = int(CUDA_CONTEXT_GIB * GiB)

    @property
    def total(self) -> int:
        """What the card must hold: the allocator's reserved peak and the CUDA context."""
        return self.peak_reserved + self.context

    @property
    def fits(self) -> bool:
        return self.total <= self.card.capacity_gib * GiB


def _examples(count: int, dims: ModelDimensions, frames: int, tokens: int, sot: int,
              host: torch.device) -> list[Example]:
    """`count` clips with `frames` non-zero mel frames (then zero padding, as log_mel_window
    leaves it) and `tokens` decoder tokens, every label counted."""
    window = 2 * dims.n_audio_ctx
    examples = []
    for i in range(count):
        mel = torch.zeros(dims.n_mels, window, device=host)
        mel[:, :frames] = 1.0
        ids = torch.full((tokens + 1,), sot + 1, dtype=torch.long, device=host)
        ids[0] = sot
        examples.append(Example(mel=mel, tokens=ids[:-1], labels=ids[1:], path=f"clip{i}.wav"))
    return examples


def estimate(cfg: TrainConfig, dims: ModelDimensions, card: CardClass, *, batch: int | None = None,
             fake: bool = True, host: str = "meta", run_eval: bool = True) -> MemoryEstimate:
    """Trace the worst case of `cfg` with a model of `dims` as it would run on `card` (see the
    module's docstring). `batch` overrides cfg's train batch size.

    `fake=False` runs the same trace on real CPU tensors (slow, and only as large as RAM allows),
    to check the fake one. `host` is where batches wait before `.to(device)`: "meta" leaves them
    off the traced device, as pinned host memory is off the GPU; "cpu" makes them part of it,
    which a real-tensor trace needs."""
    if cfg.optimizer != "adamw":
        raise ValueError(f"--optimizer {cfg.optimizer}: only AdamW's memory is modelled")
    if cfg.cache_encoder or cfg.fsdp:
        raise ValueError("--cache-encoder and --fsdp runs are not modelled")
    work = Workload.of(cfg, dims, batch)
    dtype = card.dtype if cfg.precision == "auto" else DTYPES[cfg.precision]
    device = torch.device("cpu")
    answers = FakeAnswers(work.content_frames) if fake else None
    trace = MemoryTrace(device, answers, flash_scratch=not card.math_attention)
    fake_mode = _fake_mode() if fake else nullcontext()
    attention = sdpa_kernel([SDPBackend.MATH]) if card.math_attention else nullcontext()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # frees at refcount zero only: the same trace every time, fake or real
    try:
        with fake_mode, trace, attention:
            model = Whisper(dims, dual_attention=cfg.dual_attention)
            tokenizer = whisper_vocabulary(model)
            params = configure_trainable(model, cfg)
            model.set_gradient_checkpointing(cfg.grad_checkpointing)
            trace.tag([*model.parameters(), *model.buffers()], WEIGHTS)
            trainer = _trainer(cfg, model, params, dtype, device, trace, tokenizer.sot, dims)
            examples = _examples(work.batch, dims, work.content_frames, work.label_tokens, tokenizer.sot,
                                 torch.device(host))
            micro_batch = collate(examples)
            del examples
            # The first step creates the AdamW states; the second trains with them in memory.
            for phase, group in (("step 1", [micro_batch]), ("step 2", [micro_batch] * min(work.grad_accum, 2))):
                trace.phase = phase
                if trainer._train_step(group) is None:
                    raise RuntimeError(f"{phase} was skipped: the traced step must be taken")
            del micro_batch, group
            if run_eval:
                trace.phase = "evaluation"
                _trace_evaluation(trainer, tokenizer, cfg, dims, work, dtype, host)
            result = MemoryEstimate(work, card, dtype, trace.allocator.peak_allocated,
                                    trace.allocator.peak_reserved, trace.breakdown(), trace.peak_phase,
                                    dict(trace.phase_peaks))
            del trainer, model, params
    finally:
        if gc_was_enabled:
            gc.enable()
    return result


def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode  # private module, imported where used
    return FakeTensorMode()


def _trainer(cfg: TrainConfig, model: Whisper, params: list[torch.nn.Parameter], dtype: torch.dtype,
             device: torch.device, trace: MemoryTrace, sot: int, dims: ModelDimensions) -> Trainer:
    """A Trainer holding what `_train_step` uses, built as `setup.build` builds it for CUDA
    (fused AdamW; a gradient scaler for fp16) but without the data folders and the device."""
    optimizer = make_optimizer(params, cfg, torch.device("cuda"))
    optimizer.register_step_pre_hook(lambda opt, *_: trace.tag([p.grad for p in params], GRADIENTS))
    optimizer.register_step_post_hook(
        lambda opt, *_: trace.tag([t for s in opt.state.values() for t in s.values()], OPTIMIZER))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.warmup_steps, cfg.schedule, 2))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    trainer = Trainer.__new__(Trainer)  # Trainer.__init__ reads data folders and picks a GPU
    trainer.cfg, trainer.device, trainer.dtype = cfg, device, dtype
    trainer.dist = Distributed(device)
    trainer.model = trainer.module = model
    trainer.params = params
    trainer.state = TrainState(model, optimizer, scheduler, scaler, sampler=None)
    trainer.data = TrainData(train_set=None, eval_set=[], references={}, sampler=None, sot=sot,
                             mel_shape=(dims.n_mels, 2 * dims.n_audio_ctx), eval_batch_size=cfg.eval_batch_size,
                             num_workers=0, pin_memory=False)
    return trainer


def _trace_evaluation(trainer: Trainer, tokenizer, cfg: TrainConfig, dims: ModelDimensions, work: Workload,
                      dtype: torch.dtype, host: str) -> None:
    """`evaluate` over one full eval batch of the longest clips, as `Trainer._evaluate` calls it."""
    examples = _examples(work.eval_batch, dims, work.content_frames, work.label_tokens, tokenizer.sot,
                         torch.device(host))
    data = replace(trainer.data, eval_set=examples, references={e.path: "a" for e in examples})
    evaluate(trainer.model, tokenizer, data, cfg, dtype)
