"""Tests for lenient scoring (our normaliser, compounds joined), plain WER/CER and the output
writers. The standard scoring (openai-whisper's rules) is tested in test_scoring.py."""
import json
import os
import stat

import pytest

from whisper_scratch.evaluation.lenient import LenientEnglishNormalizer, LenientTextNormalizer, lenient_normalizer
from whisper_scratch.evaluation.metrics import cer, error_rates, wer
from whisper_scratch.inference.writers import SUPPORTED_EXTENSIONS, format_timestamp, write_evaluation, write_results

english = LenientEnglishNormalizer()
basic = LenientTextNormalizer()


def lenient(references: list[str], hypotheses: list[str]) -> dict[str, float]:
    return error_rates(references, hypotheses, "en", scoring="lenient")


@pytest.mark.parametrize("text, expected", [
    ("twenty one", "21"),
    ("one hundred and five", "105"),
    ("two thousand twenty", "2020"),
    ("two thousand and five", "2005"),
    ("nineteen ninety nine", "1999"),
    ("two million three hundred thousand and one", "2300001"),
    ("three point five", "3.5"),
    ("zero point zero five", "0.05"),
    ("the 3.5 version", "the 3.5 version"),
    ("1,000,000 people", "1000000 people"),
    ("call 007", "call 007"),
    ("first", "1st"),
    ("the twenty-first century", "the 21st century"),
    ("twenty second", "22nd"),
    ("one hundred and third", "103rd"),
    ("eleventh hour", "11th hour"),
    ("ninth", "9th"),
    ("wait a second", "wait a second"),
    ("five percent", "5%"),
    ("ten per cent", "10%"),
    ("5 %", "5%"),
    ("$5", "$5"),
    ("five dollars", "$5"),
    ("5 dollars", "$5"),
    ("five dollars and fifty cents", "$5.50"),
    ("$5.50", "$5.50"),
    ("fifty cents", "¢50"),
    ("five million dollars", "$5000000"),
    ("€20", "€20"),
    ("twenty euros", "€20"),
    ("one two three", "1 2 3"),
    ("this one", "this one"),
    ("one of them", "one of them"),
])
def test_english_numbers(text, expected):
    assert english(text) == expected


# The basic normaliser keeps letters of every script and their combining marks.
BASIC = [
    ("Příliš žluťoučký kůň úpěl ďábelské ódy!", "příliš žluťoučký kůň úpěl ďábelské ódy"),
    ("नमस्ते, दुनिया! क्या हाल है? मैं ठीक हूँ।", "नमस्ते दुनिया क्या हाल है मैं ठीक हूँ"),
    ("Сайн байна уу? Өнөөдөр сайхан өдөр.", "сайн байна уу өнөөдөр сайхан өдөр"),
    ("Bakı şəhərində [musiqi] yaşayır.", "bakı şəhərində yaşayır"),
    ("Stojí to 3,5 Kč (asi).", "stojí to 3,5 kč"),
    ("Ｆｕｌｌ　ｗｉｄｔｈ ﬁne", "full width fine"),
    ("zero\u200bwidth", "zerowidth"),
    ("l'homme d’état", "l homme d état"),
]


@pytest.mark.parametrize("text, expected", BASIC)
def test_basic_keeps_letters_and_marks(text, expected):
    assert basic(text) == expected


@pytest.mark.parametrize("whisper, human", [
    ("Press 1 to continue.", "press one to continue"),
    ("Press 1, 2, 3.", "press one two three"),
    ("It's 5% off!", "it is five percent off"),
    ("That costs $12.", "that costs twelve dollars"),
    ("Mr. Smith's favourite colour is grey.", "mister smiths favorite color is gray"),
    ("OK, let's go.", "okay let us go"),
    ("I can't, won't, don't.", "i cannot will not do not"),
    ("The theatre centre, in 1999.", "the theater center in nineteen ninety nine"),
    ("Call-forward on no answer", "call forward on no answer"),
    ("Um, the 21st of May.", "the twenty first of may"),
    ("Colours and neighbours", "colors and neighbors"),
    ("Press * to pause, # to exit.", "press star to pause pound to exit"),
    ("Call at 5 P.M. or 9 a.m.", "call at five pm or nine am"),
    ("R & D", "r and d"),
    ("Come straight thru", "come straight through"),
])
def test_english_pairs_agree(whisper, human):
    assert english(whisper) == english(human)


def test_english_punctuation_brackets_fillers():
    assert english("Hello, world! [laughter] (noise) <unk> uh... hmm?") == "hello world"
    assert english("“Quoted” — dash; semi-colon: end…") == "quoted dash semi colon end"
    assert english("He’d go; they’re here; I’ve been") == "he would go they are here i have been"
    assert english("") == "" and english("$ %") == "" and english("percent") == "percent"




