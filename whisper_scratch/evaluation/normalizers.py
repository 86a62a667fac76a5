"""Text normalisation before WER/CER, by the rules of openai-whisper's normalisers.

The Whisper paper, the Open ASR leaderboard and most fine-tuning reports score transcripts with
openai-whisper's `EnglishTextNormalizer` (English) or `BasicTextNormalizer` (other languages) and
then plain jiwer, so these classes reproduce those rules exactly, quirks included ("1.5" becomes
"one.5", "..." leaves a lone "."): a figure is comparable only when the scoring is the same.

One deliberate difference: `BasicTextNormalizer` keeps combining marks (Unicode category M).
openai-whisper's (version 20250625, which has no option for it) turns each one into a space, which
splits Hindi and other Indic words at every vowel sign ("नमस्ते" -> "नमस ते"). Scripts that NFKC
composes (Czech ř, ů) are not affected.

The British -> American spelling table is openai-whisper's `english.json` (MIT), shipped as data.
"""
from __future__ import annotations

import json
import re
import unicodedata
from fractions import Fraction
from pathlib import Path
from typing import Callable

_SPELLINGS = Path(__file__).parent / "assets" / "english.json"

_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]")  # <...> or [...], either closing bracket
_PARENTHESISED = re.compile(r"\([^)]+\)")
_WHITESPACE = re.compile(r"\s+")
# Letters that NFKD leaves whole; removing diacritics spells them in plain Latin letters.
_LETTERS_WITHOUT_MARKS = {"œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "ẞ": "SS",
                          "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "th", "ł": "l", "Ł": "L"}


def _drop_asides(text: str) -> str:
    """Remove <...>, [...] and then (...) spans (speaker tags, sound events)."""
    return _PARENTHESISED.sub("", _BRACKETED.sub("", text))


def remove_symbols_and_diacritics(text: str, keep: str = "") -> str:
    """NFKD; nonspacing marks (Mn) removed, other marks, symbols and punctuation made spaces,
    `keep` characters kept, and letters without a decomposition (ø, ß, ł) spelled out."""
    def one(ch: str) -> str:
        if ch in keep:
            return ch
        if ch in _LETTERS_WITHOUT_MARKS:
            return _LETTERS_WITHOUT_MARKS[ch]
        category = unicodedata.category(ch)
        if category == "Mn":
            return ""
        return " " if category[0] in "MSP" else ch
    return "".join(map(one, unicodedata.normalize("NFKD", text)))


def remove_symbols(text: str) -> str:
    """NFKC; symbols and punctuation made spaces, letters and combining marks kept."""
    return "".join(" " if unicodedata.category(ch)[0] in "SP" else ch for ch in unicodedata.normalize("NFKC", text))


class BasicTextNormalizer:
    """Lowercase, drop bracketed asides, symbols and punctuation, collapse whitespace (any language).

    `remove_diacritics=True` also strips accents (NFKD, as openai-whisper does: every nonspacing
    mark goes, so it is for Latin scripts). openai-whisper's `split_letters` is not offered: CER
    already scores languages written without spaces.
    """

    def __init__(self, remove_diacritics: bool = False):
        self.remove_diacritics = remove_diacritics

    def __call__(self, text: str) -> str:
        text = _drop_asides(text.lower())
        text = remove_symbols_and_diacritics(text) if self.remove_diacritics else remove_symbols(text)
        return _WHITESPACE.sub(" ", text.lower())


_UNIT_NAMES = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
               "sixteen seventeen eighteen nineteen").split()
_TEN_NAMES = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALE_NAMES = ("hundred thousand million billion trillion quadrillion quintillion sextillion septillion "
                "octillion nonillion decillion").split()
_SIGNS = {"minus": "-", "negative": "-", "plus": "+", "positive": "+"}  # said before a number
_CURRENCIES = {"pound": "£", "pounds": "£", "euro": "€", "euros": "€", "dollar": "$", "dollars": "$",
               "cent": "¢", "cents": "¢"}  # said after it
