"""Long recordings (window by window, as openai-whisper's transcribe()) and word timestamps.

Unit tests use a small random model rigged to talk without end, so every window fills its token
budget and the text before it would overflow the decoder's context as a prompt. `shared` tests
compare segments and word times with openai-whisper's transcribe() on the same weights, on
multilingual.mp3 and on a 5-minute recording built from asterisk-en prompts."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_scratch.audio.geometry import SAMPLE_RATE
from whisper_scratch.audio.io import load_audio
from whisper_scratch.cli import transcribe
from whisper_scratch.evaluation.metrics import error_rates
from whisper_scratch.inference.decoding import DecodingOptions, FallbackOptions, decode_with_fallback
from whisper_scratch.inference.longform import _clips, transcribe_long
from whisper_scratch.inference.options import Interrupted, TranscribeOptions, TranscriptionStopped
from whisper_scratch.inference.segments import window_segments
from whisper_scratch.inference.timing import WordTiming, dtw, median_filter, merge_punctuations
from whisper_scratch.inference.transcriber import transcribe_files
from whisper_scratch.inference.writers import LineOptions, write_results
from whisper_scratch.model.checkpoint import export_openai, load_model, save_model
from whisper_scratch.model.loaded import whisper_vocabulary
from whisper_scratch.model.whisper import ModelDimensions, Whisper

REPO = Path(__file__).resolve().parents[1]


# A 2-second window (n_audio_ctx 100) and a 32-token text context: prompts are cut to 15 tokens,
# and a window may sample 16.
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=100, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=32, n_text_state=32, n_text_head=2, n_text_layer=2)
GREEDY = TranscribeOptions(fallback=FallbackOptions((0.0,)), progress=False)
TK = whisper_vocabulary(Whisper(DIMS))
WORD = TK.encode(" hello")[0]


def chatty_model() -> Whisper:
    """Random weights, except that the decoder's output is one fixed vector whose logits favour
    " hello" (10) over every other text token and timestamp (0) and EOT (-10): after its first
    timestamp it says " hello" until the window's token budget runs out."""
    torch.manual_seed(0)
    model = Whisper(DIMS).eval()
    with torch.no_grad():
        model.decoder.ln.weight.zero_()
        model.decoder.ln.bias.zero_()
        model.decoder.ln.bias[0] = 10.0
        model.decoder.token_embedding.weight[:, 0] = 0.0
        model.decoder.token_embedding.weight[WORD, 0] = 1.0
        model.decoder.token_embedding.weight[TK.eot, 0] = -1.0
    return model


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * SAMPLE_RATE)).astype(np.float32)


def test_text_before_never_overflows_the_context():
    """The crash of the issue: once the text so far exceeds the context, every window's prompt is
    cut to half the context, and sampling stops at the context's end; no window fails."""
    model = chatty_model()
    fed = []
    forward = model.decoder.forward

    def spy(tokens, xa, cache=None):
        fed.append((cache.offset if cache is not None else 0) + tokens.shape[1])
        return forward(tokens, xa, cache)

    model.decoder.forward = spy
    result = transcribe_long(model, noise(13), GREEDY)
    windows = result["segments"]
    assert len(windows) == 7  # 13 s in 2 s windows, each one open-ended segment of " hello"s
    assert all(s["text"] == " ".join(["hello"] * 15) for s in windows), windows[0]["text"]
    assert [s["start"] for s in windows] == [0, 2, 4, 6, 8, 10, 12]
    # The prompt is full from the second window on: <|startofprev|> + 15 tokens + <|startoftranscript|>.
    assert max(fed) == DIMS.n_text_ctx
    assert fed.count(1 + 15 + 1) >= 6