def test_basic_options_and_language():
    assert LenientTextNormalizer(remove_diacritics=True)("Příliš žluťoučký Łódź") == "prilis zlutoucky lodz"
    # remove_diacritics touches Latin letters only: matras and Cyrillic й are letters.
    assert LenientTextNormalizer(remove_diacritics=True)("नमस्ते Йошкар") == "नमस्ते йошкар"
    assert LenientTextNormalizer(keep_apostrophes=True)("l'homme d’état 'quoted'") == "l'homme d'état quoted"
    assert lenient_normalizer("az")("İlham BAKI") == "ilham bakı"
    assert lenient_normalizer("cs")("İlham BAKI") == "ilham baki"
    assert isinstance(lenient_normalizer("en"), LenientEnglishNormalizer)
    assert type(lenient_normalizer(None)) is LenientTextNormalizer


def test_wer_cer_hand_computed():
    # "a b c d" vs "a x c": 1 substitution + 1 deletion; "e f" vs "e f g": 1 insertion -> 3 / 6.
    assert wer(["a b c d", "e f"], ["a x c", "e f g"]) == pytest.approx(3 / 6)
    # "abc" vs "abd": 1 substitution of 3; "de" vs "de": 0 -> 1 / 5 characters.
    assert cer(["abc", "de"], ["abd", "de"]) == pytest.approx(1 / 5)
    assert cer(["ab c"], ["ab"]) == pytest.approx(2 / 4)  # the space is a character
    assert wer(["Hello, World"], ["hello world"]) == 1.0  # no normaliser: compared as given
    assert wer(["Hello, World"], ["hello world"], normalizer=basic) == 0.0
    assert lenient(["Press one to continue."], ["Press 1 to continue"]) == {"wer": 0.0, "cer": 0.0}
    # Plain wer() does not join compounds, whatever the normaliser.
    assert wer(["the mail box"], ["the mailbox"], english) == pytest.approx(2 / 3)


def test_lenient_compounds_score_as_one_word():
    # Open, hyphenated and closed compounds and spelled-out acronyms are the same speech.
    assert lenient(["Use the mail box.", "Press 3 to re-record.", "M I S D N"],
                   ["use the mailbox", "press three to rerecord", "MISDN."])["wer"] == 0.0
    assert lenient(["touch tone keypad"], ["touchtone keypad"])["cer"] == 0.0
    # A number read digit by digit, and codes of letters and digits, join too.
    assert lenient(["dial 500 or 1234", "H.323"], ["dial 5-0-0 or 1 2 3 4", "H323"])["wer"] == 0.0
    # Other runs of numbers do not: "50 0" is one substitution and one insertion.
    assert lenient(["dial 500"], ["dial 50 0"])["wer"] == pytest.approx(2 / 2)
    # A join needs the other side to have the whole word: "mail" alone stays an error.
    assert lenient(["the mail box"], ["the mail"])["wer"] == pytest.approx(1 / 3)


def test_empty_reference_counts_insertions():
    # The second reference normalises to "": its 2 hypothesis words are insertions over 3 words.
    assert wer(["one two three", "[noise]"], ["one two three", "hello there"], basic) == pytest.approx(2 / 3)
    assert cer(["abc", ""], ["abc", "de"]) == pytest.approx(2 / 3)
    assert wer(["", ""], ["", ""]) == 0.0
    with pytest.raises(ValueError, match="empty"):
        wer([""], ["words"])
    with pytest.raises(ValueError):
        wer(["a"], ["a", "b"])


RESULT = {"audio": "a.flac", "text": "Hello there. General Kenobi!", "language": "en", "segments": [
    {"start": 0.0, "end": 1.5, "text": " Hello there."},
    {"start": 1.5, "end": 3723.0456, "text": " General --> Kenobi!"},
]}
OTHER = {"audio": "b.flac", "text": "Bye.", "language": "en", "segments": [], "duration": 2.25}


def test_format_timestamp():
    assert format_timestamp(12.5) == "00:12.500"
    assert format_timestamp(3723.0456, always_include_hours=True, decimal_marker=",") == "01:02:03,046"
    assert format_timestamp(3600) == "01:00:00.000"
    assert format_timestamp(59.9996) == "01:00.000"
    with pytest.raises(ValueError):
        format_timestamp(-1)


def _seconds(stamp: str) -> float:
    parts = [float(p) for p in stamp.replace(",", ".").split(":")]
    return sum(p * 60**k for k, p in enumerate(reversed(parts)))