_NUMERAL = re.compile(r"\d+(?:\.\d+)?")
_AND_A_HALF = re.compile(r"\band\s+a\s+half\b")
_LETTER_DIGIT = re.compile(r"(?<=[a-z])(?=[0-9])|(?<=[0-9])(?=[a-z])")
_DETACHED_SUFFIX = re.compile(r"(?<=[0-9])\s+(?=(?:st|nd|rd|th|s)\b)")  # "21 st" -> "21st"
_DOLLARS_AND_CENTS = re.compile(r"([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b")
_ZERO_DOLLARS = re.compile(r"[€£$]0.([0-9]{1,2})\b")
_LONE_ONE = re.compile(r"\b1(s?)\b")


def _fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text)
    except ValueError:
        return None


def _is_numeral(word: str | None) -> bool:
    return word is not None and _NUMERAL.fullmatch(word) is not None


class EnglishNumberNormalizer:
    """Spoken numbers to digits: "twenty one" -> "21", "one oh one" -> "101" (digits said one by
    one are joined), "two thousand and five" -> "2005", "fifth" -> "5th", "1960s" kept, "five
    dollars" -> "$5", "ten per cent" -> "10%", "two and a half" -> "2.5"; a lone "1" is written
    "one". The word table and the way values combine are openai-whisper's."""

    def __init__(self):
        # word -> (kind, value, suffix); kinds: zero, unit (1-19), ten, scale, sign, currency,
        # percent, per, and, repeat (double/triple), point. A suffix makes a word end its number.
        self.table: dict[str, tuple[str, int, str]] = {w: ("zero", 0, "") for w in ("o", "oh", "zero")}
        for n, name in enumerate(_UNIT_NAMES, 1):
            self.table[name] = ("unit", n, "")
            self.table["sixes" if name == "six" else name + "s"] = ("unit", n, "s")
        ordinals = {"zeroth": 0, "first": 1, "second": 2, "third": 3, "fifth": 5, "twelfth": 12}
        ordinals.update({name + ("h" if name.endswith("t") else "th"): n
                         for n, name in enumerate(_UNIT_NAMES, 1) if n not in (1, 2, 3, 5, 12)})
        self.table.update({name: ("unit", n, {1: "st", 2: "nd", 3: "rd"}.get(n, "th")) for name, n in ordinals.items()})
        for n, name in enumerate(_TEN_NAMES, 2):
            stem = name[:-1]  # "twenty" -> "twent"
            self.table.update({name: ("ten", 10 * n, ""), stem + "ies": ("ten", 10 * n, "s"),
                               stem + "ieth": ("ten", 10 * n, "th")})
        for k, name in enumerate(_SCALE_NAMES):
            value = 100 if k == 0 else 1000 ** k
            self.table.update({name: ("scale", value, ""), name + "s": ("scale", value, "s"),
                               name + "th": ("scale", value, "th")})
        self.table.update({w: ("sign", 0, "") for w in _SIGNS})
        self.table.update({w: ("currency", 0, "") for w in _CURRENCIES})
        self.table.update({"percent": ("percent", 0, ""), "per": ("per", 0, ""), "and": ("and", 0, ""),
                           "double": ("repeat", 2, ""), "triple": ("repeat", 3, ""), "point": ("point", 0, "")})
        # Words that may follow "point" (and end a number before "and a half").
        self.decimal_words = {w for w, (kind, _, suffix) in self.table.items() if kind in ("zero", "unit", "ten")
                              and not suffix}
        self.prefixes = set(_SIGNS.values()) | set(_CURRENCIES.values())

    def _is(self, word: str | None, kind: str) -> bool:
        """`word` is a plain (unsuffixed) number word of this kind."""
        entry = self.table.get(word)
        return entry is not None and entry[0] == kind and not entry[2]

    def __call__(self, text: str) -> str:
        text = self.preprocess(text)
        return self.postprocess(" ".join(self.process_words(text.split())))

    def preprocess(self, text: str) -> str:
        """"and a half" after a number -> "point five"; digits and letters split apart, except
        ordinal and plural endings ("21st", "1960s")."""
        parts = _AND_A_HALF.split(text)
        pieces = []
        for i, part in enumerate(parts):
            if not part.strip():
                continue  # openai-whisper drops an empty part together with the "and a half" after it
            pieces.append(part)
            if i < len(parts) - 1:
                last = part.split()[-1]
                half = last in self.decimal_words or self._is(last, "scale")
                pieces.append("point five" if half else "and a half")
        text = _LETTER_DIGIT.sub(" ", " ".join(pieces))
        return _DETACHED_SUFFIX.sub("", text)

    def postprocess(self, text: str) -> str:
        """"$2 and ¢7" -> "$2.07", "$0.07" -> "¢7", and a lone "1" or "1s" spelled out."""
        text = _DOLLARS_AND_CENTS.sub(lambda m: f"{m[1]}{m[2]}.{int(m[3]):02d}", text)
        text = _ZERO_DOLLARS.sub(lambda m: f"¢{int(m[1])}", text)
        return _LONE_ONE.sub(r"one\1", text)

    def process_words(self, words: list[str]) -> list[str]:
        """Read the words left to right, building one number at a time (see the class docstring)."""
        out: list[str] = []
        number: int | str | None = None  # an int while it is arithmetic, a string of digits once concatenated
        sign: str | None = None  # a currency or sign symbol for the number being built

        def emit(text: int | str) -> None:
            nonlocal number, sign
            out.append(f"{sign or ''}{text}")
            number = sign = None

        def flush() -> None:
            if number is not None:
                emit(number)

        skip = False
        for i, word in enumerate(words):
            if skip:
                skip = False
                continue
            prev = words[i - 1] if i else None
            following = words[i + 1] if i + 1 < len(words) else None
            bare = word[1:] if word[0] in self.prefixes else word
            kind, value, suffix = self.table.get(word, ("word", 0, ""))
            if _is_numeral(bare):
                if isinstance(number, str) and number.endswith("."):
                    number += word  # the digits after "point"
                    continue
                flush()
                if bare is not word:
                    sign = word[0]
                f = Fraction(bare)
                number = f.numerator if f.denominator == 1 else bare
            elif kind == "word":
                flush()
                emit(word)
            elif kind == "zero":
                number = f"{number or ''}0"
            elif kind in ("unit", "ten", "scale"):
                if number is None:
                    combined: int | str | None = value
                elif kind == "unit":
                    combined = self._add_unit(number, value, prev)
                elif kind == "ten":
                    combined = self._add_ten(number, value)
                else:
                    combined = self._scale(number, value)
                    if combined is None:  # "1.2.3 hundred": the digits stand alone
                        emit(number)
                        combined = value
                if suffix:
                    emit(f"{combined}{suffix}")
                else:
                    number = combined
            elif kind == "sign":
                flush()
                if following in self.table or _is_numeral(following):
                    sign = _SIGNS[word]
                else:
                    emit(word)
            elif kind == "currency":
                if number is None:
                    emit(word)
                else:
                    sign = _CURRENCIES[word]
                    emit(number)
            elif kind in ("percent", "per"):
                if number is None:
                    emit(word)
                elif kind == "percent" or following == "cent":
                    emit(f"{number}%")
                    skip = kind == "per"
                else:
                    emit(number)
                    emit(word)
            elif following not in self.table and not _is_numeral(following):
                flush()  # and/double/triple/point with no number after them are plain words
                emit(word)
            elif kind == "and":
                if not self._is(prev, "scale"):  # "hundred and five" reads on; "five and six" does not
                    flush()
                    emit(word)
            elif kind == "repeat":
                if self._is(following, "unit") or self._is(following, "zero"):
                    digit = self.table[following][1]
                    number = f"{number or ''}{str(digit) * value}"
                    skip = True
                else:
                    flush()
                    emit(word)
            elif following in self.decimal_words or _is_numeral(following):  # point
                number = f"{number or ''}."
        flush()
        return out

    def _add_unit(self, number: int | str, n: int, prev: str | None) -> int | str:
        """One to nineteen after `number`: added ("twenty one", "hundred five") or appended as
        digits ("one two" -> "12", "nineteen ninety" -> "1990")."""
        if isinstance(number, str) or self._is(prev, "unit"):
            if self._is(prev, "ten") and n < 10:
                return number[:-1] + str(n)  # "...20" then "one" -> "...21"
            return f"{number}{n}"
        place = 10 if n < 10 else 100
        return number + n if number % place == 0 else f"{number}{n}"

    @staticmethod
    def _add_ten(number: int | str, n: int) -> int | str:
        if isinstance(number, int) and number % 100 == 0:
            return number + n
        return f"{number}{n}"

    @staticmethod
    def _scale(number: int | str, n: int) -> int | None:
        """`number` times hundred/thousand/...; for an int only its last three digits are scaled
        ("two thousand three hundred" = 2000 + 3 * 100). None when digits cannot be scaled."""
        if isinstance(number, int):
            return number // 1000 * 1000 + number % 1000 * n
        f = _fraction(number)
        if f is None or (f * n).denominator != 1:
            return None
        return int(f * n)