def test_prompt_is_cut_as_the_reference_cuts_it(monkeypatch):
    """The initial prompt, then the text so far with its timestamps; without conditioning, the
    initial prompt in the first window only."""
    prompts = []

    def spy(model, features, options, tokenizer, fallback):
        prompts.append(options.prompt)
        return decode_with_fallback(model, features, options, tokenizer, fallback)

    monkeypatch.setattr("whisper_scratch.inference.longform.decode_with_fallback", spy)
    model = chatty_model()
    for condition in (True, False):
        transcribe_long(model, noise(5), TranscribeOptions(decoding=DecodingOptions(prompt="Hi there."),
                                                           fallback=FallbackOptions((0.0,)), progress=False,
                                                           condition_on_previous_text=condition))
    initial = TK.encode(" Hi there.")
    conditioned, independent = prompts[:3], prompts[3:]
    assert conditioned[0] == initial  # honoured in the first window of a long recording
    assert conditioned[1][:len(initial)] == initial and len(conditioned[2]) > len(conditioned[1])
    assert any(t >= TK.timestamp_begin for t in conditioned[1])
    assert independent == [initial, None, None]


def test_window_segments_seek_to_the_end_of_the_last_complete_segment():
    ts = TK.timestamp_begin
    a, b, c = TK.encode(" a")[0], TK.encode(" b")[0], TK.encode(" c")[0]
    segments, advance, single = window_segments([ts, a, ts + 50, ts + 50, b, ts + 100, ts + 120, c], TK, 30.0, 3000)
    assert [(s["start"], s["end"], s["text"]) for s in segments] == [(30.0, 31.0, " a"), (31.0, 32.0, " b")]
    assert advance == 200 and not single  # the unfinished " c" is decoded again from 32 s
    segments, advance, single = window_segments([ts, a, ts + 50, ts + 50, b, ts + 100], TK, 0.0, 3000)
    assert len(segments) == 2 and advance == 3000 and single  # a lone last timestamp: nothing more to hear
    segments, advance, _ = window_segments([ts, a, b, ts + 80], TK, 0.0, 1500)
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 1.6)] and advance == 1500
    segments, advance, _ = window_segments([a, b], TK, 4.0, 1500)
    assert [(s["start"], s["end"]) for s in segments] == [(4.0, 19.0)] and advance == 1500


def test_clip_timestamps():
    assert _clips((), 9000) == [(0, 9000)]
    assert _clips((0.0,), 9000) == [(0, 9000)]
    assert _clips((10.0, 20.5, 50.0), 9000) == [(1000, 2050), (5000, 9000)]
    assert _clips((10.0, 100.0, 120.0, 130.0), 9000) == [(1000, 9000), (9000, 9000)]
    result = transcribe_long(chatty_model(), noise(13), TranscribeOptions(fallback=FallbackOptions((0.0,)), progress=False,
                                                                          clip_timestamps=(3.0, 6.5, 10.0)))
    assert [s["start"] for s in result["segments"]] == [3.0, 5.0, 10.0, 12.0]
    assert result["segments"][1]["end"] == 6.5


def _failing_after(n: int, error: BaseException):
    """decode_with_fallback that raises `error` from its (n + 1)-th call on."""
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > n:
            raise error
        return decode_with_fallback(*args, **kwargs)
    return flaky


def test_a_failure_part_way_keeps_the_windows_done(monkeypatch, tmp_path):
    model = chatty_model()
    monkeypatch.setattr("whisper_scratch.inference.longform.decode_with_fallback", _failing_after(2, RuntimeError("boom")))
    with pytest.raises(TranscriptionStopped, match="decoding stopped at 4.0 s of 13.0 s .boom.") as stopped:
        transcribe_long(model, noise(13), GREEDY)
    assert [s["start"] for s in stopped.value.result["segments"]] == [0, 2]
    assert stopped.value.result["text"].startswith("hello hello")

    monkeypatch.setattr("whisper_scratch.inference.longform.decode_with_fallback", _failing_after(3, KeyboardInterrupt()))
    with pytest.raises(Interrupted) as interrupted:
        transcribe_long(model, noise(13), GREEDY)
    assert [s["start"] for s in interrupted.value.results[0]["segments"]] == [0, 2, 4]


