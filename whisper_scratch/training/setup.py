"""Building a training run from a TrainConfig (`build`): device, precision and torchrun's process
group; the model and its tokenizer; which weights train; the optimizer and learning-rate schedule;
the data (datasets, resumable batch sampler, loaders, optimizer-step groups); the resumable state,
restored when resuming. Nothing here runs a step: `trainer.py` does."""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..common.device import describe, limit_memory, pick_device, pick_precision, precision_warning
from ..data.manifest import Utterance
from ..data.splits import load_utterances
from ..model.loaded import LoadedModel
from ..model.lora import add_lora
from ..model.whisper import SIZES, Whisper
from ..tokenizer import SentencePieceWhisperTokenizer, TokenizerBase, load_tokenizer_dir, train_sentencepiece
from ..tokenizer.base import CONFIG_FILE
from .augment import Augment
from .config import TrainConfig
from .dataset import IGNORE_INDEX, Batch, ResumableBatchSampler, SpeechDataset, collate
from .encoder_cache import CachedSpeechDataset, build_encoder_cache, wait_for_encoder_cache
from .sharding import shard_model
from .state import TrainState


class Distributed:
    """torchrun's environment, or a single process."""

    def __init__(self, device: torch.device, timeout_minutes: float = 30.0):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.enabled = self.world > 1
        if self.enabled and device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL's collectives and barriers use the current device
        self.owns_group = self.enabled and not dist.is_initialized()
        if self.owns_group:
            # A collective that waits longer than this fails the run. The long waits (evaluation,
            # the encoder cache) do not sit in collectives; what is left is saving a checkpoint.
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=timedelta(minutes=timeout_minutes))
        self.rank = dist.get_rank() if self.enabled else 0
        self.main = self.rank == 0
        # NCCL reduces only GPU tensors; gloo only CPU ones.
        self.device = device if self.enabled and dist.get_backend() == "nccl" else torch.device("cpu")

    def sum(self, value: float) -> float:
        """`value` summed over all ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.item()

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on one."""
        return self.sum(float(flag)) > 0

    def gather(self, items: list) -> list:
        """Every rank's `items` (picklable), concatenated in rank order, on every rank."""
        if not self.enabled:
            return items
        parts: list[list | None] = [None] * self.world
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group once every rank is done: a rank that exits with gloo's threads
        still alive can abort ("terminate called without an active exception")."""
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Mixed precision for forward passes in `dtype`; nothing to do in fp32."""
    return nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)


def build_model(cfg: TrainConfig, texts: list[str], device: torch.device,
                distributed: Distributed) -> tuple[Whisper, TokenizerBase]:
    """Model and tokenizer: a pretrained checkpoint keeps its vocabulary; a model from scratch
    gets a SentencePiece vocabulary trained on the training transcripts `texts`."""
    language, task = cfg.data.language, cfg.data.task
    if cfg.init:
        loaded = LoadedModel.load(cfg.init, device="cpu", dtype=torch.float32, dual_attention=cfg.dual_attention or None)
        return loaded.model.to(device), loaded.tokenizer
    if not cfg.whisper_size:
        raise ValueError("give --init CHECKPOINT to fine-tune or --whisper-size SIZE to train from scratch")
    spm_dir = cfg.output_dir / "tokenizer"
    if cfg.tokenizer_dir or (cfg.resume and (spm_dir / CONFIG_FILE).is_file()):
        tokenizer = load_tokenizer_dir(cfg.tokenizer_dir or spm_dir, language=language, task=task)
    else:
        if distributed.main:  # one rank trains the vocabulary; the others read it once it is written
            spm_dir.mkdir(parents=True, exist_ok=True)
            model_file = train_sentencepiece(texts, spm_dir / "spm", cfg.vocab_size)
            SentencePieceWhisperTokenizer(model_file, (language,) if language else (), language=language,
                                          task=task).save(spm_dir)
        distributed.barrier()
        tokenizer = load_tokenizer_dir(spm_dir, language=language, task=task)
    base = SIZES[cfg.whisper_size]
    dims = replace(base, n_vocab=tokenizer.n_vocab,
                   n_audio_ctx=cfg.audio_ctx or base.n_audio_ctx, n_text_ctx=cfg.text_ctx or base.n_text_ctx,
                   n_audio_state=cfg.width or base.n_audio_state, n_text_state=cfg.width or base.n_text_state,
                   n_audio_head=cfg.heads or base.n_audio_head, n_text_head=cfg.heads or base.n_text_head,
                   n_audio_layer=cfg.layers or base.n_audio_layer, n_text_layer=cfg.layers or base.n_text_layer)
    return Whisper(dims, dual_attention=cfg.dual_attention).to(device), tokenizer


