"""Lenient scoring, opt-in (`scoring="lenient"` in metrics.error_rates): our own normaliser, kinder
than openai-whisper's to the ways one utterance can be written, and compounds joined before counting.

Both sides of a comparison go through the same normaliser, so what matters is that equivalent
spellings ("Press 1." / "press one") end up identical, not that the output reads nicely.

Compounds are scored as one word however they are written: when consecutive words on one side
("mail box", "re record" from "re-record", "m i s d n") spell a word of the other side ("mailbox",
"rerecord", "misdn"), they are joined before scoring. English writes compounds open, hyphenated
or closed without a rule, and the speech is the same. Three kinds of run join:
- letters ("mail box" = "mailbox");
- single digits against a digit string ("5 0 0", Whisper's "5-0-0", = "500"): a number written in
  digits does not say how it was read, and extensions and PINs are read digit by digit (the
  price: "one two" against "twelve" also matches once the normaliser has written both in digits);
- a code of letters and digits ("h 323" from "H.323" = "h323", "mp 3" = "mp3").
Other runs do not: "50 0" against "500" stays a substitution and an insertion.

These figures are lower than the field's and not comparable with published ones; the project's
headline figures use the standard scoring (whisper_scratch.normalizers).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Callable

_BRACKETED = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
# Letters that NFKD does not split into base + mark, for remove_diacritics.
_UNSPLIT_LATIN = str.maketrans({"ł": "l", "ø": "o", "đ": "d", "ħ": "h", "ß": "ss", "æ": "ae", "œ": "oe"})


class LenientTextNormalizer:
    """Lowercase, drop bracketed asides, punctuation and symbols; keep letters of every script.

    Combining marks stay by default: they are letters in Devanagari (matras, virama) and carry
    meaning in Czech (ř, ů). `remove_diacritics=True` strips marks from Latin letters only.
    A period or comma between digits stays (3.5, 1,000); everything else in Unicode categories
    P and S, apart from `keep_symbols`, becomes a space. Invisible format characters (ZWJ, ZWNJ,
    soft hyphen) are deleted. With `language` "az"/"tr"/"crh", "I" lowercases to dotless "ı".
    """

    def __init__(self, remove_diacritics: bool = False, keep_apostrophes: bool = False,
                 language: str | None = None, keep_symbols: str = ""):
        self.remove_diacritics = remove_diacritics
        self.keep_apostrophes = keep_apostrophes
        self.keep_symbols = keep_symbols
        # Turkic dotted/dotless i: "I" lowercases to "ı" there, and "İ" to plain "i" everywhere.
        self.turkic = language in ("az", "tr", "crh")

    def __call__(self, text: str) -> str:
        return " ".join(self.clean(self.prepare(text)).split())

    def prepare(self, text: str) -> str:
        """NFKC, curly apostrophes made straight, lowercase."""
        text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).replace("İ", "i")
        return (text.replace("I", "ı") if self.turkic else text).lower()

    def clean(self, text: str) -> str:
        """Drop bracketed asides, punctuation and symbols from prepared text."""
        text = _BRACKETED.sub(" ", text)
        if self.remove_diacritics:
            text = _strip_latin_marks(text)
        return "".join(self._keep(text, i) for i in range(len(text)))

    def _keep(self, text: str, i: int) -> str:
        ch = text[i]
        cat = unicodedata.category(ch)
        if cat[0] in "LNM" or ch in self.keep_symbols:
            return ch
        if cat == "Cf":
            return ""
        between = 0 < i < len(text) - 1
        if ch in ".," and between and text[i - 1].isdigit() and text[i + 1].isdigit():
            return ch
        if ch == "'" and self.keep_apostrophes and between and text[i - 1].isalpha() and text[i + 1].isalpha():
            return ch
        return " "


def _strip_latin_marks(text: str) -> str:
    out = []
    for ch in unicodedata.normalize("NFKD", text.translate(_UNSPLIT_LATIN)):
        # A mark on a Latin letter is an accent; elsewhere (Devanagari, Cyrillic й) it is a letter.
        if unicodedata.category(ch).startswith("M") and out and "LATIN" in unicodedata.name(out[-1], ""):
            continue
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out))


_UNITS = {w: n for n, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve "
                                     "thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * n for n, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"hundred": 100, "thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_IRREGULAR_ORDINALS = {"first": "one", "second": "two", "third": "three", "fifth": "five",
                       "eighth": "eight", "ninth": "nine", "twelfth": "twelve"}
_CURRENCY_WORDS = {"dollar": "$", "dollars": "$", "euro": "€", "euros": "€", "pound": "£", "pounds": "£"}
_CURRENCY_SYMBOLS = "$€£¢"
_FILLERS = {"uh", "um", "uhm", "er", "erm", "hmm", "hm", "mm", "mmm", "mhm"}
_WORDS = {  # titles, spoken variants and British spellings -> one American form
    "mr": "mister", "mrs": "missus", "dr": "doctor", "okay": "ok", "alright": "all right", "thru": "through",
    "colour": "color", "favour": "favor", "favourite": "favorite", "flavour": "flavor", "honour": "honor",
    "humour": "humor", "labour": "labor", "neighbour": "neighbor", "behaviour": "behavior", "harbour": "harbor",
    "rumour": "rumor", "armour": "armor", "vapour": "vapor", "centre": "center", "theatre": "theater",
    "metre": "meter", "litre": "liter", "fibre": "fiber", "organise": "organize", "organised": "organized",
    "organisation": "organization", "realise": "realize", "realised": "realized", "recognise": "recognize",
    "recognised": "recognized", "apologise": "apologize", "analyse": "analyze", "catalogue": "catalog",
    "analogue": "analog", "defence": "defense", "offence": "offense", "licence": "license", "grey": "gray",
    "travelled": "traveled", "travelling": "traveling", "cancelled": "canceled", "cancelling": "canceling",
    "modelling": "modeling", "labelled": "labeled", "jewellery": "jewelry", "programme": "program",
    "cheque": "check", "tyre": "tire", "aluminium": "aluminum", "aeroplane": "airplane", "mum": "mom",
    "pyjamas": "pajamas", "sceptical": "skeptical", "enquiry": "inquiry", "fulfil": "fulfill",
    "manoeuvre": "maneuver", "plough": "plow", "storey": "story",
}
# A symbol standing alone as a word is a word said; "*" and "#" as on a telephone keypad (US English).
_SPOKEN_SYMBOLS = {"&": "and", "+": "plus", "=": "equals", "@": "at", "*": "star", "#": "pound"}
_LONE_SYMBOL = re.compile(r"(?<!\S)([&+=@*#])(?!\S)")
_DOTTED_ACRONYM = re.compile(r"\b(?:[a-z]\.){2,}")  # "a.m.", "u.s.a." -> "am", "usa"
_CONTRACTIONS = [  # order matters: the irregular forms before the generic n't
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "cannot"),
    (r"\bshan't\b", "shall not"), (r"\blet's\b", "let us"), (r"n't\b", " not"), (r"'re\b", " are"),
    (r"'ll\b", " will"), (r"'ve\b", " have"), (r"'m\b", " am"), (r"'d\b", " would"),
    (r"\b(it|that|there|here|what|where|who|how|he|she)'s\b", r"\1 is"),
    (r"(\w)'s\b", r"\1s"),  # any other 's is a possessive: "party's" -> "partys"
]


def _ordinal_base(word: str) -> str | None:
    """'twentieth' -> 'twenty', 'fourth' -> 'four'; None when not a spelled ordinal."""
    if word in _IRREGULAR_ORDINALS:
        return _IRREGULAR_ORDINALS[word]
    if word.endswith("ieth") and word[:-4] + "y" in _TENS:
        return word[:-4] + "y"
    if word.endswith("th") and (word[:-2] in _UNITS or word[:-2] in _SCALES):
        return word[:-2]
    return None


def _classify(word: str) -> tuple[str, int] | None:
    if word in _UNITS:
        n = _UNITS[word]
        return ("unit" if n < 10 else "teen"), n
    if word in _TENS:
        return "ten", _TENS[word]
    if word in _SCALES:
        return ("hundred" if word == "hundred" else "scale"), _SCALES[word]
    if word.isascii() and word.isdigit() and (word == "0" or word[0] != "0"):  # keep "007" as written
        return "digits", int(word)
    return None


def _read_number(words: list[str], i: int) -> tuple[str | None, int, bool]:
    """Read the spoken number starting at words[i]: (digits, index after it, is_ordinal).

    Values add up as spoken ("one hundred and five" = 105, "two thousand twenty" = 2020); two
    adjacent two-digit numbers form a year ("nineteen ninety nine" = 1999); otherwise a number
    that cannot extend the current one ends it, so "one two three" reads as three numbers.
    """
    if i < len(words) and re.fullmatch(r"\d+\.\d+", words[i]):
        return words[i], i + 1, False  # a written decimal such as "3.5"
    total, current, last, smallest_scale, year, j = 0, 0, None, 10**15, False, i
    while j < len(words):
        base = _ordinal_base(words[j])
        if words[j] == "second" and last not in ("ten", "hundred", "scale"):
            break  # a lone "second" is usually the unit of time
        kind_value = _classify(base or words[j])
        if kind_value is None:
            following = _classify(_ordinal_base(words[j + 1]) or words[j + 1]) if j + 1 < len(words) else None
            if words[j] == "and" and last in ("hundred", "scale") and following and following[0] in ("unit", "teen", "ten"):
                j += 1
                continue
            break
        kind, value = kind_value
        two_digit = total == 0 and 10 <= current < 100 and last in ("teen", "ten") and not year
        if kind == "digits" and last is None:
            current = value
        elif kind in ("unit", "teen", "ten") and (last in (None, "hundred", "scale") or (kind, last) == ("unit", "ten")):
            current += value
        elif kind in ("teen", "ten") and two_digit:
            current, year = current * 100 + value, True
        elif kind == "hundred" and not year and (last is None or (last in ("unit", "teen", "ten", "digits") and current < 100)):
            current = (current or 1) * 100
        elif kind == "scale" and not year and value < smallest_scale and last != "scale":
            total, current, smallest_scale = total + (current or 1) * value, 0, value
        else:
            break
        last, j = kind, j + 1
        if base:
            return str(total + current), j, True
    if last is None:
        return None, i, False
    digits = str(total + current)
    if j + 1 < len(words) and words[j] == "point" and _UNITS.get(words[j + 1], 10) < 10:
        decimals = []
        j += 1
        while j < len(words) and _UNITS.get(words[j], 10) < 10:
            decimals.append(str(_UNITS[words[j]]))
            j += 1
        digits += "." + "".join(decimals)
    return digits, j, False


def _ordinal_suffix(n: int) -> str:
    if n % 100 in (11, 12, 13):
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _numbers(words: list[str]) -> list[str]:
    """Replace spoken numbers with digits and attach %, currency and ordinal suffixes."""
    out, i = [], 0
    while i < len(words):
        symbol = words[i] if words[i] in _CURRENCY_SYMBOLS else ""
        digits, j, ordinal = _read_number(words, i + bool(symbol))
        if digits is None:
            if words[i] not in _CURRENCY_SYMBOLS + "%":  # a symbol with no number is dropped
                out.append(words[i])
            i += 1
            continue
        following = words[j] if j < len(words) else ""
        if ordinal:
            digits += _ordinal_suffix(int(digits))
        elif following in ("%", "percent") or words[j:j + 2] == ["per", "cent"]:
            digits, j = digits + "%", j + (2 if following == "per" else 1)
        elif not symbol and following in _CURRENCY_WORDS:
            symbol, j = _CURRENCY_WORDS[following], j + 1
            j0 = j + (j < len(words) and words[j] == "and")
            cents, k, cents_ordinal = _read_number(words, j0)
            if symbol == "$" and cents and cents.isdigit() and int(cents) < 100 and not cents_ordinal \
                    and k < len(words) and words[k] in ("cent", "cents"):
                digits, j = f"{digits}.{int(cents):02d}", k + 1
        elif not symbol and following in ("cent", "cents"):
            symbol, j = "¢", j + 1
        out.append(symbol + digits)
        i = j
    return out


def _american(word: str) -> str:
    if word.endswith("s") and word not in _WORDS and word[:-1] in _WORDS:
        return _WORDS[word[:-1]] + "s"  # plurals: colours -> colors
    return _WORDS.get(word, word)


def _lone_one(words: list[str]) -> list[str]:
    """Write a "1" with no number beside it as "one": "press 1" and "press one" then agree, and
    "one" as a pronoun ("this one") is left alone. "1 2 3" keeps its digits."""
    def is_number(k: int) -> bool:
        return 0 <= k < len(words) and any(ch.isdigit() for ch in words[k])
    return ["one" if w == "1" and not (is_number(k - 1) or is_number(k + 1)) else w for k, w in enumerate(words)]


class LenientEnglishNormalizer(LenientTextNormalizer):
    """Basic normalisation plus English standardisation: contractions expanded, spoken numbers as
    digits, money and percentages as symbols, British spellings as American, fillers dropped,
    dotted acronyms closed up ("a.m." = "am") and lone symbols spoken ("press *" = "press star")."""

    def __init__(self):
        super().__init__(language="en", keep_symbols=_CURRENCY_SYMBOLS + "%")

    def __call__(self, text: str) -> str:
        text = self.prepare(text)
        text = _LONE_SYMBOL.sub(lambda m: _SPOKEN_SYMBOLS[m.group(1)], text)
        text = _DOTTED_ACRONYM.sub(lambda m: m.group(0).replace(".", "") + " ", text)
        for pattern, replacement in _CONTRACTIONS:
            text = re.sub(pattern, replacement, text)
        text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separators: 1,000 -> 1000
        text = re.sub(r"([$€£¢%])", r" \1 ", self.clean(text))
        words = _numbers(" ".join(_american(w) for w in text.split() if w not in _FILLERS).split())
        return " ".join(_lone_one(words))


def lenient_normalizer(language: str | None) -> Callable[[str], str]:
    """The lenient English normaliser for "en" (or "english"), the lenient basic one otherwise."""
    if language and language.lower() in ("en", "english"):
        return LenientEnglishNormalizer()
    return LenientTextNormalizer(language=language)


MAX_COMPOUND_PARTS = 10  # longest run of words joined into one (a phone number read digit by digit)


def _joinable(parts: list[str], joined: str) -> bool:
    if joined.isalpha():
        return True
    if joined.isdigit():
        return all(len(part) == 1 for part in parts)
    return joined.isalnum() and any(ch.isdigit() for ch in joined)


def _join_against(words: list[str], other: set[str]) -> list[str]:
    out, i = [], 0
    while i < len(words):
        for n in range(min(MAX_COMPOUND_PARTS, len(words) - i), 1, -1):
            joined = "".join(words[i:i + n])
            if joined in other and _joinable(words[i:i + n], joined):
                out.append(joined)
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return out


def join_compounds(reference: list[str], hypothesis: list[str]) -> tuple[str, str]:
    """Both word lists as text, with runs of words that spell one word of the other side joined
    (see the module docstring): (["mail", "box"], ["mailbox"]) -> ("mailbox", "mailbox")."""
    ref = _join_against(reference, set(hypothesis))
    return " ".join(ref), " ".join(_join_against(hypothesis, set(ref)))
