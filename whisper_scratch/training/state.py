"""Everything `--resume` restores, in one place: the weights, optimizer, learning-rate scheduler and
gradient scaler, the batch sampler (epoch and position in it), the loop's counters and history,
the clips already reported as skipped, and the random number generators. Plus the checkpoint
folders a run writes (`best/`, `last/`)."""
from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ..common.files import atomic_torch_save
from ..model.checkpoint import save_model
from ..model.formats import safe_torch_load
from ..model.lora import merged_state_dict
from ..model.whisper import Whisper
from ..tokenizer import TokenizerBase
from .dataset import ResumableBatchSampler, Skipped
from .sharding import full_model_state, full_optimizer_state, load_full_model_state, load_full_optimizer_state

STATE_FILE = "train_state.pt"


class SkipLog:
    """Skipped clips, each named once and counted once by kind, however many epochs meet it."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.reported: set[str] = set()

    def add(self, skipped: Iterable[Skipped]) -> list[Skipped]:
        """Count the clips of `skipped` not seen before; returns them, for the caller to name."""
        new = []
        for s in skipped:
            if s.path not in self.reported:
                self.reported.add(s.path)
                self.counts[s.kind] = self.counts.get(s.kind, 0) + 1
                new.append(s)
        return new


class TrainState:
    """The one owner of a run's resumable state. The epoch lives in the sampler alone."""

    def __init__(self, model: Whisper, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
                 sampler: ResumableBatchSampler):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.sampler = sampler
        self.step = 0  # optimizer steps taken
        self.best_wer = math.inf
        self.nonfinite_skipped = 0  # optimizer steps skipped for a non-finite loss
        self.skipped = SkipLog()  # training clips left out
        self.history: list[dict] = []  # every record of metrics.jsonl, for the training curves

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def next_epoch(self) -> None:
        self.sampler.set_epoch(self.sampler.epoch + 1)

    def state_dict(self, model_state: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        """Everything --resume restores; weights and optimizer by parameter name, unsharded, so a
        run resumes with --fsdp or without, on any number of ranks. Under --fsdp a collective that
        fills in only on rank 0; `model_state`: the weights when already gathered."""
        return {
            "model": full_model_state(self.model) if model_state is None else model_state,
            "optimizer": full_optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "loop": {"step": self.step, "best_wer": self.best_wer, "nonfinite_skipped": self.nonfinite_skipped,
                     "skipped_clips": self.skipped.counts, "reported_clips": sorted(self.skipped.reported),
                     "history": self.history},
            "torch_rng": torch.get_rng_state(),
            # This rank's own GPU only: asking for every device's state would open a CUDA context
            # on each GPU from each rank, and a resume with fewer GPUs visible could not restore it.
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_full_model_state(self.model, state["model"])
        load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        loop = state["loop"]
        self.step, self.best_wer, self.nonfinite_skipped = loop["step"], loop["best_wer"], loop["nonfinite_skipped"]
        self.skipped.counts, self.skipped.reported = dict(loop["skipped_clips"]), set(loop["reported_clips"])
        self.history = list(loop["history"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    def save(self, folder: Path, state: dict[str, Any] | None = None) -> None:
        """`folder/train_state.pt` (`state`, else this state's dict), written atomically."""
        atomic_torch_save(self.state_dict() if state is None else state, folder / STATE_FILE)

    def load(self, folder: Path) -> None:
        path = folder / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} not found (nothing to resume in {folder.parent}; "
                                    "drop --resume to start)")
        self.load_state_dict(safe_torch_load(path))


def save_checkpoint(folder: Path, model: Whisper, tokenizer: TokenizerBase, extra: dict[str, Any],
                    merge_adapters: bool, weights: dict[str, torch.Tensor] | None = None) -> None:
    """`folder/model.pt` that transcribe.py loads (LoRA adapters merged into the weights on the
    CPU, so the GPU holds no second model; `weights`: the gathered shards of an --fsdp run) with
    the tokenizer's files beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder, extra=extra, state_dict=merged_state_dict(model) if merge_adapters else weights)
    tokenizer.save(folder)