def configure_trainable(model: Whisper, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze what the flags say; LoRA freezes the base weights and trains only the adapters.
    Returns the parameters that train."""
    noise = {id(p) for p in model.noise_parameters()}
    for name, p in model.named_parameters():
        in_noise = id(p) in noise
        frozen = (cfg.freeze_encoder and name.startswith("encoder.")) \
            or (cfg.freeze_decoder and name.startswith("decoder.") and not in_noise) \
            or (cfg.freeze_embeddings and "_embedding" in name) \
            or (cfg.lora_rank > 0 and not in_noise)
        p.requires_grad_(not frozen)
    if cfg.lora_rank:
        add_lora(model, cfg.lora_rank, cfg.lora_alpha)
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA, or bitsandbytes' 8-bit one); matrices decay, biases and norms do not."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases and norms: decaying them only hurts
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes
        except ImportError:
            raise ValueError("--optimizer adamw8bit needs bitsandbytes (CUDA): pip install bitsandbytes") from None
        return bitsandbytes.optim.AdamW8bit(groups, lr=cfg.learning_rate)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=device.type == "cuda")


def lr_factor(warmup_steps: int, schedule: str, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the learning rate at each optimizer step: linear warmup over `warmup_steps`,
    then `schedule` (linear decay to 0 at `total_steps`, cosine, or constant)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress
    return factor


@dataclass
class TrainData:
    """The datasets of a run, the batch sampler that walks the training set (its position is part
    of the resumable state), and the loaders over them."""

    train_set: SpeechDataset | CachedSpeechDataset
    eval_set: SpeechDataset | CachedSpeechDataset
    references: dict[str, str]  # eval audio path -> transcript
    sampler: ResumableBatchSampler
    sot: int  # start-of-transcript token, for the stand-in of an empty micro-batch
    mel_shape: tuple[int, int]  # (n_mels, n_frames) of the model's window
    eval_batch_size: int
    num_workers: int
    pin_memory: bool

    def train_loader(self) -> DataLoader:
        """The rest of the sampler's current epoch, from its position."""
        self.train_set.set_epoch(self.sampler.epoch)  # before iter(loader): workers copy the dataset
        return DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate,
                          num_workers=self.num_workers, pin_memory=self.pin_memory)

    def eval_loader(self, rank: int = 0, world: int = 1) -> DataLoader:
        """The eval clips rank, rank + world, …: this rank's share of an evaluation."""
        shard = Subset(self.eval_set, range(rank, len(self.eval_set), world))
        return DataLoader(shard, batch_size=self.eval_batch_size, collate_fn=collate, num_workers=self.num_workers)

    def stand_in(self) -> Batch:
        """One all-padding example with no label: what a rank whose micro-batch was all unreadable
        clips runs, at zero weight, so that DDP's gradient all-reduce stays in step."""
        mel = torch.zeros(1, *self.mel_shape)
        return Batch(mel=mel, tokens=torch.tensor([[self.sot]]), labels=torch.tensor([[IGNORE_INDEX]]), paths=[],
                     skipped=[])


def build_data(cfg: TrainConfig, train_utts: list[Utterance], eval_utts: list[Utterance], model: Whisper,
               tokenizer: TokenizerBase, distributed: Distributed, device: torch.device,
               dtype: torch.dtype) -> TrainData:
    """Datasets sized for `model` (window length, mel bins, decoder context), served from encoder
    outputs with `cfg.cache_encoder`, and this rank's sampler."""
    mel_shape = (model.dims.n_mels, 2 * model.dims.n_audio_ctx)
    common = dict(tokenizer=tokenizer, n_mels=mel_shape[0], n_frames=mel_shape[1],
                  max_label_tokens=min(cfg.data.max_label_tokens or model.dims.n_text_ctx, model.dims.n_text_ctx),
                  language=cfg.data.language, task=cfg.data.task,
                  min_duration=cfg.data.min_duration, max_duration=cfg.data.max_duration)
    train_set = SpeechDataset(train_utts, augment=Augment(cfg.augment), seed=cfg.seed,
                              timestamp_share=cfg.data.timestamp_share, **common)
    eval_set = SpeechDataset(eval_utts, augment=None, seed=cfg.seed, **common)
    lengths = [train_set.n_tokens(i) for i in range(len(train_set))] if cfg.group_by_length else None
    if cfg.cache_encoder:
        train_set = cached_dataset(train_set, "train", cfg.cache_variants, cfg, model, distributed, device, dtype)
        eval_set = cached_dataset(eval_set, "eval", 1, cfg, model, distributed, device, dtype)
    sampler = ResumableBatchSampler(len(train_set), cfg.train_batch_size, shuffle=True, seed=cfg.seed,
                                    rank=distributed.rank, world_size=distributed.world, lengths=lengths)
    return TrainData(train_set, eval_set, {str(u.audio): u.text for u in eval_utts}, sampler, tokenizer.sot,
                     mel_shape, cfg.eval_batch_size, cfg.num_workers, device.type == "cuda")


