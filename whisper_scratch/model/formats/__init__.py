"""Checkpoint formats. Each foreign format is one explicit name-mapping table plus a loader that
returns OpenAI-named tensors in a `Checkpoint`; `model.checkpoint` picks the loader.

Keys that loaders may put in `Checkpoint.extra` (all optional, plain JSON-like values):
  suppress_ids, suppress_ids_begin, lang_ids -- token ids (lists of int) from the checkpoint's config;
  tokenizer_file -- path (str) of a tokenizer.json found beside the weights.
"""
from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from ...common.messages import one_line
from ..whisper import ModelDimensions, Whisper

# Every parameter of the optional noise branch has this in its name (see model/whisper.py).
NOISE_MARKER = ".noise_"
TOKENIZER_FILE = "tokenizer.json"

V = TypeVar("V")

class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not describe a Whisper model we can build."""


@dataclass
class Checkpoint:
    """A Whisper checkpoint in OpenAI's parameter names, whatever format it came from."""

    dims: ModelDimensions
    state_dict: dict[str, Tensor]
    dual_attention: bool
    alignment_heads: list[tuple[int, int]] | None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file or folder it was read from, for error messages
    format: str = ""  # "native", "openai", "huggingface" or "ctranslate2"


def has_noise_branch(state_dict: Mapping[str, Tensor]) -> bool:
    return any(NOISE_MARKER in name for name in state_dict)


def heads_to_pairs(heads: Any) -> list[tuple[int, int]]:
    """(layer, head) pairs from a list of pairs or a boolean (n_layer, n_head) tensor."""
    if isinstance(heads, Tensor):
        heads = heads.to_dense() if heads.is_sparse else heads
        return [(int(layer), int(head)) for layer, head in heads.nonzero().tolist()]
    return [(int(layer), int(head)) for layer, head in heads]


def tokenizer_extra(folder: Path) -> dict[str, str]:
    """{"tokenizer_file": ...} when a tokenizer.json sits in `folder`, else {}."""
    path = folder / TOKENIZER_FILE
    return {"tokenizer_file": str(path)} if path.is_file() else {}


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape("{i}"), r"(\d+)") + "$")


def fill(value: Any, index: str | None) -> Any:
    """A table entry (a name, or a tuple of names and None) with "{i}" replaced by `index`."""
    if isinstance(value, str):
        return value.replace("{i}", index) if index is not None else value
    if isinstance(value, tuple):
        return tuple(fill(v, index) for v in value)
    return value


def compile_table(table: Mapping[str, V]) -> list[tuple[re.Pattern[str], V]]:
    """Patterns for a name table whose keys and values may contain "{i}" (a layer index)."""
    return [(_pattern(source), target) for source, target in table.items()]


def lookup(compiled: list[tuple[re.Pattern[str], V]], name: str) -> V | None:
    """The target of `name` with its layer index filled in, or None if the table lacks it."""
    for pattern, target in compiled:
        m = pattern.match(name)
        if m:
            return fill(target, m.group(1) if m.groups() else None)
    return None


def rename(state: Mapping[str, Tensor], table: Mapping[str, str | tuple[str | None, ...]], source: str,
           kind: str = "tensor(s)") -> dict[str, Tensor]:
    """Apply a name table; a name the table does not know is an error. A tuple target names the
    equal parts of a fused tensor's rows, in order; a None part must be zero (a key-projection bias
    slice: Whisper's keys have none)."""
    compiled = compile_table(table)
    out: dict[str, Tensor] = {}
    unknown = []
    for name, tensor in state.items():
        target = lookup(compiled, name)
        if target is None:
            unknown.append(name)
        elif isinstance(target, str):
            out[target] = tensor
        else:
            if tensor.shape[0] % len(target):
                raise CheckpointError(f"{source}: {name} has {tensor.shape[0]} rows, not {len(target)} equal parts")
            for part_name, part in zip(target, tensor.chunk(len(target))):
                if part_name is not None:
                    out[part_name] = part
                elif bool(part.any()):
                    raise CheckpointError(f"{source}: {name} has a non-zero key bias, which Whisper cannot hold")
    if unknown:
        raise CheckpointError(f"{source}: unexpected {kind} {name_list(unknown)}")
    return out


def invert(table: Mapping[str, str]) -> dict[str, str]:
    """The reverse of a one-to-one name table."""
    return {target: source for source, target in table.items()}


def name_list(names: list[str], limit: int = 8) -> str:
    """Names for an error message, shortened past `limit`."""
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def safe_torch_load(path: Path) -> Any:
    """torch.load that only accepts tensors and plain containers (never arbitrary pickled objects);
    CheckpointError, one line, for such a file and for one that is no checkpoint or is damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch reports a forbidden class and plain garbage alike as an UnpicklingError; only the
        # first names the class.
        forbidden = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if forbidden is None:
            raise CheckpointError(_damaged(path, "no pickle of tensors")) from None
        raise CheckpointError(
            f"{path}: refusing to load: the file pickles objects other than tensors and plain containers "
            f"({forbidden.group(1)}), and only weights_only loading is allowed") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (OSError, RuntimeError, EOFError, KeyError, ValueError) as e:  # a cut zip archive, a cut or foreign pickle
        # torch's first sentence is kept: it tells a cut archive from, say, memory running out.
        first = one_line(str(e)).split(". ")[0]
        raise CheckpointError(_damaged(path, f"{type(e).__name__}: {first}" if first else type(e).__name__)) from None


def _damaged(path: Path, reason: str) -> str:
    return (f"{path}: not a PyTorch checkpoint, or a damaged one (cut short while being written or copied?); "
            f"use another copy of it ({reason})")


def exportable_state(model: Whisper, drop_noise_branch: bool, target: str) -> dict[str, Tensor]:
    """The model's tensors (detached, on the CPU) for a format without the noise branch: a dual
    model is refused unless `drop_noise_branch`, since dropping the branch changes its output."""
    state = model.state_dict()
    if has_noise_branch(state) and not drop_noise_branch:
        raise CheckpointError(f"{target}: the model has a noise branch (dual attention) that no other Whisper "
                              "runtime can run; add --drop_noise_branch to export it without the branch (its "
                              "transcripts may then differ from the dual model's)")
    return {k: v.detach().cpu() for k, v in state.items() if NOISE_MARKER not in k}
