"""Whisper's special-token layout and the parts of its tokenizer interface that do not depend on the text model."""
from __future__ import annotations

import string
from collections.abc import Sequence
from functools import cached_property

from .languages import TO_LANGUAGE_CODE

# Not "tokenizer.json": Hugging Face and CTranslate2 folders already use that name for their own format.
CONFIG_FILE = "whisper_scratch_tokenizer.json"
N_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|> in 20 ms steps
TASKS = ("transcribe", "translate")

# Symbols whose tokens Whisper suppresses so the model does not invent speaker tags, music notes or
# annotations such as "( SPEAKING FOREIGN LANGUAGE )"; plain punctuation (, . ? ! - ') stays allowed.
SUPPRESSED_SYMBOLS = tuple('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + tuple(
    "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
)
# Musical signs U+2669..U+266F share their first two UTF-8 bytes with each other and only with other
# U+2640..U+267F miscellaneous symbols, so suppressing the first token of a multi-token encoding is safe.
MUSIC_SYMBOLS = tuple("♩♪♫♬♭♮♯")
# Hyphen and apostrophe are fine inside words but not as a word's first token.
WORD_INITIAL_SUPPRESSED = (" -", " '")

# Scripts written without spaces between words: words are split wherever a whole character is complete.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})


def special_token_strings(language_codes: Sequence[str]) -> list[str]:
    """Whisper's special tokens in id order; they follow the text vocabulary directly."""
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in language_codes),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *(f"<|{i * 0.02:.2f}|>" for i in range(N_TIMESTAMPS)),
    ]


def normalize_language(language: str | None, known: Sequence[str]) -> str | None:
    """Accept a code or a language name ("Czech", "mandarin"); raise ValueError for anything else."""
    if language is None:
        return None
    code = language if language in known else TO_LANGUAGE_CODE.get(language.lower(), language.lower())
    if code not in known:
        raise ValueError(f"unsupported language {language!r}; this tokenizer knows {', '.join(known)}")
    return code


class TokenizerBase:
    """Special-token ids, start-of-transcript sequences, suppressed symbols and word splitting.

    Subclasses supply `encode`, `decode`, `decode_with_timestamps` and `_symbol_token` over a text
    vocabulary of `n_text` tokens; the special tokens take ids n_text, n_text + 1, ...
    """

    def __init__(
        self,
        n_text: int,
        language_codes: Sequence[str],
        *,
        multilingual: bool,
        language: str | None = None,
        task: str | None = None,
    ) -> None:
        self.all_language_codes: tuple[str, ...] = tuple(language_codes)
        self.is_multilingual = multilingual
        specials = special_token_strings(self.all_language_codes)
        self.special_tokens: dict[str, int] = {text: n_text + i for i, text in enumerate(specials)}
        self.n_vocab = n_text + len(specials)

        n_lang = len(self.all_language_codes)
        self.eot = n_text
        self.sot = n_text + 1
        self.all_language_tokens: tuple[int, ...] = tuple(range(self.sot + 1, self.sot + 1 + n_lang))
        (self.translate, self.transcribe, self.sot_lm, self.sot_prev, self.no_speech, self.no_timestamps,
         self.timestamp_begin) = range(self.sot + 1 + n_lang, self.sot + 8 + n_lang)

        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if not multilingual:
            # English-only (monolingual) models are never prompted with language or task tokens.
            language = task = None
        elif language is not None or task is not None:
            # As in Whisper, a task without a language keeps the first language ("en") as the placeholder
            # that language detection overwrites; a language without a task means transcription.
            language = normalize_language(language, self.all_language_codes) or self.all_language_codes[0]
            task = task or "transcribe"
        self.language: str | None = language
        self.task: str | None = task

        self.sot_sequence: tuple[int, ...] = self.start_sequence(language, task) if language else (self.sot,)
        self.sot_sequence_including_notimestamps: tuple[int, ...] = (*self.sot_sequence, self.no_timestamps)

    def start_sequence(self, language: str, task: str = "transcribe") -> tuple[int, ...]:
        """<|startoftranscript|>, then <|language|> <|task|> in a multilingual vocabulary: what a
        transcript in `language` (a code this vocabulary has) starts with."""
        if not self.is_multilingual:
            return (self.sot,)
        return (self.sot, self.to_language_token(language), self.translate if task == "translate" else self.transcribe)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def decode_with_timestamps(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def _symbol_token(self, text: str, first_of_many: bool) -> int | None:
        """The token of `text` if it is a single token (or, with first_of_many, the first of several)."""
        raise NotImplementedError

    @property
    def language_token(self) -> int:
        """The token of the configured language."""
        if self.language is None:
            raise ValueError("this tokenizer has no language configured")
        return self.to_language_token(self.language)

    def to_language_token(self, code: str) -> int:
        """The <|code|> token id; KeyError when this vocabulary has no such language."""
        token = self.special_tokens.get(f"<|{code}|>")
        if token is None or token not in self.all_language_tokens:
            raise KeyError(f"language {code!r} is not in this tokenizer")
        return token

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Sorted ids of symbol tokens to suppress while sampling (speaker tags, music notes, brackets)."""
        found = {self._symbol_token(text, first_of_many=True) for text in WORD_INITIAL_SUPPRESSED}
        for symbol in SUPPRESSED_SYMBOLS + MUSIC_SYMBOLS:
            for text in (symbol, " " + symbol):
                found.add(self._symbol_token(text, first_of_many=symbol in MUSIC_SYMBOLS))
        found.discard(None)
        return tuple(sorted(found))

    def split_to_word_tokens(self, ids: Sequence[int],
                             language: str | None = None) -> tuple[list[str], list[list[int]]]:
        """Group `ids` into words (for word-level timestamps): the words' texts and their token ids.
        Text in `language` (default the tokenizer's own) without spaces between words is split by
        character."""
        if (language or self.language) in NO_SPACE_LANGUAGES:
            return self._split_on_characters(ids)
        words: list[str] = []
        word_ids: list[list[int]] = []
        for piece, piece_ids in zip(*self._split_on_characters(ids)):
            # A piece starts a new word when it is special, begins with a space or is punctuation.
            starts_word = piece_ids[0] >= self.eot or piece.startswith(" ") or piece.strip() in string.punctuation
            if starts_word or not words:
                words.append(piece)
                word_ids.append(piece_ids)
            else:
                words[-1] += piece
                word_ids[-1].extend(piece_ids)
        return words, word_ids

    def _split_on_characters(self, ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Cut `ids` wherever the tokens so far decode to whole unicode characters."""
        full = self.decode_with_timestamps(ids)
        pieces: list[str] = []
        piece_ids: list[list[int]] = []
        pending: list[int] = []
        offset = 0
        for token in ids:
            pending.append(token)
            text = self.decode_with_timestamps(pending)
            bad = text.find("\ufffd")
            # U+FFFD here means a character cut between tokens, unless the full text has one there too
            # (or ends before it: broken bytes at the very end are kept as a piece, not dropped).
            if bad < 0 or offset + bad >= len(full) or full[offset + bad] == "\ufffd":
                pieces.append(text)
                piece_ids.append(pending)
                offset += len(text)
                pending = []
        return pieces, piece_ids
