"""A model ready to run, in one owner: the network on its device and in its precision, the
vocabulary it decodes with, what its checkpoint says beside the weights, and the rules for the
languages it can be asked for.

    loaded = LoadedModel.load("runs/cs/best", device="cpu")
    language = loaded.language_code("Czech")         # "cs"; ModelError for a language it lacks
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..common.messages import one_line
from ..common.precision import inference_dtype
from ..tokenizer import LANGUAGES, TO_LANGUAGE_CODE, TokenizerBase, WhisperTokenizer, get_tokenizer, tokenizer_beside
from ..tokenizer.base import CONFIG_FILE, normalize_language
from .checkpoint import load_checkpoint, model_from_checkpoint
from .quantize import fp32_logits, quantize_linear
from .whisper import Whisper

ENGLISH = ("en", "english")
# n_vocab of Whisper's BPE vocabularies: English-only, 99 languages, 100 (large-v3).
WHISPER_VOCABULARIES = (51864, 51865, 51866)


class ModelError(ValueError):
    """A model that cannot be loaded, or a request it cannot serve; the message is one line."""


def whisper_vocabulary(model: Whisper) -> WhisperTokenizer:
    """Whisper's own BPE vocabulary for `model` (English-only or multilingual, 99 or 100 languages),
    with no language set: decoding passes the language of each transcript explicitly."""
    if not model.is_multilingual:
        return get_tokenizer(False)
    return get_tokenizer(True, num_languages=model.num_languages)


def is_language(name: str) -> bool:
    """Whether `name` is a language code or name Whisper knows at all (for messages: "xx" is none)."""
    return name.lower() in LANGUAGES or name.lower() in TO_LANGUAGE_CODE


def _check_vocabulary(model: Whisper, tokenizer: TokenizerBase | None, source: str) -> None:
    """The vocabulary must be the model's own: a token id past the model's embedding would only
    surface while decoding, as "index out of range" on every clip."""
    n_vocab = model.dims.n_vocab
    if tokenizer is None and n_vocab not in WHISPER_VOCABULARIES:
        raise ModelError(f"cannot load model {source}: its vocabulary has {n_vocab} tokens, not Whisper's, and "
                         f"no {CONFIG_FILE} lies beside it; copy the tokenizer files saved with the model (a "
                         "model trained from scratch keeps them in its checkpoint folder)")
    if tokenizer is not None and tokenizer.n_vocab != n_vocab:
        raise ModelError(f"cannot load model {source}: the tokenizer beside it has {tokenizer.n_vocab} tokens but "
                         f"the model {n_vocab}, so they do not belong together; copy the tokenizer files saved "
                         "with the model")


@dataclass
class LoadedModel:
    """A Whisper with everything needed to decode it as its checkpoint intends."""

    model: Whisper
    tokenizer: TokenizerBase  # the vocabulary saved beside a model trained from scratch, else Whisper's
    source: str = ""  # what it was loaded from, for messages
    metadata: dict[str, Any] = field(default_factory=dict)  # the checkpoint's `extra` (see model.formats)

    @classmethod
    def wrap(cls, model: Whisper, tokenizer: TokenizerBase | None = None, source: str = "") -> LoadedModel:
        """A model already in memory, with `tokenizer` or else Whisper's vocabulary for it."""
        return cls(model, tokenizer or whisper_vocabulary(model), source)

    @classmethod
    def load(cls, path_or_name: str | Path | Sequence[str | Path], device: str | torch.device = "cpu",
             dtype: torch.dtype | str | None = None, dual_attention: bool | None = None,
             quantize: str | None = None) -> LoadedModel:
        """Read any supported checkpoint (see `model.checkpoint`) with the vocabulary beside it.
        `dtype` is a torch dtype or a name (fp32, fp16, bf16); None: fp16 on a GPU, fp32 on a CPU.
        `quantize` "int8" or "fp16": the model in eval mode with such linear layers (`model.quantize`,
        CPU only). A bf16 model comes in eval mode with float32 logits (`model.quantize.fp32_logits`).
        Raises FileNotFoundError for a path that is nothing, ModelError for anything else."""
        source = str(path_or_name)
        if not isinstance(dtype, torch.dtype):
            dtype = inference_dtype(dtype, device)
        try:
            tokenizer = tokenizer_beside(path_or_name) if isinstance(path_or_name, (str, Path)) else None
        except Exception as e:  # noqa: BLE001 -- a broken vocabulary file: say which
            raise ModelError(f"cannot read the tokenizer beside {source}: {one_line(e)}") from None
        try:
            ckpt = load_checkpoint(path_or_name)
            model = model_from_checkpoint(ckpt, device, dtype, dual_attention)
        except FileNotFoundError:
            raise
        except Exception as e:  # noqa: BLE001 -- corrupt or foreign files, an offline download: say which and why
            raise ModelError(f"cannot load model {source}: {one_line(e)}") from None
        _check_vocabulary(model, tokenizer, source)
        if quantize is not None:
            try:
                quantize_linear(model.eval(), quantize)
            except ValueError as e:
                raise ModelError(f"cannot quantize {source}: {e}") from None
        elif dtype == torch.bfloat16:
            fp32_logits(model.eval())
        return cls(model, tokenizer or whisper_vocabulary(model), source, dict(ckpt.extra))

    @property
    def is_multilingual(self) -> bool:
        return self.tokenizer.is_multilingual

    @property
    def language(self) -> str | None:
        """The language a fine-tune was trained on, when its checkpoint says so."""
        return self.metadata.get("language") or None

    def language_code(self, language: str | None) -> str | None:
        """`language` (a code or a name: "cs", "Czech") as a code this model decodes, None for
        None (detect it). English-only models take English only."""
        if language is None:
            return None
        if not self.is_multilingual:
            if language.lower() in ENGLISH:
                return "en"
            if not is_language(language):
                raise ModelError(f"--language {language}: not a language code or name (such as en, de, cs); "
                                 f"{self.source} is an English-only model, so en is the only choice")
            raise ModelError(f"--language {language}: {self.source} is an English-only model; "
                             "use a multilingual model (e.g. base) or --language en")
        try:
            return normalize_language(language, self.tokenizer.all_language_codes)
        except ValueError:
            raise ModelError(f"--language {language}: not a language this model knows; use a code such as "
                             f"en, de, cs (known: {', '.join(self.tokenizer.all_language_codes)})") from None

    def check_task(self, task: str) -> None:
        """Translation needs a multilingual model."""
        if task == "translate" and not self.is_multilingual:
            raise ModelError(f"--task translate needs a multilingual model; {self.source} is English-only")