def _parse_cues(text: str) -> list[tuple[float, float, str]]:
    cues = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        timing = next(i for i, line in enumerate(lines) if "-->" in line)
        start, end = lines[timing].split(" --> ")
        cues.append((_seconds(start), _seconds(end), "\n".join(lines[timing + 1:])))
    return cues


def test_srt_round_trip(tmp_path):
    path = tmp_path / "out.srt"
    write_results([RESULT], path)
    text = path.read_text(encoding="utf-8")
    assert text == ("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
                    "2\n00:00:01,500 --> 01:02:03,046\nGeneral -> Kenobi!\n\n")
    assert _parse_cues(text) == [(0.0, 1.5, "Hello there."), (1.5, pytest.approx(3723.046), "General -> Kenobi!")]


def test_vtt_round_trip(tmp_path):
    path = tmp_path / "out.vtt"
    write_results([RESULT], path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.\n\n00:01.500 --> 01:02:03.046\n")
    header, body = text.split("\n\n", 1)
    assert header == "WEBVTT"
    cues = _parse_cues(body)
    assert [c[2] for c in cues] == ["Hello there.", "General -> Kenobi!"]
    assert cues[1][1] == pytest.approx(3723.046)


def test_subtitles_without_segments_and_several_files(tmp_path):
    write_results([OTHER], tmp_path / "b.srt")
    assert _parse_cues((tmp_path / "b.srt").read_text()) == [(0.0, 2.25, "Bye.")]
    write_results([dict(OTHER, text="", duration=None)], tmp_path / "empty.vtt")
    assert (tmp_path / "empty.vtt").read_text() == "WEBVTT\n\n"
    with pytest.raises(ValueError, match="one audio file"):
        write_results([RESULT, OTHER], tmp_path / "two.srt")


def test_txt_json_tsv(tmp_path):
    write_results([RESULT], tmp_path / "one.txt")
    assert (tmp_path / "one.txt").read_text() == "Hello there. General Kenobi!\n"
    write_results([RESULT, OTHER], tmp_path / "two.txt")
    assert (tmp_path / "two.txt").read_text() == "a.flac\tHello there. General Kenobi!\nb.flac\tBye.\n"

    write_results([RESULT, OTHER], tmp_path / "all.json")
    assert json.loads((tmp_path / "all.json").read_text(encoding="utf-8")) == [RESULT, OTHER]

    write_results([RESULT], tmp_path / "one.tsv")
    assert (tmp_path / "one.tsv").read_text().splitlines() == [
        "start\tend\ttext", "0\t1500\tHello there.", "1500\t3723046\tGeneral -> Kenobi!"]
    write_results([RESULT, OTHER], tmp_path / "two.tsv")
    rows = [line.split("\t") for line in (tmp_path / "two.tsv").read_text().splitlines()]
    assert rows[0] == ["audio", "start", "end", "text"] and rows[-1] == ["b.flac", "0", "2250", "Bye."]
    assert len(rows) == 4


def test_write_evaluation(tmp_path):
    utterances = [{"audio": "a.flac", "reference": "Hello.", "hypothesis": "hello"}]
    path = tmp_path / "sub" / "eval.json"
    write_evaluation(path, 0.034, 0.01, utterances)
    assert json.loads(path.read_text()) == {"wer": 0.034, "cer": 0.01, "utterances": utterances}
    with pytest.raises(ValueError, match="hypothesis"):
        write_evaluation(path, 0.0, 0.0, [{"audio": "a", "reference": "r"}])


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    write_results([RESULT], path)
    before = path.read_text()
    write_results([OTHER], path)  # replacing an existing file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert json.loads(path.read_text()) == [OTHER] and before != path.read_text()

    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr("whisper_scratch.common.files.os.replace", fail)
    with pytest.raises(OSError):
        write_results([RESULT], path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert json.loads(path.read_text()) == [OTHER]  # the old file survives a failed write


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_written_transcripts_get_the_users_umask_permissions(tmp_path, ext):
    """Like any file the user creates (0644 under umask 022), not mkstemp's private 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    write_results([RESULT], tmp_path / f"out{ext}")
    write_evaluation(tmp_path / "eval.json", 0.1, 0.05, [{"audio": "a.wav", "reference": "a", "hypothesis": "a"}])
    for path in (tmp_path / f"out{ext}", tmp_path / "eval.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_unknown_extension(tmp_path):
    with pytest.raises(ValueError) as error:
        write_results([RESULT], tmp_path / "out.docx")
    message = str(error.value)
    assert "out.docx" in message and all(ext in message for ext in SUPPORTED_EXTENSIONS)
    assert list(tmp_path.iterdir()) == []
