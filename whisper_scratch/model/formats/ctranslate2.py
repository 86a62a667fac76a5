"""CTranslate2 Whisper models (faster-whisper's format): a folder with model.bin + config.json.

model.bin (binary version 6), all integers little-endian, strings as u16 length (with a trailing
NUL) + UTF-8 + NUL: u32 version, string spec name, u32 spec revision, u32 variable count; each
variable, sorted by name: string name, u8 rank, rank x u32 shape, u8 dtype, u32 byte count, raw
row-major data (no padding); then u32 alias count and (alias, target) string pairs. Rank-0
variables are settings (head counts, flags), the rest are weights.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO, NamedTuple

import torch
from torch import Tensor

from ...common.files import atomic_open, write_json
from ...tokenizer import WhisperTokenizer
from ...tokenizer.huggingface import TOKENIZER_JSON, ctranslate2_vocabulary, tokenizer_json
from ...tokenizer.suppression import blank_tokens, suppressed_tokens
from ..whisper import ModelDimensions, Whisper
from . import (
    Checkpoint,
    CheckpointError,
    exportable_state,
    fill,
    heads_to_pairs,
    name_list,
    rename,
    tokenizer_extra,
)
from .huggingface import PREPROCESSOR_CONFIG, preprocessor_config

MODEL_FILE = "model.bin"
CONFIG = "config.json"
VOCABULARY = "vocabulary.json"
BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"

# dtype code -> torch dtype; the integer ones only appear as settings or in quantised models.
DTYPES: dict[int, torch.dtype] = {
    0: torch.float32, 1: torch.int8, 2: torch.int16, 3: torch.int32, 4: torch.float16, 5: torch.bfloat16,
}
CODES = {dtype: code for code, dtype in DTYPES.items()}
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
QUANTISED = ("quantised CTranslate2 models (int8, int16) are not supported: "
             "convert with --quantization float16 or float32")

TIED_OUTPUT = "decoder/projection/weight"  # an alias of the token embedding in Whisper files
EMBEDDING = "decoder/embeddings/weight"


class Setting(NamedTuple):
    """A rank-0 variable: the dtype it is written in, its value (None: the model's head count),
    whether a file must hold that value, and whether we write it."""
    dtype: torch.dtype
    value: int | None
    checked: bool = True
    written: bool = True


# activation 3 is CTranslate2's exact GELU. alignment_heads and alignment_layer are its runtime
# defaults for word timing (config.json's alignment_heads are the real ones), so any value is read.
# The two ALiBi flags come from newer converters (ctranslate2 4.8 writes them); we leave them out,
# so that our files are byte for byte those of the converter behind the published models.
SETTINGS: dict[str, Setting] = {
    "encoder/num_heads": Setting(torch.int16, None, checked=False),
    "decoder/num_heads": Setting(torch.int16, None, checked=False),
    "decoder/activation": Setting(torch.int8, 3),
    "decoder/pre_norm": Setting(torch.int8, 1),
    "decoder/scale_embeddings": Setting(torch.int8, 0),
    "decoder/alibi": Setting(torch.int8, 0),
    "decoder/alibi_use_positive_positions": Setting(torch.int8, 0, written=False),
    "decoder/scale_alibi": Setting(torch.int8, 0, written=False),
    "decoder/start_from_zero_embedding": Setting(torch.int8, 0),
    "decoder/alignment_heads": Setting(torch.int16, 1, checked=False),
    "decoder/alignment_layer": Setting(torch.int16, -1, checked=False),
}
SPEC_REVISION = 3

_E = "encoder/layer_{i}/"
_D = "decoder/layer_{i}/"
_EB = "encoder.blocks.{i}."
_DB = "decoder.blocks.{i}."


def _sublayers(ct2: str, ours: str) -> dict[str, str | tuple[str | None, ...]]:
    """The self-attention (fused query/key/value) and feed-forward rows of one layer kind."""
    return {
        ct2 + "self_attention/linear_0/weight": (ours + "attn.query.weight", ours + "attn.key.weight",
                                                 ours + "attn.value.weight"),
        ct2 + "self_attention/linear_0/bias": (ours + "attn.query.bias", None, ours + "attn.value.bias"),
        ct2 + "self_attention/linear_1/weight": ours + "attn.out.weight",
        ct2 + "self_attention/linear_1/bias": ours + "attn.out.bias",
        ct2 + "self_attention/layer_norm/gamma": ours + "attn_ln.weight",
        ct2 + "self_attention/layer_norm/beta": ours + "attn_ln.bias",
        ct2 + "ffn/linear_0/weight": ours + "mlp.0.weight",
        ct2 + "ffn/linear_0/bias": ours + "mlp.0.bias",
        ct2 + "ffn/linear_1/weight": ours + "mlp.2.weight",
        ct2 + "ffn/linear_1/bias": ours + "mlp.2.bias",
        ct2 + "ffn/layer_norm/gamma": ours + "mlp_ln.weight",
        ct2 + "ffn/layer_norm/beta": ours + "mlp_ln.bias",
    }


# CT2 name -> OpenAI name, or a tuple of OpenAI names for a fused tensor whose rows are split in
# equal parts (None: a key-projection bias slice, which must be zero: Whisper's keys have no bias).
# No transposes, no scaling.
CT2_TO_OPENAI: dict[str, str | tuple[str | None, ...]] = {
    "encoder/conv1/weight": "encoder.conv1.weight",
    "encoder/conv1/bias": "encoder.conv1.bias",
    "encoder/conv2/weight": "encoder.conv2.weight",
    "encoder/conv2/bias": "encoder.conv2.bias",
    # The stored fp16 table: recomputing the sinusoids in fp32 moves the encoder output noticeably.
    "encoder/position_encodings/encodings": "encoder.positional_embedding",
    **_sublayers(_E, _EB),
    "encoder/layer_norm/gamma": "encoder.ln_post.weight",
    "encoder/layer_norm/beta": "encoder.ln_post.bias",
    EMBEDDING: "decoder.token_embedding.weight",
    "decoder/position_encodings/encodings": "decoder.positional_embedding",
    **_sublayers(_D, _DB),
    _D + "attention/linear_0/weight": _DB + "cross_attn.query.weight",
    _D + "attention/linear_0/bias": _DB + "cross_attn.query.bias",
    _D + "attention/linear_1/weight": (_DB + "cross_attn.key.weight", _DB + "cross_attn.value.weight"),
    _D + "attention/linear_1/bias": (None, _DB + "cross_attn.value.bias"),
    _D + "attention/linear_2/weight": _DB + "cross_attn.out.weight",
    _D + "attention/linear_2/bias": _DB + "cross_attn.out.bias",
    _D + "attention/layer_norm/gamma": _DB + "cross_attn_ln.weight",
    _D + "attention/layer_norm/beta": _DB + "cross_attn_ln.bias",
    "decoder/layer_norm/gamma": "decoder.ln.weight",
    "decoder/layer_norm/beta": "decoder.ln.bias",
}


class _Stream:
    """Reads a list of files as one byte stream (a model.bin split into parts), without joining them on disk."""

    def __init__(self, paths: Sequence[Path], stack: ExitStack):
        self._files: list[BinaryIO] = [stack.enter_context(open(p, "rb")) for p in paths]
        self._current = 0
        self.source = " + ".join(str(p) for p in paths)

    def read(self, n: int) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self._files[self._current].readinto(view[got:]) if self._current < len(self._files) else 0
            if k:
                got += k
            elif self._current < len(self._files):
                self._current += 1
            else:
                raise CheckpointError(f"{self.source}: truncated CTranslate2 model (needed {n - got} more bytes)")
        return buf

    def at_end(self) -> bool:
        return all(not f.read(1) for f in self._files[self._current:])

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        return bytes(self.read(n)).rstrip(b"\0").decode("utf-8")


def _read_variables(stream: _Stream) -> tuple[dict[str, Tensor], dict[str, int | float], dict[str, str]]:
    """(weights, settings, aliases) of a model.bin; quantised weights stop the read at once."""
    version = stream.unpack("I")[0]
    if version != BINARY_VERSION:
        raise CheckpointError(f"{stream.source}: CTranslate2 binary version {version} is not supported "
                              f"(expected {BINARY_VERSION}, as written by ctranslate2 4.x)")
    spec = stream.string()
    if spec != SPEC_NAME:
        raise CheckpointError(f"{stream.source}: a {spec} model, not a {SPEC_NAME}")
    stream.unpack("I")  # spec revision: the names below are checked one by one instead
    (count,) = stream.unpack("I")
    weights: dict[str, Tensor] = {}
    settings: dict[str, int | float] = {}
    for _ in range(count):
        name = stream.string()
        (rank,) = stream.unpack("B")
        shape = stream.unpack(f"{rank}I") if rank else ()
        code, nbytes = stream.unpack("BI")
        if code not in DTYPES:
            raise CheckpointError(f"{stream.source}: {name} has unknown dtype code {code}")
        dtype = DTYPES[code]
        if nbytes != math.prod(shape) * dtype.itemsize:
            raise CheckpointError(f"{stream.source}: {name} has {nbytes} bytes for shape {list(shape)} {dtype}")
        if (rank and dtype not in FLOAT_DTYPES) or name.endswith("weight_scale"):
            raise CheckpointError(f"{stream.source}: {QUANTISED} ({name} is {dtype})")
        data = stream.read(nbytes)
        tensor = torch.frombuffer(data, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
        if rank:
            weights[name] = tensor.reshape(shape)
        else:
            settings[name] = tensor.item()
    (n_aliases,) = stream.unpack("I")
    aliases = {stream.string(): stream.string() for _ in range(n_aliases)}
    if not stream.at_end():
        raise CheckpointError(f"{stream.source}: unexpected bytes after the aliases (wrong or extra part files?)")
    return weights, settings, aliases


def _check_settings(settings: dict[str, int | float], source: str) -> None:
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise CheckpointError(f"{source}: unexpected CTranslate2 setting(s) {name_list(unknown)}")
    for name in ("encoder/num_heads", "decoder/num_heads"):
        if name not in settings:
            raise CheckpointError(f"{source}: missing CTranslate2 setting {name}")
    for name, setting in SETTINGS.items():
        if setting.checked and name in settings and settings[name] != setting.value:
            raise CheckpointError(f"{source}: {name} = {settings[name]}, OpenAI's Whisper needs {setting.value}")


def _to_openai(weights: dict[str, Tensor], aliases: dict[str, str], source: str) -> dict[str, Tensor]:
    for alias, target in aliases.items():
        if (alias, target) != (TIED_OUTPUT, EMBEDDING):
            raise CheckpointError(f"{source}: unexpected CTranslate2 alias {alias} -> {target}")
    # An explicit output projection must still be the token embedding: ours is tied.
    output = weights.pop(TIED_OUTPUT, None)
    if output is not None and not torch.equal(output, weights.get(EMBEDDING, torch.empty(0))):
        raise CheckpointError(f"{source}: {TIED_OUTPUT} differs from {EMBEDDING} (untied output projections "
                              "are not supported)")
    return rename(weights, CT2_TO_OPENAI, source, "CTranslate2 variable(s)")


def _dims(state: dict[str, Tensor], settings: dict[str, int | float], source: str) -> ModelDimensions:
    """Dimensions from the tensor shapes and the head-count settings."""
    def layers(prefix: str) -> int:
        return len({k.split(".")[2] for k in state if k.startswith(prefix)})
    try:
        conv1 = state["encoder.conv1.weight"]
        vocab, text_state = state["decoder.token_embedding.weight"].shape
        return ModelDimensions(
            n_mels=conv1.shape[1], n_audio_ctx=state["encoder.positional_embedding"].shape[0],
            n_audio_state=conv1.shape[0], n_audio_head=int(settings["encoder/num_heads"]),
            n_audio_layer=layers("encoder.blocks."), n_vocab=vocab,
            n_text_ctx=state["decoder.positional_embedding"].shape[0], n_text_state=text_state,
            n_text_head=int(settings["decoder/num_heads"]), n_text_layer=layers("decoder.blocks."))
    except KeyError as e:
        raise CheckpointError(f"{source}: missing tensor {e.args[0]}") from None


def load_ctranslate2(path: str | Path | Sequence[str | Path]) -> Checkpoint:
    """Read a CTranslate2 Whisper model: a folder, its model.bin, or a list of part files that
    together make one model.bin (read in order as a single stream). Only float16/float32/bfloat16
    models: quantised ones raise. config.json (beside the first file) supplies the alignment heads
    and the suppress/language ids."""
    if isinstance(path, (str, Path)):
        path = Path(path)
        files = [path / MODEL_FILE] if path.is_dir() else [path]
    else:
        files = [Path(p) for p in path]
    if not files:
        raise CheckpointError("load_ctranslate2: no files given")
    folder = files[0].parent
    with ExitStack() as stack:
        stream = _Stream(files, stack)
        weights, settings, aliases = _read_variables(stream)
    source = stream.source
    _check_settings(settings, source)
    state = _to_openai(weights, aliases, source)
    config = json.loads((folder / CONFIG).read_text()) if (folder / CONFIG).is_file() else {}
    extra: dict = tokenizer_extra(folder)
    for key in ("suppress_ids", "suppress_ids_begin", "lang_ids"):
        if config.get(key) is not None:
            extra[key] = [int(i) for i in config[key]]
    heads = config.get("alignment_heads")
    return Checkpoint(
        dims=_dims(state, settings, source),
        state_dict=state,
        dual_attention=False,
        alignment_heads=[(int(layer), int(head)) for layer, head in heads] if heads else None,
        extra=extra,
        source=source,
        format="ctranslate2",
    )


def _from_openai(state: dict[str, Tensor], dims: ModelDimensions) -> dict[str, Tensor]:
    """CT2-named weights from OpenAI-named ones: CT2_TO_OPENAI read backwards, fused tensors
    concatenated (a key-bias slot filled with zeros)."""
    out: dict[str, Tensor] = {}
    for ct2_name, target in CT2_TO_OPENAI.items():
        n_layers = dims.n_audio_layer if ct2_name.startswith("encoder/") else dims.n_text_layer
        for index in (range(n_layers) if "{i}" in ct2_name else [None]):
            i = None if index is None else str(index)
            names = fill(target, i)
            if isinstance(names, str):
                out[fill(ct2_name, i)] = state[names]
            else:
                like = state[next(n for n in names if n is not None)]
                out[fill(ct2_name, i)] = torch.cat([state[n] if n is not None else torch.zeros_like(like)
                                                    for n in names])
    return out


def _write_string(f: BinaryIO, text: str) -> None:
    data = text.encode("utf-8") + b"\0"
    f.write(struct.pack("<H", len(data)) + data)


def _write_variable(f: BinaryIO, name: str, tensor: Tensor) -> None:
    _write_string(f, name)
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    f.write(struct.pack(f"<B{tensor.dim()}I", tensor.dim(), *tensor.shape))
    f.write(struct.pack("<BI", CODES[tensor.dtype], raw.nbytes))
    f.write(raw)


def save_ctranslate2(model: Whisper, folder: str | Path, tokenizer: WhisperTokenizer | None = None,
                     dtype: torch.dtype = torch.float16, drop_noise_branch: bool = False) -> None:
    """Write `model` as a CTranslate2 folder: model.bin (weights in `dtype`), config.json
    (alignment heads; with a tokenizer also the suppressed and language ids) and
    preprocessor_config.json; with a tokenizer also vocabulary.json and tokenizer.json, which
    faster-whisper needs. Every file is written atomically."""
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"CTranslate2 export writes float16, bfloat16 or float32, not {dtype}")
    folder = Path(folder)
    dims = model.dims
    weights = {k: v.to(dtype) for k, v in _from_openai(exportable_state(model, drop_noise_branch, str(folder)),
                                                       dims).items()}
    heads = {"encoder/num_heads": dims.n_audio_head, "decoder/num_heads": dims.n_text_head}
    settings = {name: torch.tensor(heads.get(name, setting.value), dtype=setting.dtype)
                for name, setting in SETTINGS.items() if setting.written}
    variables = {**weights, **settings}
    with atomic_open(folder / MODEL_FILE) as f:
        f.write(struct.pack("<I", BINARY_VERSION))
        _write_string(f, SPEC_NAME)
        f.write(struct.pack("<II", SPEC_REVISION, len(variables)))
        for name in sorted(variables):
            _write_variable(f, name, variables[name])
        f.write(struct.pack("<I", 1))
        _write_string(f, TIED_OUTPUT)
        _write_string(f, EMBEDDING)
    config: dict = {"alignment_heads": [list(p) for p in heads_to_pairs(model.alignment_heads)]}
    if tokenizer is not None:
        config.update(lang_ids=list(tokenizer.all_language_tokens),
                      suppress_ids=suppressed_tokens(tokenizer, "-1", dims.n_vocab),
                      suppress_ids_begin=blank_tokens(tokenizer))
        write_json(folder / VOCABULARY, ctranslate2_vocabulary(tokenizer))
        write_json(folder / TOKENIZER_JSON, tokenizer_json(tokenizer))
    write_json(folder / CONFIG, config)
    write_json(folder / PREPROCESSOR_CONFIG, preprocessor_config(dims))