class EnglishSpellingNormalizer:
    """British spellings to American ones, word by word (openai-whisper's table of 1,739 words)."""

    def __init__(self):
        self.mapping: dict[str, str] = json.loads(_SPELLINGS.read_text(encoding="utf-8"))

    def __call__(self, text: str) -> str:
        return " ".join(self.mapping.get(word, word) for word in text.split())


_FILLERS = re.compile(r"\b(?:hmm|mm|mhm|mmm|uh|um)\b")
_INFORMAL = {"won't": "will not", "can't": "can not", "let's": "let us", "ain't": "aint", "y'all": "you all",
             "wanna": "want to", "gotta": "got to", "gonna": "going to", "i'ma": "i am going to",
             "imma": "i am going to", "woulda": "would have", "coulda": "could have", "shoulda": "should have",
             "ma'am": "madam"}
_TITLES = {"mr": "mister", "mrs": "missus", "st": "saint", "dr": "doctor", "prof": "professor", "capt": "captain",
           "gov": "governor", "ald": "alderman", "gen": "general", "sen": "senator", "rep": "representative",
           "pres": "president", "rev": "reverend", "hon": "honorable", "asst": "assistant", "assoc": "associate",
           "lt": "lieutenant", "col": "colonel", "jr": "junior", "sr": "senior", "esq": "esquire"}
