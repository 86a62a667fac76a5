"""OpenAI's `.pt` checkpoints: a torch pickle of {"dims": {...}, "model_state_dict": {...}}.

Our parameter names are OpenAI's, so the name table is the identity."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from ...common.files import atomic_torch_save
from ..whisper import ModelDimensions, Whisper
from . import Checkpoint, CheckpointError, exportable_state, has_noise_branch, heads_to_pairs, safe_torch_load

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


def save_openai(model: Whisper, path: str | Path, dtype: torch.dtype = torch.float32,
                drop_noise_branch: bool = False) -> None:
    """Write `model` (tensors in `dtype`) as an OpenAI `.pt` that openai-whisper loads strictly,
    atomically. OpenAI's model has no noise branch: a dual model needs drop_noise_branch=True."""
    path = Path(path)
    state = {k: v.to(dtype).clone() for k, v in exportable_state(model, drop_noise_branch, str(path)).items()}
    atomic_torch_save({"dims": model.dims.to_dict(), "model_state_dict": state}, path)
