"""Standard scoring: our normalisers behave as openai-whisper's (whisper.normalizers), then plain
jiwer. Unit tests pin the tricky cases; `shared` tests compare with openai-whisper itself on every
reference transcript in ../shared/data, on our model's hypotheses and on random word salads."""
import csv
import json
import random
import unicodedata
from pathlib import Path

import pytest

from whisper_scratch.evaluation.metrics import error_rates, error_reduction_interval, utterance_word_errors
from whisper_scratch.evaluation.normalizers import (
    BasicTextNormalizer,
    EnglishNumberNormalizer,
    EnglishTextNormalizer,
    get_normalizer,
)

english = EnglishTextNormalizer()
basic = BasicTextNormalizer()

# Input -> openai-whisper's EnglishTextNormalizer output (checked against it in the shared test below).
ENGLISH_CASES = [
    ("Mr. Smith's favourite colour is grey.", "mister smith is favorite color is gray"),  # 's is always "is"
    ("I can't, won't, don't.", "i can not will not do not"),
    ("He'd been there; she's got it.", "he had been there she has got it"),
    ("I'm gonna go, y'all", "i am going to go you all"),
    ("St. John and Dr. Who", "saint john and doctor who"),
    ("It's 5% off!", "it is 5% off"),
    ("ten per cent, ten percent", "10% 10%"),
    ("That costs $12.", "that costs $12"),
    ("five dollars and fifty cents", "$5.50"),
    ("$2 and 7 cents", "$2.07"),
    ("fifty cents", "¢50"),
    ("$0.07", "¢7"),
    ("$ alone 5 %", " alone 5 "),  # a symbol without its number goes; the spaces stay
    ("two and a half million", "2500000"),
    ("one oh one", "101"),
    ("one two three", "123"),  # digits said one by one are joined
    ("double five triple zero", "55000"),
    ("nineteen ninety nine", "1999"),
    ("two thousand and five", "2005"),
    ("one hundred and twenty three", "123"),
    ("minus five and plus", "-5 and plus"),
    ("the 1960s and the twenties", "the 1960s and the 20s"),
    ("Um, the 21st of May.", "the 21st of may"),
    ("twenty-first", "21st"),
    ("ninth and nineth", "ninth and 9th"),  # openai-whisper's table spells it "nineth"
    ("the fifth hundredth", "the 5th 100th"),
    ("three point five", "3.5"),
    ("1.5", "one.5"),  # a lone 1 is spelled out, even before a decimal point
    ("version 2.0 and 3.50", "version 2 and 3.50"),
    ("1,000,000 people", "1000000 people"),
    ("1,2,3", "12 3"),
    ("Press 1 or press one.", "press one or press one"),
    ("the ones and 1s", "the ones and ones"),
    ("a1b2 4th", "a one b 2 4th"),
    ("H.323 and mp3", "h.323 and mp 3"),
    ("Press * to pause, # to exit.", "press to pause to exit"),
    ("Call at 5 P.M. or 9 a.m.", "call at 5 p m or 9 a m"),
    ("wait... what?", "wait what"),
    ("wait...", "wait ."),  # ".." is one match of "a period not before a digit"; the last one stays
    ("mm hmm uh huh", "huh"),
    ("[music] Hello (laughs) <unk> there", "hello there"),
    ("café, naïve, Œuvre, Straße", "cafe naive oeuvre strasse"),
    ("colours neighbour's theatre", "colors neighbor is theater"),
]
# Input -> (BasicTextNormalizer(), BasicTextNormalizer(remove_diacritics=True)), as openai-whisper's.
BASIC_CASES = [
    ("Příliš žluťoučký kůň úpěl ďábelské ódy!", ("příliš žluťoučký kůň úpěl ďábelské ódy ",
                                                 "prilis zlutoucky kun upel dabelske ody ")),
    ("Stojí to 3,5 Kč (asi).", ("stojí to 3 5 kč ", "stoji to 3 5 kc ")),
    ("[hudba] Ahoj <unk>, světe…", (" ahoj světe ", " ahoj svete ")),
    ("Ｆｕｌｌ　ｗｉｄｔｈ ﬁne", ("full width fine", "full width fine")),
    ("l'homme d’état", ("l homme d état", "l homme d etat")),
]


@pytest.mark.parametrize("text, expected", ENGLISH_CASES)
def test_english_tricky_cases(text, expected):
    assert english(text) == expected


@pytest.mark.parametrize("text, expected", BASIC_CASES)
def test_basic_cases(text, expected):
    assert (basic(text), BasicTextNormalizer(remove_diacritics=True)(text)) == expected


