"""Which tokens Whisper never samples: the non-speech symbols and the control tokens, and the
blank tokens suppressed as a transcript's first token. Decoding applies them; the checkpoint
formats write them into the configs other runtimes read."""
from __future__ import annotations

from .base import TokenizerBase


def suppressed_tokens(tk: TokenizerBase, spec: str | tuple[int, ...] | None, n_vocab: int) -> list[int]:
    """Sorted ids never sampled: `spec` ("-1" or -1 in it: Whisper's non-speech symbols) plus the
    control tokens, which never belong in a transcript."""
    if isinstance(spec, str):
        spec = tuple(int(t) for t in spec.split(",") if t.strip())
    ids = set(spec or ())
    if -1 in ids:
        ids = (ids - {-1}) | set(tk.non_speech_tokens)
    ids |= {tk.transcribe, tk.translate, tk.sot, tk.sot_prev, tk.sot_lm, tk.no_speech}
    return sorted(i for i in ids if 0 <= i < n_vocab)


def blank_tokens(tk: TokenizerBase) -> list[int]:
    """Tokens suppressed as the first sampled token: a blank and <|endoftext|>."""
    return tk.encode(" ") + [tk.eot]
