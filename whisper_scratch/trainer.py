"""The training loop: AMP, gradient checkpointing and accumulation, AdamW with warmup and decay,
periodic WER evaluation, atomic checkpoints, exact resume, clean stop on SIGINT/SIGTERM, and DDP
through torchrun. `train.py` only turns flags into a TrainConfig."""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from tokenizer import SentencePieceWhisperTokenizer, TokenizerBase, load_tokenizer_dir, train_sentencepiece
from tokenizer.base import CONFIG_FILE

from .augment import Augment, AugmentConfig
from .checkpoint import load_model, save_model
from .data import Batch, DataConfig, DataError, ResumableBatchSampler, SpeechDataset, collate, load_utterances
from .decoding import DecodingOptions, decode, decode_features, tokenizer_for
from .encoder_cache import CachedSpeechDataset, build_encoder_cache
from .formats import atomic_torch_save, safe_torch_load
from .lora import add_lora, merge_lora
from .metrics import error_rates
from .model import SIZES, Whisper
from .noisy_eval import NoisyEvaluation
from .plots import plot_training

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    output_dir: Path = Path("runs/whisper")
    # Model: --init a checkpoint (fine-tuning) or --whisper-size from random weights.
    init: str | None = None
    whisper_size: str | None = None
    audio_ctx: int | None = None  # from scratch: encoder positions (2 mel frames each); 1500 = 30 s
    text_ctx: int | None = None
    width: int | None = None
    heads: int | None = None
    layers: int | None = None
    vocab_size: int = 1000  # SentencePiece pieces for a model trained from scratch
    tokenizer_dir: Path | None = None  # reuse a trained SentencePiece vocabulary
    dual_attention: bool = False
    freeze_encoder: bool = False
    freeze_decoder: bool = False  # all but the noise branch and its gate
    freeze_embeddings: bool = False
    lora_rank: int = 0
    lora_alpha: float | None = None
    # Optimisation.
    train_batch_size: int = 16
    eval_batch_size: int = 16
    grad_accum: int = 1
    num_epochs: int = 3
    max_steps: int | None = None  # optimizer steps; overrides num_epochs
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 50
    schedule: str = "linear"  # linear | cosine | constant
    max_grad_norm: float = 1.0
    precision: str = "auto"  # auto: bf16 (or fp16 + scaler) on GPU, fp32 on CPU
    grad_checkpointing: bool = False
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes, CUDA only)
    group_by_length: bool = False  # batches of similar label length (less padding)
    # With a frozen encoder: encode each clip once (cache_variants augmented versions of it) and
    # train and evaluate the decoder on the stored outputs (see encoder_cache).
    cache_encoder: bool = False
    cache_variants: int = 1
    cache_storage: str = "fp32"  # fp16 halves the file; fp32 is exact
    # Loop.
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 10
    eval_before: bool = True
    max_eval_utterances: int | None = None
    eval_noise_dir: Path | None = None  # also evaluate with this noise mixed in, at each eval_snr (dB)
    eval_snr: tuple[float, ...] = (10.0, 0.0)
    num_workers: int = 2
    seed: int = 1234
    device: str = "auto"
    resume: bool = False


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    best_wer: float = math.inf
    nonfinite_skipped: int = 0
    skipped_clips: dict[str, int] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


