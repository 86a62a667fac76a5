"""The training loop (nanoGPT-style: one loop, one way out): AMP, gradient accumulation, periodic
WER evaluation, checkpoints, a clean stop on SIGINT/SIGTERM, and DDP through torchrun.

Building a run from its TrainConfig is `setup.py`; what `--resume` restores is `state.py`;
`cli/train.py` only turns flags into a TrainConfig."""
from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from ..audio.geometry import trimmed_frames
from ..data.manifest import Utterance
from ..data.splits import DataError
from ..evaluation.metrics import error_rates
from ..evaluation.noisy import NoisyEvaluation
from ..inference.decoding import DecodingOptions, DecodingTask, WordScorer
from ..lm.arpa import ArpaError
from ..lm.fusion import CachedScorer, read_lm, scorer_for
from ..model.formats import name_list
from ..model.whisper import Whisper
from ..tokenizer import TokenizerBase
from .config import TrainConfig
from .dataset import IGNORE_INDEX, UNREADABLE, Batch
from .plots import plot_training
from .setup import Distributed, TrainData, autocast, build, step_groups
from .sharding import full_model_state, set_gradient_sync, unsharded_copy
from .state import SkipLog, save_checkpoint


def micro_batch_loss(model: nn.Module, batch: Batch, padding: Tensor | None = None) -> Tensor:
    """Cross-entropy of one micro-batch (already on the model's device), summed over its label
    tokens; the caller divides by the label tokens of the whole optimizer step. The batch carries
    log-mels, or with a cached encoder the encoder's outputs (`audio_features`). With `padding`
    (1, n_audio_ctx, D), the features of a window of padding only, the encoder sees only the
    batch's clip frames and a margin (`trimmed_frames`), and `padding` fills in the rest."""
    mel = batch.mel if batch.audio_features is None else None
    if mel is not None and padding is not None:
        # log_mel_window pads with zero frames (and SpecAugment masks with 0): the last frame
        # holding any other value ends the longest clip of the batch.
        held = (mel != 0).any(dim=1).any(dim=0).nonzero()
        content = int(held[-1]) + 1 if len(held) else 0
        mel = mel[..., :trimmed_frames(content, mel.shape[-1])]
    logits = model(mel, batch.tokens, audio_features=batch.audio_features, audio_padding=padding)  # (B, T, n_vocab)
    return F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")