def test_files_go_on_after_a_long_one_fails(monkeypatch, tmp_path):
    model = chatty_model()
    sf.write(tmp_path / "long.wav", noise(9), SAMPLE_RATE)
    sf.write(tmp_path / "other.wav", noise(5, seed=1), SAMPLE_RATE)
    monkeypatch.setattr("whisper_scratch.inference.longform.decode_with_fallback", _failing_after(1, RuntimeError("boom")))
    results, failed = transcribe_files(model, [tmp_path / "long.wav", tmp_path / "other.wav"], GREEDY)
    assert [Path(p).name for p, _ in failed] == ["long.wav", "other.wav"]
    assert "decoding stopped at 2.0 s of 9.0 s" in failed[0][1] and "boom" in failed[1][1]
    assert [len(r["segments"]) for r in results] == [1, 0] and results[0]["audio"].endswith("long.wav")


@pytest.mark.parametrize("error, code", [(RuntimeError("boom"), 1), (KeyboardInterrupt(), 130)])
def test_cli_writes_what_was_done(monkeypatch, capsys, tmp_path, error, code):
    """Ctrl-C or an error in the third window: the first two windows are written."""
    save_model(chatty_model(), tmp_path / "model.pt")
    sf.write(tmp_path / "long.wav", noise(13), SAMPLE_RATE)
    monkeypatch.setattr("whisper_scratch.inference.longform.decode_with_fallback", _failing_after(2, error))
    out = tmp_path / "long.srt"
    got = transcribe.main(["--model_path", str(tmp_path / "model.pt"), "--audio_path", str(tmp_path / "long.wav"),
                           "--output_file", str(out), "--device", "cpu", "--no_fallback"])
    err = capsys.readouterr().err
    assert got == code, err
    assert out.read_text().count(" --> ") == 2
    assert ("decoding stopped at 4.0 s" in err) if code == 1 else ("interrupted after 1 of 1" in err)


def test_median_filter_and_dtw_against_plain_loops():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(2, 3, 20)))
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3)), mode="reflect")
    expected = np.stack([np.median(padded[..., i:i + 7], axis=-1) for i in range(20)], axis=-1)
    assert np.array_equal(median_filter(x, 7).numpy(), expected)

    for cost in (rng.normal(size=(7, 30)), rng.integers(0, 3, size=(6, 12)).astype(np.float64)):  # ties too
        assert [a.tolist() for a in dtw(cost)] == [a.tolist() for a in _plain_dtw(cost)]


def _plain_dtw(x: np.ndarray):
    n, m = x.shape
    total = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    total[0, 0] = 0
    trace = np.zeros((n + 1, m + 1), dtype=int)
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c = (total[i - 1, j - 1], total[i - 1, j], total[i, j - 1])
            t = 0 if c[0] < c[1] and c[0] < c[2] else 1 if c[1] < c[0] and c[1] < c[2] else 2
            total[i, j] = x[i - 1, j - 1] + c[t]
            trace[i, j] = t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        i, j = (i - 1, j - 1) if trace[i, j] == 0 else (i - 1, j) if trace[i, j] == 1 else (i, j - 1)
    path = np.array(path[::-1])
    return path[:, 0], path[:, 1]


def test_punctuation_joins_its_word():
    words = [WordTiming(w, [i], i, i + 1, 1.0) for i, w in enumerate([" \"", "Hi", ",", " (you", ")", "."])]
    merge_punctuations(words, "\"'“¿([{-", "\"'.。,，!！?？:：”)]}、")
    assert [w.word for w in words] == ["", " \"Hi,", "", " (you).", "", ""]
    assert [w.tokens for w in words] == [[], [0, 1, 2], [], [3, 4, 5], [], []]


