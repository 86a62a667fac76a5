"""Tokenizer tests: Whisper's BPE layout, SentencePiece training, the CLI; `shared` ones compare with openai-whisper."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from whisper_scratch.tokenizer import (
    LANGUAGES,
    TO_LANGUAGE_CODE,
    SentencePieceWhisperTokenizer,
    WhisperTokenizer,
    get_tokenizer,
    load_tokenizer_dir,
    train_sentencepiece,
)

REPO = Path(__file__).resolve().parents[1]

UNICODE_TEXTS = {
    "cs": "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "hi": "नमस्ते, आप कैसे हैं? मैं ठीक हूँ।",
    "mn": "Сайн байна уу? Монгол хэл сурч байна.",
    "ja": "今日はいい天気ですね。",
}

SENTENCES = [
    "Dobrý den, jak se máte?",
    "Mám se dobře, děkuji.",
    "Kolik stojí jízdenka do Prahy?",
    "Vlak odjíždí v osm hodin ráno.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Venku prší a fouká studený vítr.",
    "Můžete mi prosím pomoci?",
    "Knihovna je otevřená do šesti večer.",
    "Babička peče koláče každou neděli.",
    "Na stole leží tři červená jablka.",
    "नमस्ते, आप कैसे हैं?",
    "मैं ठीक हूँ, धन्यवाद।",
    "आज मौसम बहुत अच्छा है।",
    "यह किताब बहुत पुरानी है।",
    "हम कल बाज़ार जाएंगे।",
    "मुझे चाय पसंद है।",
    "बच्चे बगीचे में खेल रहे हैं।",
    "रेलगाड़ी सुबह आठ बजे आती है।",
    "क्या आप मेरी मदद कर सकते हैं?",
    "दरवाज़ा बंद कर दीजिए।",
    "Сайн байна уу?",
    "Би монгол хэл сурч байна.",
    "Өнөөдөр цаг агаар сайхан байна.",
    "Энэ ном маш сонирхолтой.",
    "Бид маргааш зах руу явна.",
    "Би цай уух дуртай.",
    "Хүүхдүүд цэцэрлэгт тоглож байна.",
    "Галт тэрэг өглөө найман цагт ирнэ.",
    "Та надад тусалж чадах уу?",
    "Хаалгаа хаагаарай.",
]


def public_state(tokenizer) -> dict:
    """Everything decoding code reads from a tokenizer, for equality checks."""
    names = (
        "eot sot sot_prev sot_lm no_speech no_timestamps timestamp_begin transcribe translate language task "
        "all_language_tokens all_language_codes sot_sequence sot_sequence_including_notimestamps "
        "non_speech_tokens n_vocab is_multilingual"
    ).split()
    return {name: getattr(tokenizer, name) for name in names}


# ---------------------------------------------------------------- Whisper's BPE


def test_english_only_layout():
    tok = get_tokenizer(False)
    assert (tok.n_vocab, tok.eot, tok.sot, tok.timestamp_begin) == (51864, 50256, 50257, 50363)
    assert tok.no_timestamps == 50362 and not tok.is_multilingual
    assert tok.sot_sequence == (50257,) and tok.sot_sequence_including_notimestamps == (50257, 50362)
    assert get_tokenizer(False, language="en", task="transcribe").sot_sequence == (50257,)


def test_multilingual_layout():
    tok = get_tokenizer(True, language="en")
    assert (tok.n_vocab, tok.eot, tok.sot) == (51865, 50257, 50258)
    assert tok.to_language_token("en") == tok.language_token == 50259
    assert (tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev, tok.no_speech) == (50358, 50359, 50360, 50361, 50362)
    assert (tok.no_timestamps, tok.timestamp_begin) == (50363, 50364)
    assert tok.n_vocab - tok.timestamp_begin == 1501
    assert tok.all_language_codes == tuple(LANGUAGES)[:99]
    assert tok.all_language_tokens == tuple(range(50259, 50358))
    assert tok.special_tokens["<|30.00|>"] == tok.n_vocab - 1
    with pytest.raises(KeyError):
        tok.to_language_token("yue")


def test_hundred_languages():
    tok = get_tokenizer(True, num_languages=100, language="yue")
    assert (tok.n_vocab, tok.eot, tok.timestamp_begin) == (51866, 50257, 50365)
    assert tok.language_token == 50358 and tok.all_language_codes[-1] == "yue" and len(LANGUAGES) == 100


def test_sot_sequences_and_language_names():
    assert get_tokenizer(True, language="cs").sot_sequence == (50258, 50283, 50359)
    assert get_tokenizer(True, language="Czech", task="translate").sot_sequence == (50258, 50283, 50358)
    assert get_tokenizer(True, language="mandarin").language == "zh" and TO_LANGUAGE_CODE["burmese"] == "my"
    plain = get_tokenizer(True)
    assert plain.sot_sequence == (50258,) and plain.language is None
    with pytest.raises(ValueError):
        plain.language_token
    assert get_tokenizer(True, task="translate").sot_sequence == (50258, 50259, 50358)  # "en" placeholder
    assert get_tokenizer(True, language="cs") is get_tokenizer(True, language="cs")
    with pytest.raises(ValueError):
        get_tokenizer(True, language="klingon")
    with pytest.raises(ValueError):
        get_tokenizer(True, language="cs", task="summarize")


@pytest.mark.parametrize("multilingual", [False, True])
@pytest.mark.parametrize("code", list(UNICODE_TEXTS))
def test_bpe_round_trip(multilingual, code):
    tok = get_tokenizer(multilingual)
    text = UNICODE_TEXTS[code]
    ids = tok.encode(text)
    assert all(0 <= i < tok.eot for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([tok.sot, *ids, tok.timestamp_begin + 5, tok.eot]) == text  # specials are dropped


def test_special_markup_in_text_is_plain_text():
    tok = get_tokenizer(True)
    ids = tok.encode("<|endoftext|>")
    assert tok.eot not in ids and tok.decode(ids) == "<|endoftext|>"


def test_decode_with_timestamps():
    tok = get_tokenizer(True, language="en")
    ids = [*tok.sot_sequence, tok.timestamp_begin, *tok.encode(" Hello world."), tok.timestamp_begin + 54, tok.eot]
    assert tok.decode_with_timestamps(ids) == (
        "<|startoftranscript|><|en|><|transcribe|><|0.00|> Hello world.<|1.08|><|endoftext|>"
    )


def test_split_to_word_tokens():
    tok = get_tokenizer(True, language="en")
    ids = [*tok.encode(" Hello, wonderful world!"), tok.eot]
    words, word_ids = tok.split_to_word_tokens(ids)
    assert words == [" Hello", ",", " wonderful", " world", "!", "<|endoftext|>"]
    assert sum(word_ids, []) == ids
    ja = get_tokenizer(True, language="ja")
    ids = [*ja.encode(UNICODE_TEXTS["ja"]), ja.eot]
    words, word_ids = ja.split_to_word_tokens(ids)
    assert "".join(words) == UNICODE_TEXTS["ja"] + "<|endoftext|>" and sum(word_ids, []) == ids
    assert all("\ufffd" not in word for word in words)


def test_non_speech_tokens():
    tok = get_tokenizer(True)
    suppressed = set(tok.non_speech_tokens)
    assert list(tok.non_speech_tokens) == sorted(suppressed)
    for text in (" -", " '", "(", " (", "[", "♪"):
        assert tok.encode(text)[0] in suppressed, text
    for text in (",", ".", "?", "!", " Hello", "-", "'"):
        assert tok.encode(text)[0] not in suppressed, text


def test_whisper_tokenizer_save_and_load(tmp_path):
    get_tokenizer(True, num_languages=100).save(tmp_path)
    loaded = load_tokenizer_dir(tmp_path, language="cs")
    assert isinstance(loaded, WhisperTokenizer)
    assert public_state(loaded) == public_state(get_tokenizer(True, num_languages=100, language="cs"))


# ---------------------------------------------------------------- SentencePiece


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory) -> Path:
    return train_sentencepiece(SENTENCES, tmp_path_factory.mktemp("spm") / "m", vocab_size=400)


def test_sentencepiece_round_trip(spm_model):
    tok = SentencePieceWhisperTokenizer(spm_model, ("cs", "hi", "mn"), language="hi")
    for text in [*SENTENCES, *UNICODE_TEXTS.values(), "unseen: 日本 ♪ «ž»"]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.eot for i in ids)
        assert tok.decode(ids) == " " + text  # words start with a space, as in Whisper's own text
    words, word_ids = tok.split_to_word_tokens([*tok.encode("Dobrý den, jak se máte?"), tok.eot])
    assert words == [" Dobrý", " den", ",", " jak", " se", " máte", "?", "<|endoftext|>"]


def test_sentencepiece_specials_follow_pieces(spm_model):
    tok = SentencePieceWhisperTokenizer(spm_model, ("cs", "hi", "mn"), language="mn", task="translate")
    pieces = tok.processor.get_piece_size()
    assert 256 < pieces <= 400 and tok.eot == pieces and tok.sot == pieces + 1
    assert tok.all_language_tokens == (pieces + 2, pieces + 3, pieces + 4)
    assert (tok.translate, tok.transcribe, tok.sot_lm, tok.sot_prev, tok.no_speech, tok.no_timestamps) == tuple(
        range(pieces + 5, pieces + 11)
    )
    assert tok.timestamp_begin == pieces + 11 and tok.n_vocab == pieces + 11 + 1501
    assert tok.sot_sequence == (tok.sot, pieces + 4, tok.translate)
    ids = [*tok.sot_sequence_including_notimestamps, tok.timestamp_begin + 50, *tok.encode("Сайн"), tok.eot]
    assert tok.decode_with_timestamps(ids) == "<|startoftranscript|><|mn|><|translate|><|notimestamps|><|1.00|> Сайн<|endoftext|>"
    assert tok.decode(ids) == " Сайн"
    assert all(i < tok.eot for i in tok.non_speech_tokens)
    plain = SentencePieceWhisperTokenizer(spm_model)
    assert plain.sot_sequence == (plain.sot,) and not plain.is_multilingual and plain.n_vocab == pieces + 8 + 1501
    with pytest.raises(ValueError):
        SentencePieceWhisperTokenizer(spm_model, ("cs",), language="de")


def test_sentencepiece_save_and_load(spm_model, tmp_path):
    tok = SentencePieceWhisperTokenizer(spm_model, ("cs", "hi", "mn"), language="cs")
    tok.save(tmp_path)
    assert (tmp_path / "spm.model").is_file()
    for loaded in (SentencePieceWhisperTokenizer.load(tmp_path, language="cs"), load_tokenizer_dir(tmp_path, language="cs")):
        assert isinstance(loaded, SentencePieceWhisperTokenizer)
        assert public_state(loaded) == public_state(tok)
        assert [loaded.encode(text) for text in SENTENCES] == [tok.encode(text) for text in SENTENCES]


def test_sentencepiece_bpe(tmp_path):
    model = train_sentencepiece(SENTENCES, tmp_path / "bpe", vocab_size=500, model_type="bpe")
    tok = SentencePieceWhisperTokenizer(model, ("cs",))
    assert all(tok.decode(tok.encode(text)) == " " + text for text in SENTENCES)
    with pytest.raises(ValueError):
        train_sentencepiece(SENTENCES, tmp_path / "char", vocab_size=350, model_type="char")


# ---------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whisper_scratch", "tokenizer", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_train_jsonl(tmp_path):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"audio": f"{i}.wav", "text": s}) + "\n" for i, s in enumerate(SENTENCES)))
    result = run_cli("train", "--manifest", str(manifest), "--out", str(tmp_path / "tok"), "--vocab-size", "400",
                     "--language", "cs", "--language", "hi")
    assert result.returncode == 0, result.stderr
    assert "read 30 transcripts" in result.stdout and "saved" in result.stdout
    tok = load_tokenizer_dir(tmp_path / "tok", language="hi")
    assert tok.all_language_codes == ("cs", "hi") and tok.sot_sequence == (tok.sot, tok.sot + 2, tok.transcribe)
    assert tok.decode(tok.encode(SENTENCES[12])) == " " + SENTENCES[12]


def test_cli_train_common_voice_tsv(tmp_path):
    from whisper_scratch.cli.tokenizer import main

    manifest = tmp_path / "train.tsv"
    rows = ["client_id\tpath\tsentence\tup_votes"] + [f"c{i}\tx{i}.mp3\t{s}\t2" for i, s in enumerate(SENTENCES)]
    manifest.write_text("\n".join(rows) + "\n")
    assert main(["train", "--manifest", str(manifest), "--out", str(tmp_path / "tok"), "--vocab-size", "400"]) == 0
    tok = load_tokenizer_dir(tmp_path / "tok")
    assert not tok.is_multilingual and tok.sot_sequence == (tok.sot,)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.jsonl", '{"text": "ok"}\nnot json\n', "bad.jsonl:2"),
        ("bad.jsonl", '{"sentence": "wrong field"}\n', '"text"'),
        ("bad.tsv", "path\ttext\nx.mp3\thello\n", '"sentence"'),
        ("bad.wav", "hello\n", ".txt, .jsonl, .csv or a Common Voice .tsv"),
        ("missing.jsonl", None, "missing.jsonl"),
    ],
)
def test_cli_bad_manifest(tmp_path, name, content, message):
    manifest = tmp_path / name
    if content is not None:
        manifest.write_text(content)
    result = run_cli("train", "--manifest", str(manifest), "--out", str(tmp_path / "tok"), "--vocab-size", "300")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert not (tmp_path / "tok").exists()


# ---------------------------------------------------------------- openai-whisper as oracle

ORACLE_TEXTS = [
    " Hello world, it's 3.5 o'clock!",
    "And so, my fellow Americans: ask not what your country can do for you.",
    *UNICODE_TEXTS.values(),
    "Ich heiße Müller — und Sie?",
    "สวัสดีครับ ผมชื่อสมชาย",
    "我们今天去公园散步。",
    "안녕하세요, 반갑습니다.",
    "مرحبا بكم في بيتنا",
    "♪ la la la ♪ [laughs] (applause) -- «quoted» 「引用」 😀 𝄞",
    "  spaces\tand\nnewlines  ",
]
ORACLE_CONFIGS = [
    (False, 99, None, None),
    (True, 99, "en", None),
    (True, 99, "cs", "translate"),
    (True, 99, None, "translate"),
    (True, 99, "ja", "transcribe"),
    (True, 100, "yue", None),
    (True, 100, "th", "translate"),
]


@pytest.mark.shared
@pytest.mark.parametrize("multilingual, num_languages, language, task", ORACLE_CONFIGS)
def test_matches_openai_whisper(multilingual, num_languages, language, task):
    from whisper.tokenizer import get_tokenizer as oracle_tokenizer

    ours = get_tokenizer(multilingual, num_languages=num_languages, language=language, task=task)
    theirs = oracle_tokenizer(multilingual, num_languages=num_languages, language=language, task=task)

    assert ours.n_vocab == theirs.encoding.n_vocab
    assert ours.special_tokens == theirs.special_tokens
    for name in (
        "eot sot sot_prev sot_lm no_speech no_timestamps timestamp_begin transcribe translate language task "
        "sot_sequence sot_sequence_including_notimestamps non_speech_tokens"
    ).split():
        assert getattr(ours, name) == getattr(theirs, name), name
    if language is not None:
        assert ours.language_token == theirs.language_token
    # openai-whisper lists the language tokens in set order; compare the code -> token pairing
    assert dict(zip(ours.all_language_codes, ours.all_language_tokens)) == dict(
        zip(theirs.all_language_codes, theirs.all_language_tokens)
    )

    for text in ORACLE_TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        assert ours.decode(ids) == theirs.decode(ids) == text
        timed = [*ours.sot_sequence, ours.timestamp_begin, *ids, ours.timestamp_begin + 77, ours.eot]
        assert ours.decode_with_timestamps(timed) == theirs.decode_with_timestamps(timed)
        for tokens in ([*ids, ours.eot], timed, ids[: len(ids) // 2 + 1], ids[len(ids) // 3 :]):
            assert ours.split_to_word_tokens(tokens) == theirs.split_to_word_tokens(tokens), text


@pytest.mark.shared
@pytest.mark.parametrize("language", ["en", "zh", "ja", "th", "lo", "my", "cs", "hi"])
def test_word_splitting_matches_openai_whisper(language):
    from whisper.tokenizer import get_tokenizer as oracle_tokenizer

    ours = get_tokenizer(True, language=language)
    theirs = oracle_tokenizer(True, language=language)
    for text in ORACLE_TEXTS:
        ids = [*ours.encode(text), ours.eot]
        assert ours.split_to_word_tokens(ids) == theirs.split_to_word_tokens(ids), text
