"""Load any supported checkpoint into our Whisper, strictly; save ours; export OpenAI's.

Formats, told apart by what the path is:
  a size name ("tiny", "base.en", "large-v3-turbo", ...) -> OpenAI's checkpoint, downloaded and cached;
  a `.pt` file -> ours (it says format "whisper_scratch") or else OpenAI's;
  a folder with model.pt -> ours; with config.json + model.bin -> CTranslate2;
  with config.json + model.safetensors / pytorch_model.bin -> Hugging Face;
  a list of files -> the parts of one CTranslate2 model.bin.

Metadata that is not weights (suppress ids, language ids, tokenizer file, a fine-tune's language)
comes back in `Checkpoint.extra`; `model.loaded.LoadedModel` keeps it beside the model it loads.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .download import ALIGNMENT_HEADS, MODEL_URLS, download
from .formats import NOISE_MARKER, Checkpoint, CheckpointError, name_list, safe_torch_load
from .formats.ctranslate2 import CONFIG as CT2_CONFIG
from .formats.ctranslate2 import MODEL_FILE as CT2_MODEL_FILE
from .formats.ctranslate2 import load_ctranslate2
from .formats.huggingface import PYTORCH_BIN, is_huggingface_dir, load_huggingface
from .formats.native import MODEL_FILE as NATIVE_MODEL_FILE
from .formats.native import checkpoint_from_native, is_native, save_native
from .formats.openai import checkpoint_from_openai, save_openai
from .quantize import is_quantized
from .whisper import Whisper

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "load_model", "model_from_checkpoint", "save_model",
           "export_openai"]


def _load_pt(path: Path) -> Checkpoint:
    # One read serves both: our files say who they are, anything else must be OpenAI's layout.
    data = safe_torch_load(path)
    return checkpoint_from_native(data, str(path)) if is_native(data) else checkpoint_from_openai(data, str(path))


def load_checkpoint(path_or_name: str | Path | Sequence[str | Path]) -> Checkpoint:
    """Read a checkpoint in any supported format into OpenAI-named tensors (see the module doc)."""
    if isinstance(path_or_name, Sequence) and not isinstance(path_or_name, str):
        return load_ctranslate2(path_or_name)
    path = Path(path_or_name)
    if path.is_dir():
        if (path / NATIVE_MODEL_FILE).is_file():
            return _load_pt(path / NATIVE_MODEL_FILE)
        if (path / CT2_MODEL_FILE).is_file() and (path / CT2_CONFIG).is_file():
            return load_ctranslate2(path)
        if is_huggingface_dir(path):
            return load_huggingface(path)
        raise CheckpointError(f"{path}: not a checkpoint folder (expected {NATIVE_MODEL_FILE}, config.json + "
                              f"{CT2_MODEL_FILE} (CTranslate2), or config.json + model.safetensors / {PYTORCH_BIN} "
                              "(Hugging Face))")
    if path.is_file():
        if path.name == CT2_MODEL_FILE:
            return load_ctranslate2(path)
        if path.suffix == ".safetensors" or path.name == PYTORCH_BIN:
            return load_huggingface(path.parent)
        return _load_pt(path)
    if str(path_or_name) in MODEL_URLS:
        ckpt = _load_pt(download(str(path_or_name)))
        ckpt.alignment_heads = ckpt.alignment_heads or list(ALIGNMENT_HEADS[str(path_or_name)])
        return ckpt
    raise FileNotFoundError(f"{path}: no such checkpoint file or folder, and not a model name "
                            f"({', '.join(MODEL_URLS)})")


def _check_fit(model: Whisper, got: dict[str, torch.Tensor], source: str, fresh_noise: bool) -> None:
    """Raise naming every missing, unexpected or mis-shaped tensor (strict loading)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in got and not (fresh_noise and NOISE_MARKER in k)]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k} {list(got[k].shape)} (model {list(expected[k].shape)})"
              for k in expected if k in got and got[k].shape != expected[k].shape]
    problems = [f"{label}: {name_list(names)}" for label, names in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)) if names]
    if problems:
        raise CheckpointError(f"checkpoint {source} does not fit Whisper({model.dims}, "
                              f"dual_attention={model.dual_attention}): " + "; ".join(problems))


def model_from_checkpoint(ckpt: Checkpoint, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                          dual_attention: bool | None = None, drop_noise_branch: bool = False) -> Whisper:
    """Build a Whisper for `ckpt` and load it strictly (see `load_model` for the noise-branch rules)."""
    state = ckpt.state_dict
    has_noise = ckpt.dual_attention
    if drop_noise_branch:
        state = {k: v for k, v in state.items() if NOISE_MARKER not in k}
        has_noise = False
    elif has_noise and dual_attention is False:
        raise ValueError(f"checkpoint {ckpt.source} has a noise branch; load it with dual_attention=True "
                         "or pass drop_noise_branch=True")
    dual = has_noise if dual_attention is None else dual_attention
    model = Whisper(ckpt.dims, dual_attention=dual)  # a dual model starts with a fresh noise branch
    fresh_noise = dual and not has_noise
    _check_fit(model, state, ckpt.source, fresh_noise)
    model.load_state_dict(state, strict=not fresh_noise)
    if ckpt.alignment_heads is not None:
        model.set_alignment_heads(ckpt.alignment_heads)
    return model.to(device=device, dtype=dtype)


def load_model(path_or_name: str | Path | Sequence[str | Path], device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, dual_attention: bool | None = None,
               drop_noise_branch: bool = False) -> Whisper:
    """Whisper loaded strictly from any supported checkpoint.

    dual_attention: None follows the checkpoint; True on a plain checkpoint adds a freshly
    initialised noise branch (the model then computes exactly what the plain one does); False on a
    checkpoint with a noise branch is an error unless drop_noise_branch=True discards it.
    """
    return model_from_checkpoint(load_checkpoint(path_or_name), device, dtype, dual_attention, drop_noise_branch)


def save_model(model: Whisper, path: str | Path, extra: dict[str, Any] | None = None,
               state_dict: dict[str, Tensor] | None = None) -> Path:
    """Save `model` in our format (atomically) to `path`, or to `path`/model.pt if `path` is a
    folder, with `extra` (plain values: the language of a fine-tune, its step) beside the weights;
    `state_dict` replaces the model's own (merged adapters, weights gathered from shards).
    Returns the file written."""
    if is_quantized(model) and state_dict is None:
        raise ValueError("the model has weights for running only (--quantize, or a bf16 model's float32 logits): "
                         "save the float model")
    path = Path(path)
    if path.is_dir():
        path = path / NATIVE_MODEL_FILE
    save_native(model, path, extra or {}, state_dict)
    return path


def export_openai(model: Whisper, path: str | Path, drop_noise_branch: bool = False) -> None:
    """Write an OpenAI `.pt` for openai-whisper; a model with a noise branch is refused unless
    drop_noise_branch=True."""
    save_openai(model, path, drop_noise_branch=drop_noise_branch)