# Perfect tenses first ("'d been" is "had been", not "would been"), then the general endings.
_CONTRACTED = {"'d been": " had been", "'s been": " has been", "'d gone": " had gone", "'s gone": " has gone",
               "'d done": " had done", "'s got": " has got", "n't": " not", "'re": " are", "'s": " is",
               "'d": " would", "'ll": " will", "'t": " not", "'ve": " have", "'m": " am"}
_EXPANSIONS = ([(re.compile(rf"\b{re.escape(k)}\b"), v) for k, v in _INFORMAL.items()]
               + [(re.compile(rf"\b{k}\b"), v + " ") for k, v in _TITLES.items()]
               + [(re.compile(rf"{re.escape(k)}\b"), v) for k, v in _CONTRACTED.items()])
_DIGIT_COMMA = re.compile(r"(\d),(\d)")  # "1,000" -> "1000"; "1,2,3" -> "12,3" (matches do not overlap)
_WORD_PERIOD = re.compile(r"\.([^0-9]|$)")  # a period not before a digit; "..." leaves one "."
_NUMBER_SYMBOLS = ".%$¢€£"
_STRAY_PREFIX = re.compile(r"[.$¢€£]([^0-9])")
_STRAY_PERCENT = re.compile(r"([^0-9])%")


class EnglishTextNormalizer:
    """English: basic cleaning plus contractions and titles expanded ("won't" -> "will not", "mr"
    -> "mister"), fillers (uh, um, hmm) dropped, spoken numbers as digits, British spellings as
    American. Behaves as openai-whisper's class of the same name."""

    def __init__(self):
        self.standardize_numbers = EnglishNumberNormalizer()
        self.standardize_spellings = EnglishSpellingNormalizer()

    def __call__(self, text: str) -> str:
        text = _FILLERS.sub("", _drop_asides(text.lower()))
        text = re.sub(r"\s+'", "'", text)
        for pattern, replacement in _EXPANSIONS:
            text = pattern.sub(replacement, text)
        text = _WORD_PERIOD.sub(r" \1", _DIGIT_COMMA.sub(r"\1\2", text))
        text = remove_symbols_and_diacritics(text, keep=_NUMBER_SYMBOLS)
        text = self.standardize_spellings(self.standardize_numbers(text))
        # Currency signs and periods with no number after them, and % with none before, go.
        text = _STRAY_PERCENT.sub(r"\1 ", _STRAY_PREFIX.sub(r" \1", text))
        return _WHITESPACE.sub(" ", text)


def get_normalizer(language: str | None) -> Callable[[str], str]:
    """EnglishTextNormalizer for "en" (or "english"), BasicTextNormalizer for any other language."""
    if language and language.lower() in ("en", "english"):
        return EnglishTextNormalizer()
    return BasicTextNormalizer()