def _word(word: str, start: float, end: float) -> dict:
    return {"word": word, "start": start, "end": end, "probability": 0.9}


WORDS_RESULT = {"audio": "a.wav", "text": "One two three four. Five six.", "segments": [
    {"start": 0.0, "end": 2.0, "text": "One two three four.",
     "words": [_word(" One", 0.0, 0.5), _word(" two", 0.5, 1.0), _word(" three", 1.2, 1.6), _word(" four.", 1.6, 2.0)]},
    {"start": 6.0, "end": 7.0, "text": "Five six.", "words": [_word(" Five", 6.0, 6.5), _word(" six.", 6.5, 7.0)]}]}


def test_subtitles_cut_by_line_width_and_count(tmp_path):
    lines = LineOptions(max_line_width=8, max_line_count=2)
    write_results([WORDS_RESULT], tmp_path / "a.srt", lines)
    assert (tmp_path / "a.srt").read_text() == (
        "1\n00:00:00,000 --> 00:00:01,600\nOne two\nthree\n\n"  # " three" would make the line 13 characters
        "2\n00:00:01,600 --> 00:00:02,000\nfour.\n\n"  # a third line: a new cue
        "3\n00:00:06,000 --> 00:00:07,000\nFive\nsix.\n\n")  # after a pause over 3 s: a new cue
    write_results([WORDS_RESULT], tmp_path / "a.tsv", lines)
    assert (tmp_path / "a.tsv").read_text().splitlines()[1:] == ["0\t1600\tOne two three", "1600\t2000\tfour.",
                                                                  "6000\t7000\tFive six."]
    write_results([WORDS_RESULT], tmp_path / "a.vtt", LineOptions(highlight_words=True))
    assert (tmp_path / "a.vtt").read_text().split("\n\n")[1:6] == [
        "00:00.000 --> 00:00.500\n<u>One</u> two three four.", "00:00.500 --> 00:01.000\nOne <u>two</u> three four.",
        "00:01.000 --> 00:01.200\nOne two three four.",  # the gap between two words: no highlight
        "00:01.200 --> 00:01.600\nOne two <u>three</u> four.", "00:01.600 --> 00:02.000\nOne two three <u>four.</u>"]


def test_cli_word_options_need_word_timestamps(capsys):
    for argv, needle in ((["--max_line_width", "20"], "--max_line_width needs --word_timestamps"),
                         (["--hallucination_silence_threshold", "2"], "needs --word_timestamps"),
                         (["--word_timestamps", "--max_line_count", "2"], "--max_line_count needs --max_line_width")):
        assert transcribe.main(["--audio_path", "x.wav", *argv]) == 2
        assert needle in capsys.readouterr().err
    args = transcribe.parse_args(["--word_timestamps", "--condition_on_previous_text", "False",
                                  "--clip_timestamps", "0,30.5,60"])
    assert args.word_timestamps and args.timestamps and not args.condition_on_previous_text
    assert args.clip_timestamps == (0.0, 30.5, 60.0)


def test_a_size_name_brings_openai_s_alignment_heads(monkeypatch, tmp_path):
    """OpenAI's .pt files do not hold their alignment heads; loading by size name adds the
    published ones, and a fine-tuned model saved in our format keeps them."""
    from whisper_scratch.model.checkpoint import load_checkpoint, model_from_checkpoint
    from whisper_scratch.model.download import ALIGNMENT_HEADS
    from whisper_scratch.model.whisper import SIZES

    small = Whisper(ModelDimensions(**{**SIZES["tiny.en"].to_dict(), "n_audio_layer": 1, "n_audio_state": 8,
                                       "n_text_state": 12, "n_vocab": 51864}))
    export_openai(small, tmp_path / "tiny.en.pt")
    monkeypatch.setattr("whisper_scratch.model.checkpoint.download", lambda name: tmp_path / f"{name}.pt")
    ckpt = load_checkpoint("tiny.en")
    assert ckpt.alignment_heads == list(ALIGNMENT_HEADS["tiny.en"]) == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1),
                                                                       (3, 2), (3, 3), (3, 4)]
    save_model(model_from_checkpoint(ckpt), tmp_path / "tuned")
    assert load_model(tmp_path / "tuned").alignment_heads.nonzero().tolist() == [list(p) for p in ckpt.alignment_heads]