def cached_dataset(dataset: SpeechDataset, split: str, variants: int, cfg: TrainConfig, model: Whisper,
                   distributed: Distributed, device: torch.device, dtype: torch.dtype) -> CachedSpeechDataset:
    """`dataset` served from encoder outputs computed once (rank 0 builds, the others wait for it
    and reuse it)."""
    if cfg.trim_padding:
        raise ValueError("--trim-padding has nothing to trim with --cache-encoder: the encoder does not run in "
                         "training; drop one of them")
    if not cfg.freeze_encoder or cfg.lora_rank:
        raise ValueError("--cache-encoder needs a frozen encoder: add --freeze-encoder (and no --lora-rank, "
                         "whose adapters change the encoder)")
    model.eval()

    def encode(mel: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            return model.embed_audio(mel.to(device))

    folder = Path(cfg.output_dir) / "encoder_cache" / split
    if distributed.main:
        cache = build_encoder_cache(encode, model.encoder, dataset, folder, variants, cfg.eval_batch_size,
                                    cfg.num_workers, cfg.cache_storage, desc=f"encoding {split} clips")
    else:
        cache = wait_for_encoder_cache(folder, model.encoder, dataset, variants, cfg.cache_storage)
    model.train()
    return CachedSpeechDataset(dataset, cache)


def check_fsdp(cfg: TrainConfig, distributed: Distributed) -> None:
    """--fsdp's preconditions, each as one line that says what to do."""
    if not distributed.enabled:
        raise ValueError("--fsdp shards the model over torchrun's processes: start the run with "
                         "torchrun --nproc_per_node N train.py … (one process alone has nothing to shard over)")
    if cfg.lora_rank or cfg.cache_encoder:
        raise ValueError("--fsdp is for training the whole model; LoRA and --cache-encoder train small parts "
                         "of it, which fit one GPU: drop --fsdp (DDP runs them on several)")


def step_groups(batches: Iterable[Batch], grad_accum: int) -> Iterator[list[Batch]]:
    """Consecutive groups of `grad_accum` micro-batches, one optimizer step each (the last may be short)."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == grad_accum:
            yield group
            group = []
    if group:
        yield group


@dataclass
class Setup:
    """A run as built from its TrainConfig, before its first step."""

    device: torch.device
    distributed: Distributed
    dtype: torch.dtype  # autocast precision
    model: Whisper
    module: nn.Module  # what the loop calls: the model, or DDP around it
    tokenizer: TokenizerBase
    params: list[torch.nn.Parameter]  # the ones that train
    data: TrainData
    state: TrainState  # restored from OUTPUT_DIR/last when cfg.resume
    total_steps: int


def build(cfg: TrainConfig) -> Setup:
    """Everything a run needs, in an order that keeps random initialisation reproducible."""
    device = pick_device(cfg.device)
    distributed = Distributed(device, cfg.ddp_timeout)
    dtype = pick_precision(cfg.precision, device)
    limit_memory(device, cfg.limit_gib)
    torch.manual_seed(cfg.seed)
    train_utts, counts = load_utterances(cfg.data, "train")
    eval_utts, _ = load_utterances(cfg.data, "eval")
    if cfg.max_eval_utterances:
        eval_utts = eval_utts[:cfg.max_eval_utterances]
    if distributed.main:
        tqdm.write(describe(device, dtype) + (f", {distributed.world} processes ({'FSDP2' if cfg.fsdp else 'DDP'})" if distributed.enabled else "")
                   + (f", allocator capped at {cfg.limit_gib:g} GiB" if cfg.limit_gib else ""))
        if warning := precision_warning(device, dtype):
            tqdm.write(warning)
        tqdm.write(f"train: {len(train_utts)} utterances {dict(counts)}; eval: {len(eval_utts)}")
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    model, tokenizer = build_model(cfg, [u.text for u in train_utts], device, distributed)
    params = configure_trainable(model, cfg)
    model.to(device)
    model.set_gradient_checkpointing(cfg.grad_checkpointing)
    data = build_data(cfg, train_utts, eval_utts, model, tokenizer, distributed, device, dtype)
    if cfg.fsdp:
        check_fsdp(cfg, distributed)
        shard_model(model, dtype)
        params = [p for p in model.parameters() if p.requires_grad]  # the sharded ones now
    optimizer = make_optimizer(params, cfg, device)
    steps_per_epoch = max(1, math.ceil(len(data.sampler) / cfg.grad_accum))
    total_steps = cfg.max_steps or steps_per_epoch * cfg.num_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.warmup_steps, cfg.schedule, total_steps))
    # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = TrainState(model, optimizer, scheduler, scaler, data.sampler)
    if cfg.resume:
        last = Path(cfg.output_dir) / "last"
        state.load(last)
        if distributed.main:
            tqdm.write(f"resumed from {last} at step {state.step}")
    # Gradients as views into DDP's all-reduce buckets: one copy of them instead of two.
    ddp = distributed.enabled and not cfg.fsdp
    module = DistributedDataParallel(model, gradient_as_bucket_view=True) if ddp else model
    return Setup(device, distributed, dtype, model, module, tokenizer, params, data, state, total_steps)

