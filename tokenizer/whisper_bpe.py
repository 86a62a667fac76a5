"""Whisper's byte-level BPE tokenizer (GPT-2 style) on top of `tiktoken`."""
from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import tiktoken

from .base import CONFIG_FILE, TokenizerBase, special_token_strings
from .languages import LANGUAGES

ASSETS = Path(__file__).with_name("assets")
# GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other-symbol runs, whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=None)
def load_ranks(name: str) -> dict[bytes, int]:
    """BPE token bytes -> rank (= id) from assets/{name}.tiktoken ("gpt2" or "multilingual")."""
    ranks: dict[bytes, int] = {}
    for line in (ASSETS / f"{name}.tiktoken").read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=None)
def load_encoding(name: str, num_languages: int) -> tiktoken.Encoding:
    """A tiktoken encoding from assets/{name}.tiktoken ("gpt2" or "multilingual") plus Whisper's specials."""
    ranks = load_ranks(name)
    specials = special_token_strings(list(LANGUAGES)[:num_languages])
    return tiktoken.Encoding(
        name=f"whisper-{name}-{num_languages}",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={text: len(ranks) + i for i, text in enumerate(specials)},
        explicit_n_vocab=len(ranks) + len(specials),
    )


class WhisperTokenizer(TokenizerBase):
    """The tokenizer of the released Whisper checkpoints.

    English-only models use the GPT-2 vocabulary (51864 tokens); multilingual ones their own (51865,
    or 51866 with the 100th language "yue" of large-v3).
    """

    def __init__(
        self,
        multilingual: bool,
        *,
        num_languages: int = 99,
        language: str | None = None,
        task: str | None = None,
    ) -> None:
        if num_languages not in (99, 100):
            raise ValueError(f"num_languages must be 99 or 100, got {num_languages}")
        self.num_languages = num_languages
        self.vocabulary = "multilingual" if multilingual else "gpt2"  # the assets file of its BPE ranks
        self.encoding = load_encoding(self.vocabulary, num_languages)
        super().__init__(
            self.encoding.eot_token,  # the specials start right after the BPE ranks
            list(LANGUAGES)[:num_languages],
            multilingual=multilingual,
            language=language,
            task=task,
        )

    def encode(self, text: str) -> list[int]:
        """BPE ids of `text`; special-token markup such as "<|en|>" in it is encoded as plain text."""
        return self.encoding.encode(text, disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        """The text of `ids`, leaving out special tokens and timestamps."""
        return self.encoding.decode([i for i in ids if i < self.eot])

    def decode_with_timestamps(self, ids: Sequence[int]) -> str:
        """The text of `ids` with special tokens and timestamps written out, e.g. "<|1.08|>"."""
        return self.encoding.decode(list(ids))

    def _symbol_token(self, text: str, first_of_many: bool) -> int | None:
        ids = self.encode(text)
        return ids[0] if len(ids) == 1 or first_of_many else None

    def save(self, directory: str | Path) -> None:
        """Write the tokenizer description (CONFIG_FILE) naming this vocabulary, so a checkpoint folder describes its tokenizer."""
        config = {"kind": "whisper", "multilingual": self.is_multilingual, "num_languages": self.num_languages}
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


@lru_cache(maxsize=None)
def get_tokenizer(
    multilingual: bool,
    *,
    num_languages: int = 99,
    language: str | None = None,
    task: str | None = None,
) -> WhisperTokenizer:
    """A shared WhisperTokenizer; `language` is a code or a name, `task` "transcribe" or "translate"."""
    return WhisperTokenizer(multilingual, num_languages=num_languages, language=language, task=task)