# ---- real weights, against openai-whisper ----


@pytest.mark.shared
def test_alignment_heads_table_is_openai_s():
    import gzip
    from base64 import b85decode

    from whisper import _ALIGNMENT_HEADS

    from whisper_scratch.model.download import ALIGNMENT_HEADS
    from whisper_scratch.model.whisper import SIZES

    assert set(ALIGNMENT_HEADS) == set(_ALIGNMENT_HEADS)
    for name, blob in _ALIGNMENT_HEADS.items():
        dims = SIZES[name]
        mask = np.frombuffer(gzip.decompress(b85decode(blob)), dtype=bool).reshape(dims.n_text_layer, dims.n_text_head)
        assert [tuple(p) for p in np.argwhere(mask).tolist()] == list(ALIGNMENT_HEADS[name]), name

N_CLIPS, PAUSE = 64, 0.8  # 5.4 minutes


@pytest.fixture(scope="module")
def asterisk_rows(shared_data) -> list[dict]:
    rows = [json.loads(line) for line in (shared_data / "asterisk-en/manifest.jsonl").read_text().splitlines()]
    return [dict(r, audio=shared_data / "asterisk-en" / r["audio"]) for r in rows]


@pytest.fixture(scope="module")
def long_recording(asterisk_rows) -> tuple[np.ndarray, list[str]]:
    """The first 64 asterisk-en prompts, 0.8 s of silence after each: (audio, their transcripts)."""
    gap = np.zeros(int(PAUSE * SAMPLE_RATE), np.float32)
    audio = np.concatenate([part for r in asterisk_rows[:N_CLIPS] for part in (load_audio(r["audio"]), gap)])
    assert len(audio) / SAMPLE_RATE >= 300
    return audio, [r["text"] for r in asterisk_rows[:N_CLIPS]]


def openai_model(ours: Whisper, tmp_path: Path):
    """openai-whisper's model with our weights (exported) and our alignment heads."""
    import whisper

    export_openai(ours, tmp_path / "export.pt")
    ckpt = torch.load(tmp_path / "export.pt", weights_only=True)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**ckpt["dims"]))
    model.load_state_dict(ckpt["model_state_dict"])
    model.register_buffer("alignment_heads", ours.alignment_heads.to_sparse(), persistent=False)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_en(tiny_en_dir):
    return load_model(tiny_en_dir)


@pytest.fixture(scope="module")
def tiny_en_openai(tiny_en, tmp_path_factory):
    return openai_model(tiny_en, tmp_path_factory.mktemp("openai"))


def _ours(model, audio, **options) -> dict:
    prompt = options.pop("initial_prompt", None)
    opts = TranscribeOptions(decoding=DecodingOptions(prompt=prompt, language=options.pop("language", None)),
                             fallback=FallbackOptions((0.0,)), progress=False, **options)
    return transcribe_long(model, audio, opts)


def _theirs(model, audio, **options) -> dict:
    import whisper

    return whisper.transcribe(model, audio, temperature=0.0, fp16=False, **options)


def _segments(result: dict) -> list[tuple[float, float, str]]:
    """(start, end, text), empty segments left out (we drop them, openai-whisper blanks them)."""
    return [(round(s["start"], 3), round(s["end"], 3), s["text"].strip()) for s in result["segments"]
            if s["text"].strip()]


def _words(result: dict) -> list[dict]:
    return [w for s in result["segments"] if s["text"].strip() for w in s["words"]]


