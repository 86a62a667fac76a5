"""The training loop (nanoGPT-style: one loop, one way out): AMP, gradient accumulation, periodic
WER evaluation, checkpoints, a clean stop on SIGINT/SIGTERM, and DDP through torchrun.

Building a run from its TrainConfig is `train_setup.py`; what `--resume` restores is
`train_state.py`; `train.py` only turns flags into a TrainConfig."""
from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from tokenizer import TokenizerBase

from .augment import AugmentConfig
from .data import IGNORE_INDEX, UNREADABLE, Batch, DataConfig, DataError, load_utterances
from .decoding import DecodingOptions, decode
from .metrics import error_rates
from .model import Whisper
from .plots import plot_training
from .train_setup import (PRECISIONS, Distributed, TrainData, build_data, build_model, configure_trainable,
                          lr_factor, make_optimizer, pick_device, pick_precision, step_groups)
from .train_state import SkipLog, TrainState, save_checkpoint

__all__ = ["PRECISIONS", "TrainConfig", "Trainer", "evaluate", "micro_batch_loss"]


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
    # Loop.
    eval_every: int = 200
    save_every: int = 200
    log_every: int = 10
    eval_before: bool = True
    max_eval_utterances: int | None = None
    num_workers: int = 2
    seed: int = 1234
    device: str = "auto"
    resume: bool = False


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision for forward passes in `dtype`; nothing to do in fp32."""
    return nullcontext() if dtype == torch.float32 else torch.autocast(device.type, dtype=dtype)


def micro_batch_loss(model: nn.Module, batch: Batch) -> Tensor:
    """Cross-entropy of one micro-batch (already on the model's device), summed over its label
    tokens; the caller divides by the label tokens of the whole optimizer step."""
    logits = model(batch.mel, batch.tokens)  # (B, T, n_vocab)
    return F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")


@torch.no_grad()
def evaluate(model: Whisper, tokenizer: TokenizerBase, data: TrainData, cfg: TrainConfig,
             dtype: torch.dtype = torch.float32, progress: bool = False) -> dict[str, Any]:
    """Batched greedy decoding of the eval split, scored as `transcribe.py --mode evaluate` does:
    an unreadable clip counts as an empty hypothesis (leaving it out would flatter the WER).
    Clips the duration or label-length filters leave out are not scored.

    Returns {"wer", "cer", "pairs": [(reference, hypothesis)], "unreadable": n, "skipped": [Skipped]}.
    """
    was_training = model.training
    model.eval()
    options = DecodingOptions(language=cfg.data.language, task=cfg.data.task, without_timestamps=True,
                              sample_len=model.dims.n_text_ctx // 2)
    pairs, skipped = [], []
    for batch in tqdm(data.eval_loader(), desc="eval", leave=False, disable=not progress):
        skipped += batch.skipped
        pairs += [(data.references[s.path], "") for s in batch.skipped if s.kind == UNREADABLE]
        if len(batch):
            with autocast(model.device, dtype):
                results = decode(model, batch.mel.to(model.device), options, tokenizer)
            pairs += [(data.references[p], r.text) for p, r in zip(batch.paths, results)]
    model.train(was_training)
    unreadable = sum(s.kind == UNREADABLE for s in skipped)
    if len(pairs) == unreadable:
        raise DataError(f"evaluation: no eval clip could be read and kept ({unreadable} unreadable, "
                        f"{len(skipped) - unreadable} outside the duration or length limits; see the lines above)")
    rates = error_rates([r for r, _ in pairs], [h for _, h in pairs], cfg.data.language)
    return {**rates, "pairs": pairs, "unreadable": unreadable, "skipped": skipped}


class StopSignals:
    """While active, SIGINT and SIGTERM ask the loop to stop after the current step (it saves
    `last/` first); on exit the previous handlers are back, so Ctrl-C stops the process again
    after an in-process run."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame) -> None:
        self.received = signum
        tqdm.write(f"received {signal.Signals(signum).name}: saving and stopping after this step")

    def __enter__(self) -> StopSignals:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            # None: the previous handler was not set from Python; the default is what it did.
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


class Trainer:
    """One training run, built from a TrainConfig; `run()` trains and returns the final metrics."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.dist = Distributed(self.device)
        self.dtype = pick_precision(cfg.precision, self.device)
        self.out = Path(cfg.output_dir)
        torch.manual_seed(cfg.seed)

        train_utts, counts = load_utterances(cfg.data, "train")
        eval_utts, _ = load_utterances(cfg.data, "eval")
        if cfg.max_eval_utterances:
            eval_utts = eval_utts[:cfg.max_eval_utterances]
        self._say(f"train: {len(train_utts)} utterances {dict(counts)}; eval: {len(eval_utts)}")
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.tokenizer = build_model(cfg, [u.text for u in train_utts], self.device, self.dist)
        self.params = configure_trainable(self.model, cfg)
        self.model.to(self.device)
        self.model.set_gradient_checkpointing(cfg.grad_checkpointing)
        optimizer = make_optimizer(self.params, cfg, self.device)
        self.data = build_data(cfg, train_utts, eval_utts, self.model, self.tokenizer, self.dist, self.device)
        steps_per_epoch = max(1, math.ceil(len(self.data.sampler) / cfg.grad_accum))
        self.total_steps = cfg.max_steps or steps_per_epoch * cfg.num_epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, self.total_steps))
        # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not.
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.state = TrainState(self.model, optimizer, scheduler, scaler, self.data.sampler)
        if cfg.resume:
            self.state.load(self.out / "last")
            self._say(f"resumed from {self.out / 'last'} at step {self.state.step}")
        self.module = DistributedDataParallel(self.model) if self.dist.enabled else self.model
        self.tensorboard = self._tensorboard()
        self.eval_skipped = SkipLog()

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to `total_steps` or until SIGINT/SIGTERM; `last/` is written once at the end either
        way. Returns {"step", "stopped", "best_wer", "nonfinite_skipped", "skipped_clips"}."""
        cfg, state = self.cfg, self.state
        self.model.train()
        stopped = False
        with StopSignals() as signals:
            if cfg.eval_before and state.step == 0:
                self._evaluate("before")
            bar = tqdm(total=self.total_steps, initial=state.step, desc="train", unit="step",
                       disable=not self.dist.main)
            groups = self._step_groups()
            started = time.time()
            while state.step < self.total_steps and not stopped:
                group = next(groups)
                metrics = self._train_step(group)
                state.sampler.advance(len(group))
                if metrics is not None:
                    state.step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{metrics['lr']:.2e}")
                    if state.step % cfg.log_every == 0 or state.step == 1:
                        self._log({"step": state.step, "epoch": state.epoch, **metrics,
                                   "elapsed_s": round(time.time() - started, 1)})
                    if state.step % cfg.eval_every == 0 and state.step < self.total_steps:
                        self._evaluate("eval")
                    if state.step % cfg.save_every == 0 and state.step < self.total_steps:
                        self._save("last")
                stopped = self.dist.any(signals.received is not None)
            groups.close()
            bar.close()
            self._save("last")
        if not stopped:
            self._evaluate("after")
            if self.dist.main:
                plot_training(state.history, self.out / "training_curves.png")
        summary = {"step": state.step, "stopped": stopped, "best_wer": state.best_wer,
                   "nonfinite_skipped": state.nonfinite_skipped, "skipped_clips": state.skipped.counts}
        if self.device.type == "cuda":
            summary["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self._say(f"stopped at step {state.step}; continue with --resume" if stopped
                  else f"done: {json.dumps(summary)}")
        return summary

    def _step_groups(self) -> Iterator[list[Batch]]:
        """Micro-batches grouped by optimizer step, from the sampler's position on, epoch after
        epoch; skipped clips are named and counted as they come."""
        while True:
            drawn = seen = 0
            for group in step_groups(self.data.train_loader(), self.cfg.grad_accum):
                for batch in group:
                    for s in self.state.skipped.add(batch.skipped):
                        tqdm.write(f"skipped {s.path}: {s.reason}")
                drawn += len(group)
                seen += sum(len(b) for b in group)
                yield group
            if self.dist.any(drawn > 0) and not self.dist.any(seen > 0):
                raise DataError(f"epoch {self.state.epoch}: no training clip could be read "
                                f"(skipped: {self.state.skipped.counts}); check the data folder")
            self.state.next_epoch()

    def _train_step(self, group: list[Batch]) -> dict | None:
        """One optimizer step over the micro-batches of `group`; None when it is skipped (no label
        token, or a non-finite loss). The loss is summed over label tokens and divided by the
        tokens of the whole step on all ranks, so accumulation and DDP give the gradient of one
        big batch."""
        state = self.state
        token_total = self.dist.sum(float(sum(int((b.labels != IGNORE_INDEX).sum()) for b in group)))
        if token_total == 0:
            return None
        ce_sum = 0.0
        for i, batch in enumerate(group):
            # A rank whose micro-batch was all unreadable clips still joins the all-reduce, at zero weight.
            batch = (batch if len(batch) else self.data.stand_in()).to(self.device, non_blocking=True)
            last = i == len(group) - 1
            # DDP all-reduces gradients once per optimizer step, on the last micro-batch.
            with nullcontext() if self.module is self.model or last else self.module.no_sync():
                with autocast(self.device, self.dtype):
                    ce = micro_batch_loss(self.module, batch)
                state.scaler.scale(ce * self.dist.world / token_total).backward()
            ce_sum += ce.item()
        loss = self.dist.sum(ce_sum) / token_total
        if not math.isfinite(loss):
            state.optimizer.zero_grad(set_to_none=True)
            state.nonfinite_skipped += 1
            tqdm.write(f"warning: non-finite loss at step {state.step}, step skipped "
                       f"({state.nonfinite_skipped} so far)")
            return None
        state.scaler.unscale_(state.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm).item()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        return {"loss": loss, "grad_norm": grad_norm, "lr": state.scheduler.get_last_lr()[0]}

    # ---- evaluation and checkpoints ------------------------------------------------------
    def _evaluate(self, tag: str) -> None:
        """Evaluate on the main rank, log it, and keep `best/` when the WER is the lowest so far."""
        if self.dist.main:
            result = evaluate(self.model, self.tokenizer, self.data, self.cfg, self.dtype, progress=True)
            for s in self.eval_skipped.add(result["skipped"]):
                scored = "scored as an empty transcript" if s.kind == UNREADABLE else "not scored"
                tqdm.write(f"eval: {s.path}: {s.reason} ({scored})")
            self._say(f"[{tag}] step {self.state.step}: WER {result['wer'] * 100:.2f}%  CER {result['cer'] * 100:.2f}%"
                      + "".join(f"\n  ref: {r}\n  hyp: {h}" for r, h in result["pairs"][:2]))
            self._log({"step": self.state.step, "eval_wer": result["wer"], "eval_cer": result["cer"],
                       "eval_unreadable": result["unreadable"]})
            if result["wer"] < self.state.best_wer:
                self.state.best_wer = result["wer"]
                self._save("best")
        self.dist.barrier()

    def _save(self, name: str) -> None:
        """`name/model.pt` for transcribe.py; `last/` also gets everything --resume restores."""
        if not self.dist.main:
            return
        folder = self.out / name
        save_checkpoint(folder, self.model, self.tokenizer,
                        {"step": self.state.step, "language": self.cfg.data.language or ""},
                        merge_adapters=self.cfg.lora_rank > 0)
        if name == "last":
            self.state.save(folder)

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
        self.state.history.append(record)
        if not self.dist.main:
            return
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])