class _Distributed:
    """torchrun's environment, or a single process."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.enabled else 0
        self.main = self.rank == 0

    def sum(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def _precision(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return PRECISIONS[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _build(cfg: TrainConfig, texts: list[str], device: torch.device, main: bool,
           barrier: Callable[[], None]) -> tuple[Whisper, TokenizerBase]:
    """Model and tokenizer: a pretrained checkpoint keeps its vocabulary; a model from scratch
    gets a SentencePiece vocabulary trained on the training transcripts."""
    language, task = cfg.data.language, cfg.data.task
    if cfg.init:
        model = load_model(cfg.init, device="cpu", dual_attention=cfg.dual_attention or None)
        init_dir = Path(cfg.init) if Path(cfg.init).is_dir() else Path(cfg.init).parent
        if (init_dir / CONFIG_FILE).is_file():
            tokenizer = load_tokenizer_dir(init_dir, language=language, task=task)
        else:
            tokenizer = tokenizer_for(model, DecodingOptions(language=language, task=task))
        return model.to(device), tokenizer
    if not cfg.whisper_size:
        raise ValueError("give --init CHECKPOINT to fine-tune or --whisper-size SIZE to train from scratch")
    spm_dir = cfg.output_dir / "tokenizer"
    if cfg.tokenizer_dir or (cfg.resume and (spm_dir / CONFIG_FILE).is_file()):
        tokenizer = load_tokenizer_dir(cfg.tokenizer_dir or spm_dir, language=language, task=task)
    else:
        if main:  # one rank trains the vocabulary; the others read it once it is written
            spm_dir.mkdir(parents=True, exist_ok=True)
            model_file = train_sentencepiece(texts, spm_dir / "spm", cfg.vocab_size)
            SentencePieceWhisperTokenizer(model_file, (language,) if language else (), language=language,
                                          task=task).save(spm_dir)
        barrier()
        tokenizer = load_tokenizer_dir(spm_dir, language=language, task=task)
    base = SIZES[cfg.whisper_size]
    dims = replace(base, n_vocab=tokenizer.n_vocab,
                   n_audio_ctx=cfg.audio_ctx or base.n_audio_ctx, n_text_ctx=cfg.text_ctx or base.n_text_ctx,
                   n_audio_state=cfg.width or base.n_audio_state, n_text_state=cfg.width or base.n_text_state,
                   n_audio_head=cfg.heads or base.n_audio_head, n_text_head=cfg.heads or base.n_text_head,
                   n_audio_layer=cfg.layers or base.n_audio_layer, n_text_layer=cfg.layers or base.n_text_layer)
    return Whisper(dims, dual_attention=cfg.dual_attention).to(device), tokenizer


def _configure_trainable(model: Whisper, cfg: TrainConfig) -> list[torch.nn.Parameter]:
    """Freeze what the flags say; LoRA freezes the base weights and trains only the adapters."""
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


def _optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
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


def _schedule(cfg: TrainConfig, total_steps: int):
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress
    return factor


class Trainer:
    """One training run; `run()` returns the final metrics."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.device = _device(cfg.device)
        self.dist = _Distributed(self.device)
        self.dtype = _precision(cfg.precision, self.device)
        self.out = Path(cfg.output_dir)
        self.state = LoopState()
        self.stop_signal: int | None = None
        self.reported: set[str] = set()  # skipped clips already named
        torch.manual_seed(cfg.seed)

        train_utts, counts = load_utterances(cfg.data, "train")
        eval_utts, _ = load_utterances(cfg.data, "eval")
        if cfg.max_eval_utterances:
            eval_utts = eval_utts[:cfg.max_eval_utterances]
        self._say(f"train: {len(train_utts)} utterances {dict(counts)}; eval: {len(eval_utts)}")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.tokenizer = _build(cfg, [u.text for u in train_utts], self.device, self.dist.main,
                                           self.dist.barrier)
        self.params = _configure_trainable(self.model, cfg)
        self.model.to(self.device)
        self.model.set_gradient_checkpointing(cfg.grad_checkpointing)
        self.optimizer = _optimizer(self.params, cfg, self.device)

        n_frames = 2 * self.model.dims.n_audio_ctx
        common = dict(tokenizer=self.tokenizer, n_mels=self.model.dims.n_mels, n_frames=n_frames,
                      max_label_tokens=self.model.dims.n_text_ctx, language=cfg.data.language, task=cfg.data.task,
                      min_duration=cfg.data.min_duration, max_duration=cfg.data.max_duration)
        self.train_set = SpeechDataset(train_utts, augment=Augment(cfg.augment), seed=cfg.seed,
                                       timestamp_share=cfg.data.timestamp_share, **common)
        self.eval_set = SpeechDataset(eval_utts, augment=None, seed=cfg.seed, **common)
        self.references = {str(u.audio): u.text for u in eval_utts}
        self.noisy_eval = (NoisyEvaluation(eval_utts, cfg.eval_noise_dir, cfg.eval_snr, cfg.seed)
                           if cfg.eval_noise_dir and self.dist.main else None)
        lengths = [self.train_set.n_tokens(i) for i in range(len(self.train_set))] if cfg.group_by_length else None
        if cfg.cache_encoder:
            self.train_set = self._cached(self.train_set, "train", cfg.cache_variants)
            self.eval_set = self._cached(self.eval_set, "eval", 1)
        self.sampler = ResumableBatchSampler(len(self.train_set), cfg.train_batch_size, shuffle=True, seed=cfg.seed,
                                             rank=self.dist.rank, world_size=self.dist.world, lengths=lengths)
        steps_per_epoch = max(1, math.ceil(len(self.sampler) / cfg.grad_accum))
        self.total_steps = cfg.max_steps or steps_per_epoch * cfg.num_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(cfg, self.total_steps))
        # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if cfg.resume:
            self._load_state(self.out / "last" / "train_state.pt")
        self.ddp = DistributedDataParallel(self.model) if self.dist.enabled else None
        self.tensorboard = self._tensorboard()

    def _cached(self, dataset: SpeechDataset, split: str, variants: int) -> CachedSpeechDataset:
        """`dataset` served from encoder outputs computed once (rank 0 builds, the others reuse)."""
        if not self.cfg.freeze_encoder or self.cfg.lora_rank:
            raise ValueError("--cache-encoder needs a frozen encoder: add --freeze-encoder (and no --lora-rank, "
                             "whose adapters change the encoder)")
        self.model.eval()

        def encode(mel: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                return self.model.embed_audio(mel.to(self.device))

        folder = self.out / "encoder_cache" / split
        cache = None
        for turn in ("main", "others"):
            if (turn == "main") == self.dist.main:
                cache = build_encoder_cache(encode, self.model.encoder, dataset, folder, variants,
                                            self.cfg.eval_batch_size, self.cfg.num_workers,
                                            self.cfg.cache_storage, desc=f"encoding {split} clips")
            self.dist.barrier()
        self.model.train()
        return CachedSpeechDataset(dataset, cache)

    # ---- logging -------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.dist.main:
            tqdm.write(text)

    def _tensorboard(self):
        if not self.dist.main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None  # optional: metrics.jsonl and the PNG always exist
        return SummaryWriter(str(self.out / "tensorboard"))

    def _log(self, record: dict) -> None:
        record = {**record, "wall_time": round(time.time(), 1)}
        self.state.history.append(record)
        if not self.dist.main:
            return
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])

    # ---- checkpoints ---------------------------------------------------------------------
    def _save(self, name: str) -> None:
        """`name/model.pt` for transcribe.py (LoRA merged) plus, for `last`, everything to resume."""
        if not self.dist.main:
            return
        folder = self.out / name
        folder.mkdir(parents=True, exist_ok=True)
        export = self.model
        if self.cfg.lora_rank:
            export = merge_lora(copy.deepcopy(self.model))
        save_model(export, folder, extra={"step": self.state.step, "language": self.cfg.data.language or ""})
        self.tokenizer.save(folder)
        if name == "last":
            atomic_torch_save({
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "sampler": self.sampler.state_dict(),
                "loop": asdict(self.state),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }, folder / "train_state.pt")

    def _load_state(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} not found (nothing to resume in {self.out}; drop --resume to start)")
        s = safe_torch_load(path)
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.scaler.load_state_dict(s["scaler"])
        self.sampler.load_state_dict(s["sampler"])
        self.state = LoopState(**s["loop"])
        torch.set_rng_state(s["torch_rng"])
        if s["cuda_rng"]:
            torch.cuda.set_rng_state_all(s["cuda_rng"])
        self._say(f"resumed from {path} at step {self.state.step}")

    # ---- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Batched greedy decoding of the eval split: WER and CER after normalisation."""
        self.model.eval()
        loader = DataLoader(self.eval_set, batch_size=self.cfg.eval_batch_size, collate_fn=collate,
                            num_workers=self.cfg.num_workers)
        options = DecodingOptions(language=self.cfg.data.language, task=self.cfg.data.task,
                                  without_timestamps=True, sample_len=self.model.dims.n_text_ctx // 2)
        refs, hyps = [], []
        for batch in tqdm(loader, desc="eval", leave=False, disable=not self.dist.main):
            if len(batch) == 0:
                continue
            with self._autocast():
                if batch.audio_features is not None:
                    results = decode_features(self.model, batch.audio_features.to(self.device), options, self.tokenizer)
                else:
                    results = decode(self.model, batch.mel.to(self.device), options, self.tokenizer)
            refs += [self.references[p] for p in batch.paths]
            hyps += [r.text for r in results]
        self.model.train()
        if not refs:
            raise DataError("evaluation: no eval clip could be read (see the skipped lines above)")
        rates = error_rates(refs, hyps, self.cfg.data.language)
        return {**rates, "examples": list(zip(refs[:3], hyps[:3]))}

    def _evaluate_noisy(self) -> dict[str, float]:
        """WER/CER under noise (see noisy_eval.NoisyEvaluation); {} without an eval noise folder."""
        if self.noisy_eval is None:
            return {}
        self.model.eval()
        options = DecodingOptions(language=self.cfg.data.language, task=self.cfg.data.task,
                                  without_timestamps=True, sample_len=self.model.dims.n_text_ctx // 2)
        with self._autocast():
            metrics = self.noisy_eval(self.model, self.tokenizer, options, self.cfg.eval_batch_size,
                                      self.cfg.data.language)
        self.model.train()
        self._say("  under noise: " + "  ".join(f"{k[len('eval_wer_'):]} WER {v * 100:.2f}%"
                                                for k, v in metrics.items() if k.startswith("eval_wer_")))
        return metrics

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    # ---- training ------------------------------------------------------------------------
    def _micro_batches(self, loader: DataLoader) -> Iterator[list[Batch]]:
        """Groups of grad_accum micro-batches: one optimizer step each."""
        group: list[Batch] = []
        for batch in loader:
            self._count_skipped(batch)
            group.append(batch)
            if len(group) == self.cfg.grad_accum:
                yield group
                group = []
        if group:
            yield group

    def _count_skipped(self, batch: Batch) -> None:
        """Name each skipped clip once per run and count them by kind."""
        for s in batch.skipped:
            if s.path in self.reported:
                continue
            self.reported.add(s.path)
            self.state.skipped_clips[s.kind] = self.state.skipped_clips.get(s.kind, 0) + 1
            tqdm.write(f"skipped {s.path}: {s.reason}")

    def _loss(self, batch: Batch, token_total: float) -> tuple[torch.Tensor, float]:
        """Cross-entropy summed over label tokens / tokens in the whole optimizer step (all ranks
        and micro-batches), so accumulation and DDP give the gradient of one big batch."""
        module = self.ddp or self.model
        if len(batch) == 0:
            # This rank's micro-batch was all unreadable clips: a zero-weight pass keeps DDP in step.
            batch = self._dummy_batch()
        batch = batch.to(self.device, non_blocking=True)
        with self._autocast():
            logits = module(batch.mel if batch.audio_features is None else None, batch.tokens,
                            audio_features=batch.audio_features)
        labels = batch.labels
        ce = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")
        return ce * self.dist.world / token_total, ce.item()

    def _dummy_batch(self) -> Batch:
        dims = self.model.dims
        return Batch(mel=torch.zeros(1, dims.n_mels, 2 * dims.n_audio_ctx), tokens=torch.tensor([[self.tokenizer.sot]]),
                     labels=torch.tensor([[-100]]), paths=[], skipped=[])

    def _step(self, group: list[Batch]) -> dict | None:
        module = self.ddp or self.model
        token_total = self.dist.sum(float(sum(int((b.labels != -100).sum()) for b in group)))
        if token_total == 0:
            return None
        ce_sum = 0.0
        for i, batch in enumerate(group):
            last = i == len(group) - 1
            # Gradients are all-reduced once per optimizer step, on the last micro-batch.
            sync = module.no_sync() if self.ddp is not None and not last else nullcontext()
            with sync:
                loss, ce = self._loss(batch, token_total)
                self.scaler.scale(loss).backward()
            ce_sum += ce
        loss_value = self.dist.sum(ce_sum) / token_total
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            self.state.nonfinite_skipped += 1
            tqdm.write(f"warning: non-finite loss at step {self.state.step}, step skipped "
                       f"({self.state.nonfinite_skipped} so far)")
            return None
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm).item()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return {"loss": loss_value, "grad_norm": grad_norm, "lr": self.scheduler.get_last_lr()[0]}

    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self.stop_signal = signum
            tqdm.write(f"received {signal.Signals(signum).name}: saving and stopping after this step")
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def _eval_and_checkpoint(self, tag: str) -> None:
        if self.dist.main:
            rates = self.evaluate()
            self._say(f"[{tag}] step {self.state.step}: WER {rates['wer'] * 100:.2f}%  CER {rates['cer'] * 100:.2f}%"
                      + "".join(f"\n  ref: {r}\n  hyp: {h}" for r, h in rates["examples"][:2]))
            noisy = self._evaluate_noisy()
            self._log({"step": self.state.step, "eval_wer": rates["wer"], "eval_cer": rates["cer"], **noisy})
            if rates["wer"] < self.state.best_wer:
                self.state.best_wer = rates["wer"]
                self._save("best")
        self.dist.barrier()

    def run(self) -> dict:
        cfg = self.cfg
        self._install_signal_handlers()
        self.model.train()
        if cfg.eval_before and self.state.step == 0:
            self._eval_and_checkpoint("before")
        bar = tqdm(total=self.total_steps, initial=self.state.step, desc="train", unit="step",
                   disable=not self.dist.main)
        started = time.time()
        while self.state.step < self.total_steps and self.stop_signal is None:
            # set_epoch keeps a resumed position within the current epoch.
            self.sampler.set_epoch(self.state.epoch)
            self.train_set.set_epoch(self.state.epoch)
            loader = DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate,
                                num_workers=cfg.num_workers, pin_memory=self.device.type == "cuda")
            drawn = seen = 0
            for group in self._micro_batches(loader):
                drawn += len(group)
                seen += sum(len(b) for b in group)
                metrics = self._step(group)
                self.sampler.advance(len(group))
                if metrics is None:
                    continue
                self.state.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2e}")
                if self.state.step % cfg.log_every == 0 or self.state.step == 1:
                    self._log({"step": self.state.step, "epoch": self.state.epoch, **metrics,
                               "elapsed_s": round(time.time() - started, 1)})
                stop = self.dist.sum(float(self.stop_signal is not None)) > 0
                if self.state.step % cfg.eval_every == 0 and self.state.step < self.total_steps:
                    self._eval_and_checkpoint("eval")
                if stop or self.state.step % cfg.save_every == 0 or self.state.step >= self.total_steps:
                    self._save("last")
                if stop:
                    self.stop_signal = self.stop_signal or signal.SIGTERM
                    break
                if self.state.step >= self.total_steps:
                    break
            else:
                if self.dist.sum(float(drawn)) > 0 and self.dist.sum(float(seen)) == 0:
                    raise DataError(f"epoch {self.state.epoch}: no training clip could be read "
                                     f"(skipped: {self.state.skipped_clips}); check the data folder")
                self.state.epoch += 1
        bar.close()
        if self.stop_signal is not None:
            self._say(f"stopped at step {self.state.step}; continue with --resume")
            return {"step": self.state.step, "stopped": True}
        self._save("last")
        self._eval_and_checkpoint("after")
        if self.dist.main:
            plot_training(self.state.history, self.out / "training_curves.png")
        summary = {"step": self.state.step, "best_wer": self.state.best_wer,
                   "nonfinite_skipped": self.state.nonfinite_skipped, "skipped_clips": self.state.skipped_clips}
        if self.device.type == "cuda":
            summary["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self._say(f"done: {json.dumps(summary)}")
        return summary