def assert_words_close(ours: dict, theirs: dict, share: float = 0.99, tolerance: float = 0.1) -> None:
    a, b = _words(ours), _words(theirs)
    assert [w["word"] for w in a] == [w["word"] for w in b]
    close = sum(abs(x["start"] - y["start"]) <= tolerance and abs(x["end"] - y["end"]) <= tolerance
                for x, y in zip(a, b))
    print(f"{close} of {len(a)} words within {tolerance} s of openai-whisper's")
    assert len(a) > 0 and close >= share * len(a)


@pytest.fixture(scope="module")
def long_default(tiny_en, long_recording) -> dict:
    return _ours(tiny_en, long_recording[0])


@pytest.mark.shared
def test_long_recording_matches_openai_whisper(tiny_en_openai, long_recording, long_default):
    """Greedy, the text before as prompt (the default): the same segments, times and text."""
    theirs = _theirs(tiny_en_openai, long_recording[0])
    assert len(_segments(long_default)) > 40
    assert _segments(long_default) == _segments(theirs)
    assert long_default["text"] == theirs["text"].strip()


@pytest.mark.shared
def test_long_recording_without_conditioning_with_prompt_and_words(tiny_en, tiny_en_openai, long_recording):
    """Windows independent of each other, an initial prompt, word timestamps (which move the
    seek to the last word's end) and the hallucination-silence rule (which moves it again): the
    same segments, and word times within 0.1 s."""
    options = dict(condition_on_previous_text=False, initial_prompt="Asterisk voicemail prompts.",
                   word_timestamps=True, hallucination_silence_threshold=2.0)
    ours, theirs = _ours(tiny_en, long_recording[0], **options), _theirs(tiny_en_openai, long_recording[0], **options)
    assert _segments(ours) == _segments(theirs)
    assert_words_close(ours, theirs)


@pytest.mark.shared
def test_long_recording_wer_is_that_of_its_clips(tiny_en, long_recording, long_default, asterisk_rows):
    """Transcribed as one recording, the prompts lose at most a point of WER against transcribing
    each clip alone."""
    paths = [r["audio"] for r in asterisk_rows[:N_CLIPS]]
    clips, failed = transcribe_files(tiny_en, paths, TranscribeOptions(decoding=DecodingOptions(
        language="en", without_timestamps=True), progress=False))
    assert not failed
    references = long_recording[1]
    one_by_one = error_rates(references, [r["text"] for r in clips], "en")["wer"]
    whole = error_rates([" ".join(references)], [long_default["text"]], "en")["wer"]
    print(f"tiny.en, {N_CLIPS} asterisk-en prompts: WER {whole:.4f} as one recording, {one_by_one:.4f} one by one")
    assert whole <= one_by_one + 0.01


@pytest.mark.shared
@pytest.mark.parametrize("options", [dict(initial_prompt="Ein Gespräch auf Englisch und Deutsch."),
                                     dict(condition_on_previous_text=False)], ids=["prompt", "independent"])
def test_multilingual_matches_openai_whisper(base_dir, shared_data, tmp_path, options):
    """Multilingual base on English then German, the language detected on the first window."""
    ours_model = load_model(base_dir)
    audio = load_audio(shared_data / "samples/multilingual.mp3")
    ours, theirs = _ours(ours_model, audio, **options), _theirs(openai_model(ours_model, tmp_path), audio, **options)
    assert ours["language"] == theirs["language"] == "en"
    assert _segments(ours) == _segments(theirs)
    assert ours["segments"][-1]["end"] > 50


