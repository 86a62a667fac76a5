"""OpenAI's `.pt` checkpoints: a torch pickle of {"dims": {...}, "model_state_dict": {...}}.

Our parameter names are OpenAI's, so the name table is the identity."""
from __future__ import annotations

import logging
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..model import ModelDimensions, Whisper
from . import (Checkpoint, CheckpointError, NOISE_MARKER, atomic_torch_save, has_noise_branch, heads_to_pairs,
               safe_torch_load)

log = logging.getLogger(__name__)

DIM_KEYS = tuple(f.name for f in fields(ModelDimensions))


def dims_from_dict(dims: dict, source: str) -> ModelDimensions:
    """ModelDimensions from a checkpoint's dims dict; missing or unknown keys are errors."""
    if not isinstance(dims, dict) or set(dims) != set(DIM_KEYS):
        got = sorted(dims) if isinstance(dims, dict) else type(dims).__name__
        raise CheckpointError(f"{source}: 'dims' must have exactly the keys {list(DIM_KEYS)}, got {got}")
    return ModelDimensions(**{k: int(dims[k]) for k in DIM_KEYS})


def checkpoint_from_openai(data: Any, source: str) -> Checkpoint:
    """A Checkpoint from a loaded OpenAI payload."""
    if not isinstance(data, dict) or "dims" not in data or "model_state_dict" not in data:
        raise CheckpointError(f"{source}: not an OpenAI Whisper checkpoint (needs 'dims' and 'model_state_dict')")
    state = dict(data["model_state_dict"])
    heads = data.get("alignment_heads")
    return Checkpoint(
        dims=dims_from_dict(data["dims"], source),
        state_dict=state,
        dual_attention=has_noise_branch(state),
        alignment_heads=heads_to_pairs(heads) if heads is not None else None,
        source=source,
        format="openai",
    )


def load_openai(path: str | Path) -> Checkpoint:
    """Read an OpenAI `.pt` checkpoint (weights_only: arbitrary pickled objects are refused)."""
    return checkpoint_from_openai(safe_torch_load(Path(path)), str(path))


def save_openai(model: Whisper, path: str | Path) -> None:
    """Write `model` as an OpenAI `.pt` that openai-whisper loads strictly.

    OpenAI's model has no noise branch, so a dual model is exported without it."""
    path = Path(path)
    state = model.state_dict()
    noise = [name for name in state if NOISE_MARKER in name]
    if noise:
        log.warning("%s: OpenAI's format has no noise branch; exporting the model without it "
                    "(%d noise-branch tensors dropped)", path, len(noise))
    plain = {name: t.detach().cpu().clone() for name, t in state.items() if NOISE_MARKER not in name}
    atomic_torch_save({"dims": model.dims.to_dict(), "model_state_dict": plain}, path)
