"""Voice activity detection (whisper_scratch/inference/vad.py) and batched long-form transcription
(whisper_scratch/inference/batched.py, transcribe.py --batched).

Default tests: the chunk plan and the time mapping, the VAD's block-wise run, loading errors and
the missing-package line. `shared` tests: our Silero network against the silero-vad package's own
TorchScript model, our interval rules against faster-whisper's, the VAD on real speech, digital
silence and real noise, and tiny.en on a 5-minute recording built from asterisk-en clips."""
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from whisper_scratch.audio.geometry import SAMPLE_RATE
from whisper_scratch.audio.io import load_audio
from whisper_scratch.cli import transcribe
from whisper_scratch.inference import vad as vad_module
from whisper_scratch.inference.batched import SEAM_TOLERANCE, Chunk, chunk_speech
from whisper_scratch.inference.vad import (
    SILERO_NAMES,
    WINDOW,
    SileroVAD,
    VadOptions,
    VadUnavailable,
    detect_speech,
    load_silero_vad,
    silero_weights_path,
    speech_intervals,
    speech_probabilities,
)
from whisper_scratch.model.formats import CheckpointError

REPO = Path(__file__).resolve().parents[1]


SR = SAMPLE_RATE


# --- chunk plan and time mapping --------------------------------------------------------------

def test_chunks_hold_every_speech_sample_once_in_order_and_fit_the_window():
    intervals = [(0, 5 * SR), (7 * SR, 20 * SR), (21 * SR, 95 * SR), (100 * SR, 101 * SR)]
    chunks = chunk_speech(intervals, 30 * SR)
    assert all(c.n_samples <= 30 * SR for c in chunks)
    pieces = [p for c in chunks for p in c.pieces]
    assert pieces == sorted(pieces)
    joined = []  # pieces cut from one interval meet again
    for start, end in pieces:
        joined[-1:] = [(joined[-1][0], end)] if joined and joined[-1][1] == start else joined[-1:] + [(start, end)]
    assert joined == intervals
    # 5 + 13 s share a chunk; the 74 s interval is cut into 30 + 30 + 14 s; the last 1 s joins that rest.
    assert [c.n_samples / SR for c in chunks] == [18, 30, 30, 15]


def test_chunk_audio_and_rest_follow_the_pieces():
    recording = np.arange(100, dtype=np.float32)
    chunk = Chunk(((10, 20), (50, 55), (80, 90)))
    assert chunk.n_samples == 25
    assert np.array_equal(chunk.audio(recording), np.r_[10:20, 50:55, 80:90])
    assert chunk.after(12).pieces == ((52, 55), (80, 90))
    assert chunk.after(10).pieces == ((50, 55), (80, 90))
    assert np.array_equal(chunk.after(3).audio(recording), chunk.audio(recording)[3:])


def test_times_map_back_to_the_recording():
    # Pieces of 4 s at 10 s and of 6 s at 30 s: chunk times 0-4 and 4-10.
    chunk = Chunk(((10 * SR, 14 * SR), (30 * SR, 36 * SR)))
    exact = lambda spans: chunk.to_recording(spans, tolerance=0)  # noqa: E731
    assert exact([(1.0, 3.5)]) == [(11.0, 13.5)]
    assert exact([(5.0, 9.0)]) == [(31.0, 35.0)]
    assert exact([(2.0, 6.0)]) == [(12.0, 32.0)]  # a span over the seam covers the cut silence
    assert exact([(4.0, 4.0)]) == [(30.0, 30.0)]  # on the seam: a start is the later piece's ...
    assert exact([(1.0, 4.0)]) == [(11.0, 14.0)]  # ... an end the earlier piece's
    assert exact([(-1.0, 12.0)]) == [(10.0, 36.0)]  # clamped to the chunk
    # A boundary that misses the seam by less than the tolerance moves onto it.
    early = 4.0 - SEAM_TOLERANCE / 2
    assert chunk.to_recording([(early, 9.0)]) == [(30.0, 35.0)]
    assert chunk.to_recording([(1.0, 4.0 + SEAM_TOLERANCE / 2)]) == [(11.0, 14.0)]
    # ... but not a span that lies inside one piece, nor one starting well inside the earlier piece.
    assert chunk.to_recording([(3.8, 3.9)]) == [(13.8, 13.9)]
    assert chunk.to_recording([(1.0, 9.0)]) == [(11.0, 35.0)]