@pytest.mark.shared
def test_jfk_word_timestamps_and_subtitles_match_openai_whisper(tiny_en, tiny_en_openai, shared_data, tmp_path):
    """A clip under 30 s (the batched path): word times within 0.1 s of openai-whisper's, and
    subtitles cut by width and count, or highlighted, written as its writers write them."""
    from whisper.utils import get_writer

    path = shared_data / "samples/jfk.flac"
    results, _ = transcribe_files(tiny_en, [path], TranscribeOptions(
        decoding=DecodingOptions(language="en"), fallback=FallbackOptions((0.0,)), progress=False, word_timestamps=True))
    theirs = _theirs(tiny_en_openai, load_audio(path), word_timestamps=True)
    assert_words_close(results[0], theirs, share=1.0)
    for ext, lines in (("srt", LineOptions(max_line_width=20, max_line_count=2)),
                       ("vtt", LineOptions(highlight_words=True))):
        write_results(results, tmp_path / f"ours.{ext}", lines)
        get_writer(ext, str(tmp_path))(results[0], str(tmp_path / "jfk.flac"), **lines.__dict__)
        assert (tmp_path / f"ours.{ext}").read_text() == (tmp_path / f"jfk.{ext}").read_text()


@pytest.mark.shared
def test_silence_room_tone_and_noise_give_no_words(tiny_en, shared_data):
    """A minute each of digital silence, quiet room tone and the test noises: no text, so no window
    can repeat the one before."""
    minute = 60 * SAMPLE_RATE
    room = load_audio(shared_data / "noise/train/bg_noise9.flac")
    room = 10 ** (-50 / 20) * room / np.abs(room).max()  # peak at -50 dBFS
    noises = np.concatenate([load_audio(p) for p in sorted((shared_data / "noise/test").glob("*.flac"))])
    for name, audio in (("silence", np.zeros(minute, np.float32)), ("room tone", np.resize(room, minute)),
                        ("noise/test", np.resize(noises, minute))):
        result = transcribe_long(tiny_en, audio.astype(np.float32), TranscribeOptions(progress=False))
        texts = [s["text"] for s in result["segments"]]
        assert all(a != b for a, b in zip(texts, texts[1:])), (name, texts)
        assert result["text"] == "", (name, texts)


@pytest.mark.shared
def test_cli_long_recording_in_evaluate_and_subtitles(tiny_en_dir, asterisk_rows, tmp_path, capsys):
    """The issue's crash: 28 prompts (3 minutes, far over 220 tokens of earlier text) in an
    evaluate manifest beside two short clips, and as srt with word timestamps cut into lines."""
    gap = np.zeros(int(PAUSE * SAMPLE_RATE), np.float32)
    prompts = asterisk_rows[:28]
    audio = np.concatenate([x for r in prompts for x in (load_audio(r["audio"]), gap)])
    sf.write(tmp_path / "long.flac", audio, SAMPLE_RATE)
    rows = [{"audio": "long.flac", "text": " ".join(r["text"] for r in prompts)}]
    rows += [{"audio": str(r["audio"]), "text": r["text"]} for r in asterisk_rows[28:30]]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = transcribe.main(["--model_path", str(tiny_en_dir), "--mode", "evaluate", "--manifest",
                            str(tmp_path / "m.jsonl"), "--output_file", str(tmp_path / "eval.json")])
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["wer"] < 0.05 and len(report["utterances"][0]["hypothesis"].split()) > 150, report

    code = transcribe.main(["--model_path", str(tiny_en_dir), "--audio_path", str(tmp_path / "long.flac"),
                            "--word_timestamps", "--max_line_width", "42", "--max_line_count", "2",
                            "--output_file", str(tmp_path / "long.srt")])
    assert code == 0, capsys.readouterr().err
    cues = (tmp_path / "long.srt").read_text().strip().split("\n\n")
    lines = [cue.splitlines()[2:] for cue in cues]
    assert len(cues) > 20 and all(1 <= len(c) <= 2 for c in lines)
    assert max(len(line) for c in lines for line in c) <= 42
    h, m, sec = cues[-1].splitlines()[1].split(" --> ")[1].replace(",", ".").split(":")
    assert len(audio) / SAMPLE_RATE - 3 < 3600 * int(h) + 60 * int(m) + float(sec)  # the last words are there