def test_basic_keeps_combining_marks():
    """The one deliberate difference from openai-whisper: its BasicTextNormalizer makes every
    combining mark a space, which cuts Hindi words apart at each vowel sign ("नमस त द न य ")."""
    assert basic("नमस्ते, दुनिया!") == "नमस्ते दुनिया "
    assert basic("A\u0301 la carte") == "á la carte"  # NFKC composes what it can first
    assert BasicTextNormalizer(remove_diacritics=True)("नमस्ते") == "नमसत"  # as openai-whisper's: signs dropped


def test_get_normalizer_and_scoring():
    assert isinstance(get_normalizer("en"), EnglishTextNormalizer)
    assert isinstance(get_normalizer("English"), EnglishTextNormalizer)
    assert type(get_normalizer("cs")) is BasicTextNormalizer and type(get_normalizer(None)) is BasicTextNormalizer
    refs, hyps = ["Use the mail box.", "Press one."], ["use the mailbox", "press 1"]
    # Standard: "mail box" vs "mailbox" is a substitution and a deletion (2 of 6 words), and one
    # deleted space of 25 characters ("use the mail box", "press one").
    assert error_rates(refs, hyps, "en") == {"wer": pytest.approx(2 / 6), "cer": pytest.approx(1 / 25)}
    assert error_rates(refs, hyps, "en", "lenient") == {"wer": 0.0, "cer": 0.0}
    # The Turkic dotless i is lenient scoring's; the standard one lowercases as Python does.
    assert error_rates(["BAKI"], ["bakı"], "az")["wer"] == 1.0
    assert error_rates(["BAKI"], ["bakı"], "az", "lenient")["wer"] == 0.0
    with pytest.raises(ValueError, match="lenient"):
        error_rates(refs, hyps, "en", "strict")


def test_empty_normalised_reference_counts_insertions():
    # "[noise]" normalises to "": the hypothesis's 2 words are insertions over 3 reference words.
    rates = error_rates(["one two three", "[noise]"], ["one two three", "hello there"], "cs")
    assert rates == {"wer": pytest.approx(2 / 3), "cer": pytest.approx(11 / 13)}


def test_utterance_word_errors_are_each_pairs_own_and_add_up_to_the_wer():
    import jiwer

    rng = random.Random(0)
    words = "ano ne dobry den pes kocka".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(1, 8))) for _ in range(40)] + ["[noise]"]
    hyps = [" ".join(rng.choices(words, k=rng.randint(0, 9))) for _ in range(40)] + ["hello there"]
    counts = utterance_word_errors(refs, hyps, "cs")
    for (errors, n), r, h in zip(counts[:-1], refs, hyps):
        one = jiwer.process_words(r, h) if h else None  # each pair aligned alone, as no corpus call does
        assert n == len(r.split()) and errors == (one.substitutions + one.deletions + one.insertions if one else n)
    assert counts[-1] == (2, 0)  # the empty reference: its hypothesis's words are insertions
    assert sum(e for e, _ in counts) / sum(n for _, n in counts) == pytest.approx(error_rates(refs, hyps, "cs")["wer"])


def test_error_reduction_interval_by_hand():
    # Two utterances; a makes 2 errors on each, b 0 and 2. Resampling two of them: both the first
    # (1/4 of draws: b 0 of a's 4, 100 % fewer), both the second (1/4: 0 % fewer), one of each
    # (1/2: 50 % fewer). So 50 % fewer in all, and the 95 % interval runs from 0 % to 100 %.
    result = error_reduction_interval([2, 2], [0, 2], resamples=4000)
    assert result == {"reduction": 0.5, "low": 0.0, "high": 1.0}
    same = error_reduction_interval([3, 1, 0, 2], [3, 1, 0, 2])
    assert same == {"reduction": 0.0, "low": 0.0, "high": 0.0}
    assert error_reduction_interval([3, 1, 0, 2], [0, 0, 0, 0]) == {"reduction": 1.0, "low": 1.0, "high": 1.0}
    rng = random.Random(1)
    a = [rng.randint(0, 6) for _ in range(400)]
    b = [max(0, e - rng.randint(0, 2)) for e in a]
    wide, narrow = error_reduction_interval(a[:40], b[:40]), error_reduction_interval(a, b)
    assert narrow["low"] < narrow["reduction"] < narrow["high"]
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]
    with pytest.raises(ValueError, match="no errors"):
        error_reduction_interval([0, 0], [1, 0])
    with pytest.raises(ValueError, match="one error count"):
        error_reduction_interval([1, 2], [1])


# ---------------------------------------------------------------- against openai-whisper (shared)

JFK = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
HYPOTHESES_CS = Path(__file__).parent / "data" / "hypotheses_cs_base.json"