def test_a_chunk_whose_decoding_stops_early_is_decoded_again_from_its_last_boundary():
    from whisper_scratch.inference.batched import _rest
    from whisper_scratch.inference.decoding import DecodingResult
    from whisper_scratch.tokenizer import get_tokenizer

    tk = get_tokenizer(False)
    ts, hello, world = tk.timestamp_begin, tk.encode(" hello"), tk.encode(" world")
    chunk = Chunk(((0, 8 * SR), (20 * SR, 32 * SR)))  # 20 s

    def rest(tokens):
        r = DecodingResult("en", list(tokens), "", 0.0, 0.0, 0.0, 1.0)
        return _rest(r, chunk, tk), r.tokens

    # Stopped at the start of a segment (two timestamps at the end), or inside one: seek to 10 s.
    for tail in ([ts + 500], [ts + 500, *world]):
        assert rest([ts, *hello, ts + 500, *tail]) == (Chunk(((22 * SR, 32 * SR),)), [ts, *hello, ts + 500])
    # Finished on a closing timestamp, or without any boundary to seek to: nothing left.
    done = [ts, *hello, ts + 500, ts + 500, *world, ts + 900]
    assert rest(done) == (None, done)
    assert rest([ts, *hello, *world]) == (None, [ts, *hello, *world])
    assert rest([*hello, *world]) == (None, [*hello, *world])


# --- the detector -----------------------------------------------------------------------------

def test_long_recordings_are_encoded_in_blocks_with_the_same_result(monkeypatch):
    torch.manual_seed(0)
    model = SileroVAD().eval()
    audio = np.random.default_rng(0).standard_normal(40 * WINDOW + 100).astype(np.float32) * 0.1
    whole = speech_probabilities(model, audio)
    monkeypatch.setattr(vad_module, "ENCODE_BLOCK", 7)
    assert whole.shape == (41,)
    np.testing.assert_allclose(speech_probabilities(model, audio), whole, atol=1e-6)