def eval_options(model: Whisper, cfg: TrainConfig, lm: WordScorer | None = None) -> DecodingOptions:
    """How the dev split is decoded: greedy, or with `lm` (--eval-lm) beam search fused with it."""
    fusion = {} if lm is None else dict(beam_size=cfg.eval_beam_size, lm=lm, lm_alpha=cfg.eval_lm_alpha,
                                        lm_beta=cfg.eval_lm_beta)
    return DecodingOptions(language=cfg.data.language, task=cfg.data.task, without_timestamps=True,
                           sample_len=model.dims.n_text_ctx // 2, **fusion)


def eval_scorer(cfg: TrainConfig) -> CachedScorer | None:
    """The --eval-lm model as the scorer beam search fuses in, read before any training; ValueError
    naming the file when it cannot be read."""
    if cfg.eval_lm is None:
        return None
    if cfg.eval_beam_size < 1:
        raise ValueError(f"--eval-beam-size must be at least 1, got {cfg.eval_beam_size}")
    try:
        return scorer_for(read_lm(cfg.eval_lm), cfg.data.language)
    except ArpaError as e:
        raise ValueError(f"--eval-lm: {e}") from None


@torch.no_grad()
def evaluate(model: Whisper, tokenizer: TokenizerBase, data: TrainData, cfg: TrainConfig,
             dtype: torch.dtype = torch.float32, progress: bool = False,
             distributed: Distributed | None = None, lm: WordScorer | None = None) -> dict[str, Any]:
    """Batched decoding of the eval split (greedy, or beam search fused with `lm`), scored as
    `transcribe.py --mode evaluate` does: an unreadable clip counts as an empty hypothesis (leaving
    it out would flatter the WER). Clips the duration or label-length filters leave out are not
    scored. Under torchrun (`distributed`) each rank decodes its share and every rank gets the
    scores of the whole split.

    Returns {"wer", "cer", "pairs": [(reference, hypothesis)], "unreadable": n, "skipped": [Skipped]}.
    """
    was_training = model.training
    model.eval()
    task = DecodingTask(model, tokenizer, eval_options(model, cfg, lm))
    pairs, skipped = [], []
    rank, world = (distributed.rank, distributed.world) if distributed else (0, 1)
    for batch in tqdm(data.eval_loader(rank, world), desc="eval", leave=False, disable=not progress):
        skipped += batch.skipped
        pairs += [(data.references[s.path], "") for s in batch.skipped if s.kind == UNREADABLE]
        if len(batch):
            with autocast(model.device, dtype):
                if batch.audio_features is None:
                    features = model.embed_audio(batch.mel.to(model.device, model.dtype))
                else:
                    features = batch.audio_features.to(model.device)
                results = task.run(features)
            pairs += [(data.references[p], r.text) for p, r in zip(batch.paths, results)]
    model.train(was_training)
    if distributed:
        pairs, skipped = distributed.gather(pairs), distributed.gather(skipped)
    unreadable = sum(s.kind == UNREADABLE for s in skipped)
    if len(pairs) == unreadable:
        raise DataError(f"evaluation: no eval clip could be read and kept ({unreadable} unreadable, "
                        f"{len(skipped) - unreadable} outside the duration or length limits; see the lines above)")
    rates = error_rates([r for r, _ in pairs], [h for _, h in pairs], cfg.data.language, cfg.scoring)
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
        self.out = Path(cfg.output_dir)
        self.eval_lm = eval_scorer(cfg)  # read first: a bad LM file costs no data loading
        setup = build(cfg)
        self.device, self.dist, self.dtype = setup.device, setup.distributed, setup.dtype
        self.model, self.module, self.tokenizer, self.params = setup.model, setup.module, setup.tokenizer, setup.params
        self.data, self.state, self.total_steps = setup.data, setup.state, setup.total_steps
        self.tensorboard = self._tensorboard()
        self.eval_skipped = SkipLog()  # eval clips already named
        eval_utts = [Utterance(Path(p), text, cfg.data.language) for p, text in self.data.references.items()]
        self.noisy_eval = (NoisyEvaluation(eval_utts, cfg.eval_noise_dir, cfg.eval_snr, cfg.seed)
                           if cfg.eval_noise_dir else None)

    # ---- the loop ------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to `total_steps` or until SIGINT/SIGTERM; `last/` is written once at the end either
        way. Returns {"step", "stopped", "best_wer", "nonfinite_skipped", "skipped_clips"}."""
        cfg, state = self.cfg, self.state
        self.model.train()
        stopped = False
        # A card below capability 8.0 has no flash or memory-efficient kernel for the run: --sdpa math
        # makes a larger card take the same path (and its memory) for a faithful rehearsal.
        attention = sdpa_kernel([SDPBackend.MATH]) if cfg.sdpa == "math" else nullcontext()
        with StopSignals() as signals, attention:
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
        self.dist.close()
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
        padding = self._padding_features() if self.cfg.trim_padding else None
        for i, batch in enumerate(group):
            # A rank whose micro-batch was all unreadable clips still joins the all-reduce, at zero weight.
            batch = (batch if len(batch) else self.data.stand_in()).to(self.device, non_blocking=True)
            last = i == len(group) - 1
            # DDP all-reduces (FSDP reduce-scatters) gradients once per optimizer step, on the last micro-batch.
            if self.cfg.fsdp:
                set_gradient_sync(self.model, last)
            with nullcontext() if self.module is self.model or last else self.module.no_sync():
                with autocast(self.device, self.dtype):
                    ce = micro_batch_loss(self.module, batch, padding)
                state.scaler.scale(ce * self.dist.world / token_total).backward()
            ce_sum += ce.item()
        loss = self.dist.sum(ce_sum) / token_total
        if not math.isfinite(loss):
            state.optimizer.zero_grad(set_to_none=True)
            state.nonfinite_skipped += 1
            clips = [path for b in group for path in b.paths]
            tqdm.write(f"warning: non-finite loss at step {state.step}, step skipped ({state.nonfinite_skipped} "
                       f"so far); its clips: {name_list(clips, 4)}")
            return None
        state.scaler.unscale_(state.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        if isinstance(grad_norm, DTensor):  # sharded gradients: each rank holds a part of the norm
            grad_norm = grad_norm.full_tensor()
        grad_norm = grad_norm.item()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.optimizer.zero_grad(set_to_none=True)
        state.scheduler.step()
        return {"loss": loss, "grad_norm": grad_norm, "lr": state.scheduler.get_last_lr()[0]}

    @torch.no_grad()
    def _padding_features(self) -> Tensor:
        """The features (1, n_audio_ctx, D) of a window of zero frames under this step's weights.
        Encoded without gradient: its frames carry no speech to learn from, and trimming is
        there to spare the encoder the padding's work."""
        with autocast(self.device, self.dtype):
            return self.model.embed_audio(torch.zeros(1, *self.data.mel_shape, device=self.device))

    # ---- evaluation and checkpoints ------------------------------------------------------
    def _evaluate(self, tag: str) -> None:
        """Evaluate (each rank its share), log it, and keep `best/` when the WER is the lowest so far.
        No rank waits in a collective while another decodes alone: NCCL would time it out."""
        model = unsharded_copy(self.model, self.dtype) if self.cfg.fsdp else self.model
        result = evaluate(model, self.tokenizer, self.data, self.cfg, self.dtype, progress=self.dist.main,
                          distributed=self.dist, lm=self.eval_lm)
        noisy = self._evaluate_noisy(model)
        del model  # the unsharded copy of an --fsdp run
        for s in self.eval_skipped.add(result["skipped"]):
            scored = "scored as an empty transcript" if s.kind == UNREADABLE else "not scored"
            self._say(f"eval: {s.path}: {s.reason} ({scored})")
        self._say(f"[{tag}] step {self.state.step}: WER {result['wer'] * 100:.2f}%  CER {result['cer'] * 100:.2f}%"
                  + "".join(f"\n  ref: {r}\n  hyp: {h}" for r, h in result["pairs"][:2]))
        self._log({"step": self.state.step, "eval_wer": result["wer"], "eval_cer": result["cer"],
                   "eval_unreadable": result["unreadable"], **noisy})
        if result["wer"] < self.state.best_wer:
            self.state.best_wer = result["wer"]
            self._save("best")
        self.dist.barrier()

    def _evaluate_noisy(self, model: Whisper) -> dict[str, float]:
        """WER/CER under noise (see evaluation.noisy.NoisyEvaluation); {} without an eval noise folder."""
        if self.noisy_eval is None:
            return {}
        was_training = model.training
        model.eval()
        options = eval_options(model, self.cfg, self.eval_lm)
        with autocast(self.device, self.dtype):
            metrics = self.noisy_eval(model, self.tokenizer, options, self.cfg.eval_batch_size,
                                      self.cfg.data.language, self.cfg.scoring, (self.dist.rank, self.dist.world),
                                      self.dist.gather)
        model.train(was_training)
        self._say("  under noise: " + "  ".join(f"{k[len('eval_wer_'):]} WER {v * 100:.2f}%"
                                                for k, v in metrics.items() if k.startswith("eval_wer_")))
        return metrics

    def _save(self, name: str) -> None:
        """`name/model.pt` for transcribe.py; `last/` also gets everything --resume restores. Under
        --fsdp every rank joins in gathering the shards, and the main rank writes."""
        if not (self.dist.main or self.cfg.fsdp):
            return
        weights = full_model_state(self.model) if self.cfg.fsdp else None
        resumable = self.state.state_dict(weights) if name == "last" else None
        if not self.dist.main:
            return
        folder = self.out / name
        save_checkpoint(folder, self.model, self.tokenizer,
                        {"step": self.state.step, "language": self.cfg.data.language or ""},
                        merge_adapters=self.cfg.lora_rank > 0, weights=weights)
        if resumable is not None:
            self.state.save(folder, resumable)

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
