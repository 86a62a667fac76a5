"""Evaluation under noise (whisper_scratch/evaluation/noisy.py, transcribe.py --noise_dir, train.py
--eval-noise-dir): the mix has the SNR asked for, a clip always gets the same noise, two
evaluations are identical, and a dual-attention model before training transcribes noisy audio
exactly as the plain model does.

Default tests use the clips in tests/data and noise made here; `shared` tests use the real tiny.en
and the recorded noise of ../shared/data/noise."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_scratch.audio.geometry import SAMPLE_RATE
from whisper_scratch.audio.io import load_audio
from whisper_scratch.audio.noise import NoiseMixer, clip_keys, pink_noise, white_noise
from whisper_scratch.cli import train, transcribe
from whisper_scratch.data.manifest import read_manifest
from whisper_scratch.evaluation.noisy import NoisyRun, parse_snrs, score_run, transcribe_noisy
from whisper_scratch.inference.options import TranscribeOptions
from whisper_scratch.inference.transcriber import transcribe_files
from whisper_scratch.model.checkpoint import load_model

REPO = Path(__file__).resolve().parents[1]


ASTERISK = REPO / "tests/data/asterisk16"
SNRS = (20.0, 10.0, 5.0, 0.0, -5.0)


@pytest.fixture()
def noise_dir(tmp_path) -> Path:
    """Two noise recordings made here: 1 s of white noise (shorter than most clips: looped) and
    8 s of loud pink noise at 8 kHz (resampled on load, cropped)."""
    folder = tmp_path / "noise"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(folder / "white.wav", 0.05 * white_noise(SAMPLE_RATE, rng), SAMPLE_RATE)
    sf.write(folder / "sub" / "pink.flac", 0.6 * pink_noise(8 * 8000, rng) / 3, 8000)
    return folder


def measured_snr(speech: np.ndarray, noise: np.ndarray, mixed: np.ndarray) -> tuple[float, float]:
    """(SNR in dB, a) of `mixed` = a·speech + b·noise, a and b found by least squares: a < 1 when
    the mix was scaled down to avoid clipping."""
    a, b = np.linalg.lstsq(np.stack([speech, noise], axis=1).astype(np.float64), mixed.astype(np.float64),
                           rcond=None)[0]
    power = [np.mean(np.square(x, dtype=np.float64)) for x in (a * speech, b * noise)]
    return float(10 * np.log10(power[0] / power[1])), float(a)


def test_parse_snrs():
    assert parse_snrs("20,10,5,0") == (20.0, 10.0, 5.0, 0.0)
    assert parse_snrs(" -5 , 2.5,-5") == (-5.0, 2.5)
    for bad in ("20,,10", "loud", "inf"):
        with pytest.raises(ValueError, match="SNR"):
            parse_snrs(bad)


@pytest.mark.parametrize("snr", SNRS)
def test_mix_has_the_requested_snr(noise_dir, snr):
    """On real clips, at every SNR, within 0.1 dB, also where the mix had to be scaled down."""
    mixer = NoiseMixer(noise_dir)
    rows = read_manifest(ASTERISK / "manifest.jsonl")
    keys = clip_keys([r.audio for r in rows])
    scaled = 0
    for row in rows:
        speech = load_audio(row.audio)
        mixed, segment = mixer.mix(speech, keys[row.audio], snr)
        _, noise = mixer.pick(keys[row.audio], len(speech))
        assert mixed.dtype == np.float32 and mixed.shape == speech.shape and np.abs(mixed).max() <= 1.0
        measured, gain = measured_snr(speech, noise, mixed)
        assert abs(measured - snr) < 0.1, (row.audio, segment, measured)
        scaled += gain < 0.999
    if snr == -5.0:
        assert scaled > 0  # the loud pink noise forced a rescale somewhere: that case is covered


def test_each_clip_always_gets_the_same_noise(noise_dir, tmp_path):
    """Fresh mixers, another clip order, another location of the data: the same segment per clip,
    the same at every SNR (only the gain changes); different clips get different segments."""
    rows = read_manifest(ASTERISK / "manifest.jsonl")
    paths = [r.audio for r in rows]
    first = {p: NoiseMixer(noise_dir).pick(k, 40000) for p, k in clip_keys(paths).items()}
    second = {p: NoiseMixer(noise_dir).pick(k, 40000) for p, k in clip_keys(paths[::-1]).items()}
    assert all(first[p][0] == second[p][0] and np.array_equal(first[p][1], second[p][1]) for p in paths)
    assert len({(s.file, s.start) for s, _ in first.values()}) == len(paths)
    assert {s.file for s, _ in first.values()} == {"white.wav", "sub/pink.flac"}

    moved = tmp_path / "moved"
    shutil.copytree(ASTERISK, moved)
    moved_keys = clip_keys([r.audio for r in read_manifest(moved / "manifest.jsonl")])
    assert sorted(moved_keys.values()) == sorted(clip_keys(paths).values()) == sorted(p.name for p in paths)

    mixer = NoiseMixer(noise_dir)
    speech = load_audio(paths[0])
    key = clip_keys(paths)[paths[0]]
    at10, seg10 = mixer.mix(speech, key, 10.0)
    at0, seg0 = mixer.mix(speech, key, 0.0)
    assert seg10 == seg0
    assert np.abs(at0).max() < 1.0  # not rescaled, so the noise is exactly the difference
    assert np.allclose(at0 - speech, 10 ** 0.5 * (at10 - speech), atol=1e-6)  # 10 dB more of the same noise
    other = NoiseMixer(noise_dir, seed=1).pick(key, 40000)[0]
    assert other != first[paths[0]][0]


def test_noise_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files in the noise folder"):
        NoiseMixer(tmp_path / "empty")
    with pytest.raises(ValueError, match="noise folder not found"):
        NoiseMixer(tmp_path / "nowhere")


@pytest.mark.parametrize("args, needle", [
    (["--mode", "evaluate", "--manifest", "m.jsonl", "--snr", "10"], "--snr needs --noise_dir"),
    (["--mode", "batch", "--audio_dir", ".", "--noise_dir", "."], "--noise_dir is for --mode evaluate"),
    (["--mode", "evaluate", "--manifest", "m.jsonl", "--noise_dir", ".", "--snr", "10,x"], "'x' is not a number"),
])
def test_cli_noise_argument_errors(capsys, args, needle):
    assert transcribe.main(args) == transcribe.USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and len(err.splitlines()) == 1


def test_cli_bad_noise_folder_fails_before_the_model_loads(capsys, tmp_path):
    (tmp_path / "noise").mkdir()
    code = transcribe.main(["--model_path", str(tmp_path / "no-model"), "--mode", "evaluate", "--manifest",
                            str(ASTERISK / "manifest.jsonl"), "--noise_dir", str(tmp_path / "noise")])
    assert code == transcribe.USAGE
    err = capsys.readouterr().err
    assert "error: --noise_dir: no audio files in the noise folder" in err and "no-model" not in err


def test_trainer_evaluates_under_noise(tmp_path, noise_dir):
    """--eval-noise-dir: WER/CER at each --eval-snr in metrics.jsonl, before and after training,
    on the same noisy clips both times (the curves compare like with like)."""
    out = tmp_path / "run"
    args = ["--train-manifest", str(ASTERISK / "manifest.jsonl"), "--eval-manifest", str(ASTERISK / "manifest.jsonl"),
            "--whisper-size", "tiny", "--audio-ctx", "150", "--text-ctx", "48", "--width", "64", "--heads", "2",
            "--layers", "1", "--vocab-size", "300", "--num-workers", "0", "--language", "en", "--max-steps", "2",
            "--train-batch-size", "4", "--eval-every", "1000", "--max-eval-utterances", "4", "--output-dir", str(out),
            "--eval-noise-dir", str(noise_dir), "--eval-snr", "10,-5"]
    assert train.main(args) == 0
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval_wer" in line]
    assert len(evals) == 2
    for record in evals:
        assert {"eval_wer_snr10", "eval_cer_snr10", "eval_wer_snr-5", "eval_cer_snr-5"} <= record.keys()
    assert (out / "training_curves.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        train.parse_args(["--eval-snr", "ten"])


# ---------------------------------------------------------------- real model, recorded noise

def small_manifest(shared_data: Path, path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in (shared_data / "asterisk-en/manifest.jsonl").read_text().splitlines()]
    rows = [dict(r, audio=str(shared_data / "asterisk-en" / r["audio"])) for r in rows if 1.5 < r["duration"] < 5][:n]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.mark.shared
def test_noisy_evaluation_repeats_exactly(capsys, tmp_path, tiny_en_dir, shared_data):
    """Two runs of transcribe.py --noise_dir: identical JSON (noise segments, transcripts, WER/CER)
    and table; the clean condition is the plain evaluation's."""
    manifest = tmp_path / "eval.jsonl"
    small_manifest(shared_data, manifest, 5)
    common = ["--model_path", str(tiny_en_dir), "--mode", "evaluate", "--manifest", str(manifest)]
    noisy = ["--noise_dir", str(shared_data / "noise/test"), "--snr", "10,0,-5"]
    reports, tables = [], []
    for name in ("a", "b"):
        assert transcribe.main([*common, *noisy, "--output_file", str(tmp_path / f"{name}.json")]) == 0
        tables.append(capsys.readouterr().out)
        reports.append((tmp_path / f"{name}.json").read_text())
    assert reports[0] == reports[1] and tables[0] == tables[1]
    report = json.loads(reports[0])
    assert [c["condition"] for c in report["conditions"]] == ["clean", "10 dB", "0 dB", "-5 dB"]
    for line, c in zip(tables[0].splitlines()[2:], report["conditions"]):
        assert line.split() == [*c["condition"].split(), f"{100 * c['wer']:.2f}%", f"{100 * c['cer']:.2f}%"]
    noisy_utts = [u for c in report["conditions"][1:] for u in c["utterances"]]
    assert all(u["noise_file"] and u["noise_start_s"] >= 0 for u in noisy_utts)
    assert len({(u["audio"], u["noise_file"], u["noise_start_s"]) for u in noisy_utts}) == 5  # one segment per clip
    assert transcribe.main([*common, "--output_file", str(tmp_path / "plain.json")]) == 0
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert (plain["wer"], plain["cer"], plain["utterances"]) == (report["wer"], report["cer"], report["utterances"])
    assert report["conditions"][0]["utterances"] == plain["utterances"]


@pytest.mark.shared
def test_dual_attention_before_training_transcribes_like_plain_at_every_snr(tmp_path, tiny_en_dir, shared_data):
    """The noise branch starts as an exact zero: the dual model's transcripts equal the plain
    model's, clean and at 20, 10, 5, 0 and -5 dB, with the CLI's default decoding (fallback
    included)."""
    manifest = tmp_path / "eval.jsonl"
    small_manifest(shared_data, manifest, 4)
    rows = read_manifest(manifest)
    paths = [r.audio for r in rows]
    mixer = NoiseMixer(shared_data / "noise/test")
    opts = TranscribeOptions(batch_size=4, progress=False)
    texts = {}
    for dual in (False, True):
        model = load_model(tiny_en_dir, dual_attention=dual)
        assert model.dual_attention == dual
        runs = [NoisyRun(None, *transcribe_files(model, paths, opts)),
                *transcribe_noisy(model, paths, opts, None, mixer, SNRS)]
        texts[dual] = [[u["hypothesis"] for u in score_run(run, rows, "en").utterances] for run in runs]
    assert texts[True] == texts[False]
    assert len({tuple(t) for t in texts[False]}) > 1  # the noise changed some transcripts