def test_missing_package_is_one_line_saying_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(vad_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VadUnavailable, match=r"pip install 'whisper-scratch\[vad\]'"):
        load_silero_vad()
    code = transcribe.main(["--audio_path", str(tmp_path / "a.wav"), "--batched"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--batched" in err and "silero-vad" in err


def test_weights_that_do_not_fit_are_refused_by_name(tmp_path):
    state = {name: torch.zeros(1) for name in SILERO_NAMES}
    del state["conv2.bias"]
    save_file(state, tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError, match=r"missing: encoder\.2\.bias.*wrong shape: stft\.weight"):
        load_silero_vad(tmp_path / "wrong.safetensors")
    save_file({"extra.weight": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="unexpected tensor.*extra.weight"):
        load_silero_vad(tmp_path / "other.safetensors")


# --- shared: real weights, reference implementations, real audio ------------------------------

# The package's TorchScript parameter names -> ours (test only: the oracle's layout).
TORCHSCRIPT_NAMES = {
    "stft.forward_basis_buffer": "stft.weight",
    **{f"encoder.{i}.reparam_conv.{p}": f"encoder.{2 * i}.{p}" for i in range(4) for p in ("weight", "bias")},
    **{f"decoder.rnn.{p}": f"lstm.{p}_l0" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "decoder.decoder.2.weight": "head.weight", "decoder.decoder.2.bias": "head.bias",
}


@pytest.fixture(scope="module")
def detector():
    return load_silero_vad()


@pytest.mark.shared
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_network_matches_the_packages_torchscript_model(shared_data):
    """Our SileroVAD with the weights of silero-vad's own TorchScript model gives that model's
    probabilities, which it computes one 512-sample window at a time with its state carried."""
    scripted = torch.jit.load(str(silero_weights_path().parent / "silero_vad.jit"), map_location="cpu")
    tensors = {**dict(scripted._model.named_parameters()), **dict(scripted._model.named_buffers())}
    ours = SileroVAD()
    ours.load_state_dict({TORCHSCRIPT_NAMES[k]: v.detach() for k, v in tensors.items() if k in TORCHSCRIPT_NAMES})
    ours.eval()
    audio = load_audio(shared_data / "samples/jfk.flac")
    padded = np.pad(audio, (0, -len(audio) % WINDOW))
    scripted.reset_states()
    with torch.no_grad():
        expected = [scripted(torch.from_numpy(padded[i:i + WINDOW])[None], SR).item()
                    for i in range(0, len(padded), WINDOW)]
    got = speech_probabilities(ours, audio)
    assert len(got) == len(expected) == 344
    # float32 with a different summation order (the LSTM over the sequence against one cell stepped
    # window by window, convolution kernels that depend on the thread count): about 1e-5 apart.
    np.testing.assert_allclose(got, expected, atol=5e-5)


def _runs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Speech-like probabilities: runs of speech, silence and in-between values, some runs far
    longer than 30 s so that over-long speech is cut, with and without a silence to cut at."""
    out = []
    while sum(len(r) for r in out) < n:
        kind = rng.choice(["speech", "silence", "between", "long"], p=[0.45, 0.35, 0.15, 0.05])
        length = {"speech": rng.integers(1, 300), "silence": rng.integers(1, 150), "between": rng.integers(1, 10),
                  "long": rng.integers(900, 2500)}[kind]
        low, high = {"speech": (0.5, 1.0), "silence": (0.0, 0.34), "between": (0.34, 0.5), "long": (0.5, 1.0)}[kind]
        out.append(rng.uniform(low, high, length))
    return np.concatenate(out)[:n].astype(np.float32)


@pytest.mark.shared
@pytest.mark.parametrize("opts", [
    VadOptions(),  # faster-whisper's batched mode
    VadOptions(max_speech_duration_s=float("inf"), min_silence_duration_ms=2000),  # its sequential vad_filter
    VadOptions(threshold=0.6, neg_threshold=0.2, min_speech_duration_ms=250, max_speech_duration_s=10,
               min_silence_duration_ms=100, speech_pad_ms=30),
])
def test_speech_intervals_follow_faster_whisper_rules(monkeypatch, opts):
    from faster_whisper import vad as fw_vad

    found = 0
    for seed in range(5):
        probs = _runs(np.random.default_rng(seed), 6000)  # 192 s
        n_samples = (len(probs) - 1) * WINDOW + 100  # faster-whisper pads to len(probs) windows
        monkeypatch.setattr(fw_vad, "get_vad_model", lambda: (lambda padded: probs[:len(padded) // WINDOW]))
        expected = [(s["start"], s["end"]) for s in
                    fw_vad.get_speech_timestamps(np.zeros(n_samples, np.float32), fw_vad.VadOptions(**asdict(opts)))]
        assert speech_intervals(probs, n_samples, opts) == expected, seed
        found += len(expected)
    assert found >= 20


@pytest.mark.shared
def test_vad_finds_the_speech_of_jfk(shared_data, detector):
    audio = load_audio(shared_data / "samples/jfk.flac")
    intervals = detect_speech(detector, audio)
    assert intervals[0][0] < 0.5 * SR and intervals[-1][1] > 10 * SR
    speech = sum(e - s for s, e in intervals) / SR
    assert 8.0 < speech <= 11.0


@pytest.mark.shared
def test_vad_finds_no_speech_in_digital_silence_or_real_noise(shared_data, detector):
    """60 s of zeros and the seven noise/test recordings (cafe, street, ESC-50 clips): no window
    reaches the speech threshold (the highest, about 0.3, is an ESC-50 clip)."""
    assert detect_speech(detector, np.zeros(60 * SR, np.float32)) == []
    clips = sorted((shared_data / "noise/test").iterdir())
    assert len(clips) == 7
    for clip in clips:
        probs = speech_probabilities(detector, load_audio(clip))
        assert probs.max() < VadOptions().threshold, clip
        assert speech_intervals(probs, len(load_audio(clip))) == [], clip


PAUSES = (1.0, 1.5, 2.0, 2.5, 3.0)


def long_recording(shared_data) -> tuple[np.ndarray, list[tuple[float, float]], list[str], list[Path]]:
    """Over 5 minutes: asterisk-en prompts of 2 s or more (every second one, in manifest order)
    with 1-3 s of digital silence before each. Returns the audio, each clip's (start, end) in
    seconds, the clips' transcripts and paths."""
    root = shared_data / "asterisk-en"
    rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["duration"] >= 2.0][::2]
    parts, placed, texts, paths, at = [], [], [], [], 0
    for i, row in enumerate(rows):
        clip = load_audio(root / row["audio"])
        pause = np.zeros(round(PAUSES[i % len(PAUSES)] * SR), np.float32)
        start = at + len(pause)
        parts += [pause, clip]
        placed.append((start / SR, (start + len(clip)) / SR))
        texts.append(row["text"])
        paths.append(root / row["audio"])
        at = start + len(clip)
        if at >= 300 * SR:
            break
    parts.append(np.zeros(SR, np.float32))
    return np.concatenate(parts), placed, texts, paths


@pytest.mark.shared
def test_batched_long_recording_matches_its_clips_and_places_every_segment(shared_data, tiny_en_dir, detector):
    from whisper_scratch.evaluation.metrics import error_rates
    from whisper_scratch.inference.batched import transcribe_batched
    from whisper_scratch.inference.options import TranscribeOptions
    from whisper_scratch.inference.transcriber import transcribe_files
    from whisper_scratch.model.checkpoint import load_model

    model = load_model(tiny_en_dir)
    audio, placed, texts, paths = long_recording(shared_data)
    assert len(audio) >= 300 * SR
    opts = TranscribeOptions(batch_size=8, progress=False)  # timestamps on, temperature fallback

    clips, failed = transcribe_files(model, paths, opts)
    assert not failed
    clips_wer = error_rates([" ".join(texts)], [" ".join(r["text"] for r in clips)], "en")["wer"]
    result = transcribe_batched(model, audio, opts, detector=detector)
    batched_wer = error_rates([" ".join(texts)], [result["text"]], "en")["wer"]
    assert batched_wer <= clips_wer + 0.01, (batched_wer, clips_wer)

    segments = result["segments"]
    assert result["duration"] == round(len(audio) / SR, 3)
    assert all(0 <= s["start"] <= s["end"] <= result["duration"] for s in segments)
    assert all(a["end"] <= b["start"] for a, b in zip(segments, segments[1:]))
    starts = np.array([s["start"] for s in segments])
    for (start, _), text in zip(placed, texts):
        assert np.abs(starts - start).min() <= 0.5, (start, text)
    # Every segment lies in one clip, and the text placed in each clip is that clip's.
    per_clip = [[] for _ in placed]
    for s in segments:
        inside = [k for k, (a, b) in enumerate(placed) if a - 0.5 <= s["start"] and s["end"] <= b + 0.5]
        assert len(inside) == 1, s
        per_clip[inside[0]].append(s["text"])
    placed_wer = error_rates(texts, [" ".join(t) for t in per_clip], "en")["wer"]
    assert placed_wer <= clips_wer + 0.01, (placed_wer, clips_wer)


@pytest.mark.shared
def test_batched_trim_padding_encodes_short_chunks_trimmed_at_the_same_wer(shared_data, tiny_en_dir, detector):
    """`--batched --trim_padding` encodes only the frames of a chunk shorter than the window (and
    of the rest of a chunk decoded again), and costs no words on the recording."""
    from whisper_scratch.evaluation.metrics import error_rates
    from whisper_scratch.inference.batched import transcribe_batched
    from whisper_scratch.inference.options import TranscribeOptions
    from whisper_scratch.model.checkpoint import load_model

    model = load_model(tiny_en_dir)
    audio, _, texts, _ = long_recording(shared_data)
    encoded = []
    embed = model.embed_audio
    model.embed_audio = lambda mel, padding=None: encoded.append(mel.shape[-1]) or embed(mel, padding)
    werr = {}
    for trim in (False, True):
        encoded.clear()
        opts = TranscribeOptions(batch_size=8, progress=False, trim_padding=trim)
        result = transcribe_batched(model, audio, opts, detector=detector)
        werr[trim] = error_rates([" ".join(texts)], [result["text"]], "en")["wer"]
        assert (min(encoded) < 3000) == trim, encoded
    assert werr[True] <= werr[False] + 0.01, werr


@pytest.mark.shared
def test_batched_word_times_map_back_like_the_clip_path(shared_data, tiny_en_dir, detector):
    """jfk.flac is one chunk whose pauses are partly cut out: its words, mapped back, start where
    the plain clip path (the whole recording in one window) puts them."""
    from whisper_scratch.inference.batched import transcribe_batched
    from whisper_scratch.inference.options import TranscribeOptions
    from whisper_scratch.inference.transcriber import transcribe_files
    from whisper_scratch.model.checkpoint import load_model

    model = load_model(tiny_en_dir)
    opts = TranscribeOptions(progress=False, word_timestamps=True)
    path = shared_data / "samples/jfk.flac"
    clip = transcribe_files(model, [path], opts)[0][0]
    batched = transcribe_batched(model, load_audio(path), opts, detector=detector)
    expected = [w for s in clip["segments"] for w in s["words"]]
    got = [w for s in batched["segments"] for w in s["words"]]
    assert [w["word"].strip(".") for w in got] == [w["word"].strip(".") for w in expected]
    assert max(abs(a["start"] - b["start"]) for a, b in zip(got, expected)) <= 0.1
    times = [t for w in got for t in (w["start"], w["end"])]
    assert times == sorted(times) and times[-1] <= batched["duration"]


@pytest.mark.shared
def test_cli_batched_writes_subtitles_and_empty_text_for_silence(shared_data, tiny_en_dir, tmp_path, capsys):
    import soundfile as sf

    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(40 * SR, np.float32), SR)
    srt = tmp_path / "jfk.srt"
    assert transcribe.main(["--model_path", str(tiny_en_dir), "--audio_path", str(shared_data / "samples/jfk.flac"),
                            "--batched", "--output_file", str(srt)]) == 0
    cues = srt.read_text().strip().split("\n\n")
    assert len(cues) >= 2 and cues[0].startswith("1\n00:00:00,")
    assert "fellow Americans" in srt.read_text()
    out = tmp_path / "out.json"
    assert transcribe.main(["--model_path", str(tiny_en_dir), "--mode", "batch", "--batched", "--audio_path",
                            str(shared_data / "samples/jfk.flac"), "--audio_path", str(silence),
                            "--audio_path", str(tmp_path / "missing.wav"), "--output_file", str(out)]) == 1
    jfk, quiet = json.loads(out.read_text())
    assert "ask not what your country can do for you" in jfk["text"].lower()
    assert jfk["segments"] and jfk["duration"] == 11.0
    assert quiet == {"audio": str(silence), "text": "", "language": None, "segments": [], "duration": 40.0}
    assert "missing.wav" in capsys.readouterr().err
