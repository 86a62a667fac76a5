"""Whisper's BPE written as the tokenizer files other runtimes read, from our tiktoken assets:
Hugging Face's `tokenizer.json` (the `tokenizers` library: transformers, faster-whisper),
`vocab.json` + `merges.txt` + `added_tokens.json` (transformers' slow tokenizer, whisper.cpp's
converter) and CTranslate2's vocabulary (one string per model id).

Token strings use GPT-2's byte-level alphabet: every byte is one printable character, so a token
of any bytes is a string without spaces or control characters.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from .base import N_TIMESTAMPS
from .whisper_bpe import WhisperTokenizer, load_ranks


def _byte_chars() -> tuple[str, ...]:
    """Character of each byte: printable Latin-1 stands for itself; the other 68 bytes (controls,
    space, DEL, NBSP, soft hyphen) take the characters from U+0100 on, in byte order: " " is "Ġ"."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    others = iter(range(256, 512))
    return tuple(chr(b) if b in printable else chr(next(others)) for b in range(256))


BYTE_CHARS = _byte_chars()

EOT = "<|endoftext|>"
TOKENIZER_JSON = "tokenizer.json"


def token_text(token: bytes) -> str:
    """Bytes of a BPE token in the byte-level alphabet: b" the" -> "Ġthe"."""
    return "".join(BYTE_CHARS[b] for b in token)


@lru_cache(maxsize=None)
def merges(vocabulary: str) -> tuple[tuple[bytes, bytes], ...]:
    """The BPE merge list of assets/{vocabulary}.tiktoken, in rank order.

    tiktoken keeps only ranks: it joins the adjacent pair whose concatenation has the lowest rank.
    The merge that makes a token is therefore found by running that rule on the token's bytes with
    the lower ranks only: it ends in two parts. A token the rule cannot reach (it would end in three
    or more parts) gets no merge, since BPE never produces it."""
    ranks = load_ranks(vocabulary)
    found = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]
            best = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[best] >= rank:
                break
            parts[best:best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) == 2:
            found.append((parts[0], parts[1]))
    return tuple(found)


def _merge_lines(tk: WhisperTokenizer) -> list[str]:
    return [f"{token_text(a)} {token_text(b)}" for a, b in merges(tk.vocabulary)]


def _specials(tk: WhisperTokenizer) -> list[tuple[str, int]]:
    """(text, id) of the special tokens, <|endoftext|> ... <|notimestamps|>, without timestamps."""
    return [(text, i) for text, i in tk.special_tokens.items() if i < tk.timestamp_begin]


def vocab(tk: WhisperTokenizer) -> dict[str, int]:
    """BPE token text -> id, then <|endoftext|> (as in Whisper's vocab.json)."""
    ranks = load_ranks(tk.vocabulary)
    return {**{token_text(token): rank for token, rank in ranks.items()}, EOT: tk.eot}


def ctranslate2_vocabulary(tk: WhisperTokenizer) -> list[str]:
    """One string per model id: BPE tokens, special tokens, then the 1501 timestamps."""
    texts = [""] * (tk.timestamp_begin + N_TIMESTAMPS)
    for text, i in {**vocab(tk), **tk.special_tokens}.items():
        texts[i] = text
    return texts


def tokenizer_json(tk: WhisperTokenizer) -> dict[str, Any]:
    """Hugging Face `tokenizers` description: byte-level BPE over our ranks, the special tokens
    added, and a template that wraps text as <|startoftranscript|><|notimestamps|> ... <|endoftext|>."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    wrap = ["<|startoftranscript|>", "<|notimestamps|>"]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for text, i in _specials(tk)],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [*({"SpecialToken": {"id": t, "type_id": 0}} for t in wrap),
                       {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": EOT, "type_id": 0}}],
            "pair": [*({"SpecialToken": {"id": t, "type_id": 0}} for t in wrap),
                     {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": EOT, "type_id": 1}}],
            "special_tokens": {t: {"id": t, "ids": [tk.special_tokens[t]], "tokens": [t]} for t in [EOT, *wrap]},
        },
        # Decoding keeps a leading space, as Whisper's own tokenizer does.
        "decoder": {**byte_level, "add_prefix_space": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "vocab": vocab(tk),
                  "merges": _merge_lines(tk)},
    }


def huggingface_tokenizer_files(tk: WhisperTokenizer) -> dict[str, Any]:
    """File name -> content (a JSON value, or the text of merges.txt) of a Hugging Face Whisper tokenizer."""
    added = [text for text, _ in _specials(tk) if text != EOT]
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "pad_token": EOT}
    return {
        TOKENIZER_JSON: tokenizer_json(tk),
        "vocab.json": vocab(tk),
        "merges.txt": "#version: 0.2\n" + "\n".join(_merge_lines(tk)) + "\n",
        "added_tokens.json": {text: tk.special_tokens[text] for text in added},
        "special_tokens_map.json": {**special, "additional_special_tokens": added},
        "tokenizer_config.json": {
            **special, "additional_special_tokens": added, "tokenizer_class": "WhisperTokenizer",
            "processor_class": "WhisperProcessor", "model_max_length": 1024, "errors": "replace",
            "add_prefix_space": False, "add_bos_token": False, "clean_up_tokenization_spaces": False},
    }
