"""Our own format: one `.pt` holding only plain dicts, lists, primitives and tensors, so it loads
with weights_only=True:
{"format": "whisper_scratch", "version": 1, "dims": {...}, "dual_attention": bool,
 "model_state_dict": {...}, "alignment_heads": [[layer, head], ...] or None, "extra": {...}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from ...common.files import atomic_torch_save
from ..whisper import Whisper
from . import Checkpoint, CheckpointError, has_noise_branch, heads_to_pairs, safe_torch_load
from .openai import dims_from_dict

FORMAT = "whisper_scratch"
VERSION = 1
MODEL_FILE = "model.pt"  # the file name inside a checkpoint folder


def is_native(data: Any) -> bool:
    """Whether an already loaded `.pt` payload is in our format."""
    return isinstance(data, dict) and data.get("format") == FORMAT


def _plain(value: Any, where: str) -> Any:
    """`value` as plain containers and primitives (what weights_only loading accepts)."""
    if value is None or isinstance(value, (bool, int, float, str, Tensor)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a checkpoint (use plain values)")


def save_native(model: Whisper, path: str | Path, extra: dict[str, Any] | None = None,
                state_dict: dict[str, Tensor] | None = None) -> None:
    """Write `model` (noise branch included) atomically to `path`, with `state_dict` instead of
    the model's own when given."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "dims": model.dims.to_dict(),
        "dual_attention": bool(model.dual_attention),
        "model_state_dict": {k: v.detach().cpu() for k, v in (state_dict or model.state_dict()).items()},
        "alignment_heads": [list(p) for p in heads_to_pairs(model.alignment_heads)],
        "extra": _plain(extra or {}, "extra"),
    }
    atomic_torch_save(payload, Path(path))


def checkpoint_from_native(data: dict[str, Any], source: str) -> Checkpoint:
    """A Checkpoint from a loaded native payload (see `is_native`)."""
    version = data.get("version")
    if version != VERSION:
        raise CheckpointError(f"{source}: whisper_scratch checkpoint version {version!r} is not supported "
                              f"(this code reads version {VERSION})")
    state = dict(data["model_state_dict"])
    dual = bool(data["dual_attention"])
    if dual != has_noise_branch(state):
        raise CheckpointError(f"{source}: says dual_attention={dual} but "
                              f"{'has no' if dual else 'has'} noise-branch tensors")
    heads = data.get("alignment_heads")
    return Checkpoint(
        dims=dims_from_dict(data["dims"], source),
        state_dict=state,
        dual_attention=dual,
        alignment_heads=heads_to_pairs(heads) if heads is not None else None,
        extra=dict(data.get("extra") or {}),
        source=source,
        format="native",
    )


def load_native(path: str | Path) -> Checkpoint:
    """Read one of our `.pt` checkpoints (weights_only)."""
    path = Path(path)
    data = safe_torch_load(path)
    if not is_native(data):
        raise CheckpointError(f"{path}: not a whisper_scratch checkpoint")
    return checkpoint_from_native(data, str(path))
