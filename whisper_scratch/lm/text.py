"""The words a language model is built from and scores: text read from a listing or a text file
and normalised exactly as WER scoring normalises that language (openai-whisper's rules, see
evaluation.normalizers), so that the LM's words are the words that are counted."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..data.manifest import read_texts
from ..evaluation.normalizers import get_normalizer


def word_splitter(language: str | None) -> Callable[[str], list[str]]:
    """text -> its normalised words, by the scoring rules of `language` (English rules for "en",
    the basic ones otherwise)."""
    normalise = get_normalizer(language)
    return lambda text: normalise(text).split()


def read_sentences(sources: Sequence[str | Path | Callable[[], list[str]]],
                   language: str | None) -> Iterator[list[str]]:
    """The normalised words of every transcript of `sources`, one after the other: each a file (a
    .txt of one sentence a line, a .jsonl, a .csv or a Common Voice .tsv: see
    data.manifest.read_texts) or a function giving transcripts (a Hugging Face dataset's column);
    a sentence that normalises to nothing is left out. ManifestError for an unreadable source."""
    words = word_splitter(language)
    for source in sources:
        for text in (source() if callable(source) else read_texts(source)):
            if sentence := words(text):
                yield sentence