def _tsv_column(path: Path, column: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [row[column] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def _shared_references(shared_data: Path) -> tuple[list[str], list[str]]:
    """(English, Czech) reference transcripts: asterisk-en, fillets-cv/cs (every tsv), samples."""
    manifest = (shared_data / "asterisk-en" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    english_texts = [json.loads(line)["text"] for line in manifest if line.strip()]
    assert len(english_texts) == 563
    folder = shared_data / "fillets-cv" / "cs"
    english_texts += _tsv_column(folder / "english_reference.tsv", "english") + [JFK]  # samples/jfk.flac
    czech = [text for tsv in sorted(folder.glob("*.tsv")) if tsv.name != "english_reference.tsv"
             for text in _tsv_column(tsv, "sentence")]
    assert len(czech) == 156 + 267 + 1279 + 1702
    return english_texts, czech


def _has_marks(text: str) -> bool:
    return any(unicodedata.category(ch)[0] == "M" for ch in unicodedata.normalize("NFKC", text.lower()))


def assert_same_as_openai_whisper(texts: list[str], language: str) -> None:
    """Our normaliser for `language` gives exactly openai-whisper's output on every text (texts
    with combining marks are refused: there the basic normalisers differ on purpose)."""
    from whisper.normalizers import BasicTextNormalizer as TheirBasic
    from whisper.normalizers import EnglishTextNormalizer as TheirEnglish

    theirs = TheirEnglish() if language == "en" else TheirBasic()
    ours = get_normalizer(language)
    if language != "en":
        assert not any(_has_marks(t) for t in texts), "combining marks: the basic normalisers differ there"
    differences = [(t, ours(t), theirs(t)) for t in texts if ours(t) != theirs(t)]
    assert not differences, f"{len(differences)} of {len(texts)} differ, e.g. {differences[:5]}"


@pytest.mark.shared
def test_tricky_cases_are_openai_whispers():
    from whisper.normalizers import BasicTextNormalizer as TheirBasic
    from whisper.normalizers import EnglishTextNormalizer as TheirEnglish

    theirs = TheirEnglish()
    assert [(t, theirs(t)) for t, _ in ENGLISH_CASES] == ENGLISH_CASES
    assert [(t, (TheirBasic()(t), TheirBasic(remove_diacritics=True)(t))) for t, _ in BASIC_CASES] == BASIC_CASES


@pytest.mark.shared
def test_every_shared_reference_normalises_as_openai_whisper(shared_data):
    english_texts, czech = _shared_references(shared_data)
    assert_same_as_openai_whisper(english_texts, "en")
    assert_same_as_openai_whisper(czech, "cs")
    assert_same_as_openai_whisper(czech, "en")  # the English rules on foreign text too (accents stripped)


@pytest.mark.shared
def test_czech_hypotheses_normalise_as_openai_whisper(shared_data):
    """Our model's Czech output (stock base, see tests/data/LICENSES.md for how it was made)."""
    rows = json.loads(HYPOTHESES_CS.read_text(encoding="utf-8"))
    listed = _tsv_column(shared_data / "fillets-cv" / "cs" / "dev.tsv", "path")
    assert [r["audio"] for r in rows] == listed[:48]
    hypotheses = [r["hypothesis"] for r in rows]
    assert_same_as_openai_whisper(hypotheses, "cs")
    assert_same_as_openai_whisper(hypotheses, "en")


def _word_salad(rng: random.Random, vocabulary: list[str]) -> str:
    return rng.choice([" ", "", "  "]).join(rng.choice(vocabulary) for _ in range(rng.randint(0, 8)))


@pytest.mark.shared
def test_random_number_talk_normalises_as_openai_whisper():
    """Seeded word salads of number words, numerals, symbols, contractions and punctuation: every
    branch of the number reader, in orders no transcript would dare."""
    from whisper.normalizers import EnglishTextNormalizer as TheirEnglish
    from whisper.normalizers.english import EnglishNumberNormalizer as TheirNumbers

    vocabulary = sorted(EnglishNumberNormalizer().table) + [
        "cat", "st", "s", "th", "x1", "1x", "0", "007", "1", "12", "3.5", "3.", ".5", "1.2.3", "$5", "-3", "+2",
        "£0", "€12", "¢7", "$", "%", "5%", "$0.5", "1,000", "1,2,3", "...", ".", "and a half", "Mr.", "won't",
        "it's", "he'd been", "'s", "[noise]", "(laughs)", "uh", "colour", "1960s", "21st", "ℌ", "Œuvre", "١٢"]
    rng = random.Random(0)
    salads = [_word_salad(rng, vocabulary) for _ in range(4000)]
    ours, theirs, their_english = EnglishNumberNormalizer(), TheirNumbers(), TheirEnglish()
    assert [ours(s.lower()) for s in salads] == [theirs(s.lower()) for s in salads]
    assert [english(s) for s in salads] == [their_english(s) for s in salads]
