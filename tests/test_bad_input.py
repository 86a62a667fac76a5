"""The bad-input matrix (issue 22): in every mode, bad input costs only itself. On the folder of
tests/bad_input.py (good clips beside every kind of bad audio and listing) each mode must give
every good clip the result a clean run gives it, name every bad item exactly once, print no
traceback and exit with its documented status.

Default tests: the listings, names, NaN detection, writability and messages, and the modes on a
random model (cheap, and just as strict about which clip costs what). `shared`: the modes again
with the real tiny.en, as a user runs them."""
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input import ASTERISK, ODD_NAME, Matrix, build, train_listing

from whisper_scratch.audio.io import AudioError, list_audio, load_audio, printable
from whisper_scratch.cli import export, train, transcribe
from whisper_scratch.data.manifest import ManifestError, read_manifest
from whisper_scratch.evaluation.metrics import error_rates
from whisper_scratch.inference import writers
from whisper_scratch.model.checkpoint import save_model
from whisper_scratch.model.whisper import ModelDimensions, Whisper
from whisper_scratch.training import encoder_cache, loop

# Whisper's English vocabulary over 3 s windows: every asterisk clip fits one window.
DIMS = ModelDimensions(80, 150, 64, 2, 1, 51864, 48, 64, 2, 1)
TRAIN = ["--audio-ctx", "150", "--num-workers", "0", "--language", "en", "--no-eval-before", "--eval-every", "1000",
         "--save-every", "1000", "--log-every", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> Matrix:
    return build(tmp_path_factory.mktemp("bad_input"))


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_model(Whisper(DIMS), tmp_path_factory.mktemp("model") / "random.pt")


@pytest.fixture(params=["random", pytest.param("tiny.en", marks=pytest.mark.shared)])
def model(request, random_model) -> Path:
    return random_model if request.param == "random" else request.getfixturevalue("tiny_en_dir")


def run(capsys, main, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def transcribe_to(capsys, model: Path, target: Path, *args) -> tuple[int, str, str]:
    """transcribe.py into `target`. One sample per fallback temperature: a random model falls back
    on every clip, and sampling (where a NaN clip used to fail its whole batch) is still used."""
    return run(capsys, transcribe.main, "--model_path", model, *args, "--best_of", "1", "--output_file", target)


def one_error_line(err: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(n in lines[0] for n in needles), (needles, lines[0])
    return lines[0]


def named_once(text: str, paths) -> None:
    """Each path appears on exactly one line of `text` (as it prints: odd bytes as \\xNN)."""
    for path in paths:
        lines = [line for line in text.splitlines() if printable(str(path)) in line]
        assert len(lines) == 1, f"{path} named {len(lines)} times in:\n{text}"


def texts(report: Path) -> dict[str, str]:
    """file name -> text of a transcript JSON (results) or evaluation report (utterances)."""
    data = json.loads(report.read_text(encoding="utf-8"))
    rows = data["utterances"] if isinstance(data, dict) else data
    return {Path(r["audio"]).name: r.get("hypothesis", r.get("text")) for r in rows}


def scratch_model(folder: Path) -> Path:
    """A model trained from scratch (a vocabulary of its own) whose tokenizer files were not copied."""
    save_model(Whisper(ModelDimensions(80, 150, 64, 2, 1, 1100, 48, 64, 2, 1)), folder / "scratch" / "model.pt")
    return folder / "scratch"


def in_clips(matrix: Matrix) -> list[Path]:
    """The bad audio that a folder listing finds (all but the missing file)."""
    return [p for kind, p in matrix.bad.items() if kind != "missing"]


# ================================================================ the modes

def test_directory(capsys, matrix, model, tmp_path):
    clean, mixed = tmp_path / "clean.json", tmp_path / "mixed.json"
    assert transcribe_to(capsys, model, clean, "--mode", "directory", "--audio_dir", matrix.clean)[0] == 0
    code, _, err = transcribe_to(capsys, model, mixed, "--mode", "directory", "--audio_dir", matrix.clips)
    assert code == 1
    assert texts(mixed) == texts(clean) and len(texts(clean)) == len(matrix.good)
    named_once(err, in_clips(matrix))
    assert f"{len(in_clips(matrix))} of {len(in_clips(matrix)) + len(matrix.good)} audio files" in err


def test_batch(capsys, matrix, model, tmp_path):
    clean, mixed = tmp_path / "clean.json", tmp_path / "mixed.json"
    assert transcribe_to(capsys, model, clean, "--mode", "batch", "--manifest", matrix.clean_listing,
                         "--audio_path", matrix.odd(matrix.clean))[0] == 0
    code, _, err = transcribe_to(capsys, model, mixed, "--mode", "batch", "--manifest", matrix.listing,
                                 "--audio_path", matrix.odd(matrix.clips))
    assert code == 1 and texts(mixed) == texts(clean) and printable(ODD_NAME) in texts(mixed)
    named_once(err, matrix.bad.values())


def test_evaluate(capsys, matrix, model, tmp_path):
    clean, mixed = tmp_path / "clean.json", tmp_path / "mixed.json"
    code, _, clean_err = transcribe_to(capsys, model, clean, "--mode", "evaluate", "--manifest", matrix.clean_listing)
    assert code == 0
    code, out, err = transcribe_to(capsys, model, mixed, "--mode", "evaluate", "--manifest", matrix.listing)
    assert code == 1
    hypotheses = texts(mixed)
    assert {name: hypotheses[name] for name in texts(clean)} == texts(clean)
    assert all(hypotheses[p.name] == "" for p in matrix.bad.values())
    named_once(err, matrix.bad.values())
    for stderr in (clean_err, err):  # the row without a reference is warned about, by name
        warnings = [line for line in stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and "no-reference.flac" in warnings[0] and "empty reference" in warnings[0]
    # The WER is the clean run's hypotheses scored with an empty one for each bad clip.
    rows = [json.loads(line) for line in matrix.listing.read_text().splitlines()]
    expected = error_rates([r["text"] for r in rows], [hypotheses[Path(r["audio"]).name] for r in rows], "en")
    report = json.loads(mixed.read_text())
    assert report["wer"] == pytest.approx(expected["wer"]) and f"WER {expected['wer'] * 100:.2f}%" in out


def test_single(capsys, matrix, model):
    """The good clip with the odd name is transcribed as the same clip with a plain name; every bad
    file is one line, found before the model loads (the model path here does not even exist)."""
    code, plain, _ = run(capsys, transcribe.main, "--model_path", model, "--audio_path",
                         ASTERISK / "audio/conf-full.flac")
    assert code == 0
    code, odd, _ = run(capsys, transcribe.main, "--model_path", model, "--audio_path", matrix.odd(matrix.clips))
    assert code == 0 and odd == plain
    for path in matrix.bad.values():
        code, out, err = run(capsys, transcribe.main, "--model_path", "no-such-model.pt", "--audio_path", path)
        assert code == 1 and out == ""
        one_error_line(err, str(path))


@pytest.mark.shared
def test_batched(capsys, matrix, tiny_en_dir, tmp_path):
    """--batched (Silero VAD, a test requirement) on the same folder."""
    clean, mixed = tmp_path / "clean.json", tmp_path / "mixed.json"
    for folder, target in ((matrix.clean, clean), (matrix.clips, mixed)):
        code, _, err = transcribe_to(capsys, tiny_en_dir, target, "--mode", "directory", "--batched", "--audio_dir",
                                     folder)
        assert code == (0 if folder == matrix.clean else 1)
    assert texts(mixed) == texts(clean) and len(texts(clean)) == len(matrix.good)
    named_once(err, in_clips(matrix))


def test_train(capsys, matrix, random_model, tmp_path):
    """Good clips train (finite loss at every step); each bad one is named once, NaN clip included,
    and no step is lost to it. 27 rows in batches of 9: the 3 steps meet every clip once."""
    out = tmp_path / "run"
    code, stdout, stderr = run(capsys, train.main, "--train-manifest", train_listing(matrix), "--eval-manifest",
                               matrix.clean_listing, "--init", random_model, "--train-batch-size", "9",
                               "--max-steps", "3", "--output-dir", out, *TRAIN)
    assert code == 0
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]
    assert "non-finite" not in stdout + stderr
    named_once(stdout + stderr, [*matrix.bad.values(), "transcript too long: "])


def test_a_non_finite_step_names_its_clips(capsys, matrix, random_model, tmp_path, monkeypatch):
    """A loss that overflows with finite audio (fp16, say) still skips its step, and says on which clips."""
    live = loop.micro_batch_loss
    calls = iter(range(10**6))
    monkeypatch.setattr(loop, "micro_batch_loss", lambda *a: live(*a) * (float("nan") if next(calls) == 0 else 1))
    code, stdout, _ = run(capsys, train.main, "--train-manifest", matrix.clean_listing, "--eval-manifest",
                          matrix.clean_listing, "--init", random_model, "--train-batch-size", "3", "--max-steps", "1",
                          "--output-dir", tmp_path / "run", *TRAIN)
    (warning,) = [line for line in stdout.splitlines() if "non-finite loss" in line]
    trained = [name for name, text in matrix.good.items() if text and name != ODD_NAME]  # training drops ""
    assert code == 0 and all(f"{matrix.clean / name}" in warning for name in trained)


def test_export(capsys, random_model, tmp_path):
    """Each bad checkpoint or target is one line and exit 2; the good model exports as it does alone."""
    clean = tmp_path / "clean.pt"
    assert run(capsys, export.main, random_model, "--to", "openai", clean)[0] == 0
    random_bytes, cut, full = tmp_path / "random.pt", tmp_path / "cut.pt", tmp_path / "full"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(5000))
    cut.write_bytes(random_model.read_bytes()[:20000])
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    for source, target, needles in ((random_bytes, tmp_path / "a.pt", ("random.pt", "not a PyTorch checkpoint")),
                                    (cut, tmp_path / "b.pt", ("cut.pt", "damaged")),
                                    (scratch_model(tmp_path), tmp_path / "c", ("scratch", "not Whisper's", "tokenizer")),
                                    (random_model, full, (f"{full} exists and is not empty",))):
        code, _, err = run(capsys, export.main, source, "--to", "openai" if target.suffix else "hf", target)
        assert code == 2
        one_error_line(err, *needles)
    good = tmp_path / "good.pt"
    assert run(capsys, export.main, random_model, "--to", "openai", good)[0] == 0
    assert good.read_bytes() == clean.read_bytes()


# ================================================================ names, NaN, listings

def test_odd_names_and_links_are_read_or_named(matrix):
    """A name that is not UTF-8 reads (soundfile alone cannot open it); links that loop or dangle
    are listed, so that reading them names them."""
    assert load_audio(matrix.odd(matrix.clips)).shape == load_audio(ASTERISK / "audio/conf-full.flac").shape
    found = list_audio(matrix.clips)
    assert matrix.bad["loop"] in found and matrix.bad["dangling"] in found
    with pytest.raises(AudioError, match=r"^symbolic link loop: .*loop\.flac"):
        load_audio(matrix.bad["loop"])
    with pytest.raises(AudioError, match=r"^broken symbolic link: .*dangling\.flac points to nowhere\.flac"):
        load_audio(matrix.bad["dangling"])
    assert printable(ODD_NAME) == "caf\\xe9-\\xff.flac"


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_non_finite_samples_are_refused_at_loading(matrix, kind):
    with pytest.raises(AudioError, match=rf"^corrupt audio: .*{kind}\.wav has NaN or infinite samples"):
        load_audio(matrix.bad[kind])


def test_listings_not_in_utf8_name_file_line_and_fix(capsys, matrix, random_model, tmp_path):
    latin1 = matrix.listings["latin1_csv"]
    code, _, err = run(capsys, transcribe.main, "--model_path", random_model, "--mode", "evaluate", "--manifest",
                       latin1, "--output_file", tmp_path / "e.json")
    assert code == 2
    one_error_line(err, f"{latin1} is not UTF-8 at line 3", "iconv -f latin1 -t utf-8")
    tsv = matrix.listings["latin1_train_tsv"]
    line = next(n for n, text in enumerate(tsv.read_bytes().split(b"\n"), 1) if not text.isascii())
    code, _, err = run(capsys, train.main, "--local-data-dir", tsv.parent, "--init", random_model,
                       "--output-dir", tmp_path / "run", *TRAIN)
    assert code == 2
    one_error_line(err, f"{tsv} is not UTF-8 at line {line}", "iconv")


def test_listing_headers(matrix):
    """A byte-order mark is no part of the first column's name; a .tsv is told Common Voice's columns."""
    rows = read_manifest(matrix.listings["bom_csv"])
    assert [r.audio.name for r in rows] == ["hello-world.flac", "no-reference.flac"] and rows[1].text == "Un café."
    with pytest.raises(ManifestError, match=r"no-sentence\.tsv:1: header must have 'path' and 'sentence' "
                                            r"\(Common Voice\)"):
        read_manifest(matrix.listings["no_sentence_tsv"])


# ================================================================ outputs that cannot be written

@pytest.mark.parametrize("mode", ["directory", "evaluate"])
def test_unwritable_output_is_found_before_any_work(capsys, matrix, tmp_path, mode):
    """The model path does not exist: the output is checked first, so its error is the one reported."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    source = ("--audio_dir", matrix.clean) if mode == "directory" else ("--manifest", matrix.clean_listing)
    for target in (blocker / "sub" / "out.json", Path("/sys/out.json")):
        if target.parts[1] == "sys" and not Path("/sys").is_dir():
            continue
        code, out, err = run(capsys, transcribe.main, "--model_path", tmp_path / "none.pt", "--mode", mode, *source,
                             "--output_file", target)
        assert code == 2 and out == ""
        one_error_line(err, f"--output_file {target}")


@pytest.mark.parametrize("mode", ["directory", "evaluate"])
def test_output_that_fails_late_is_printed_instead(capsys, matrix, random_model, tmp_path, monkeypatch, mode):
    """The folder goes read-only while decoding: the error names the output (not the temporary file
    beside it) and the transcripts, or the hypotheses and the WER, still reach stdout."""
    target = tmp_path / "out.json"

    def refuse(path, text):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".out.json.x1y2.tmp"))

    monkeypatch.setattr(writers, "write_text", refuse)
    source = ("--audio_dir", matrix.clean) if mode == "directory" else ("--manifest", matrix.clean_listing)
    code, out, err = run(capsys, transcribe.main, "--model_path", random_model, "--mode", mode, *source,
                         "--output_file", target, "--no_fallback")
    assert code == 2
    # The progress bar came before: the error is the last line, and the only one.
    line = one_error_line(err.splitlines()[-1], f"cannot write {target}: Permission denied")
    assert ".out.json.x1y2.tmp" not in line and err.count("error:") == 1
    printed = dict(row.split("\t") for row in out.splitlines() if "\t" in row)
    assert len(printed) == len(matrix.good) - (mode == "evaluate")  # evaluate's listing has no ODD_NAME
    assert mode == "directory" or "WER " in out


def test_outputs_get_the_umask_permissions(tmp_path):
    target = tmp_path / "t.txt"
    writers.write_results([{"audio": "a.flac", "text": "hi", "segments": []}], target)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


# ================================================================ messages

def test_bad_model_files_are_named_for_what_they_are(capsys, tmp_path):
    audio = ASTERISK / "audio/hello-world.flac"
    random_bytes = tmp_path / "x.pt"
    random_bytes.write_bytes(np.random.default_rng(1).bytes(3000))
    code, _, err = run(capsys, transcribe.main, "--model_path", random_bytes, "--audio_path", audio)
    assert code == 2
    line = one_error_line(err, "x.pt", "not a PyTorch checkpoint, or a damaged one")
    assert "pickles" not in line
    code, _, err = run(capsys, transcribe.main, "--model_path", scratch_model(tmp_path), "--audio_path", audio)
    assert code == 2
    one_error_line(err, "vocabulary has 1100 tokens, not Whisper's", "tokenizer")


def test_unknown_language_on_an_english_model(capsys, random_model):
    code, _, err = run(capsys, transcribe.main, "--model_path", random_model, "--audio_path",
                       ASTERISK / "audio/hello-world.flac", "--language", "xx")
    assert code == 2
    one_error_line(err, "--language xx: not a language code")


def test_train_run_folder_problems_come_first(capsys, tmp_path, random_model):
    """Checked before any data is read: the listing named here does not even exist."""
    base = ["--train-manifest", tmp_path / "none.jsonl", "--init", random_model, *TRAIN]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run(capsys, train.main, *base, "--output-dir", blocker)
    assert code == 2
    one_error_line(err, f"--output-dir {blocker}", "is a file")
    out = tmp_path / "run"
    (out / "last").mkdir(parents=True)
    torch.save({"step": 3, "weights": torch.zeros(5000)}, out / "last/train_state.pt")
    (out / "last/train_state.pt").write_bytes((out / "last/train_state.pt").read_bytes()[:3000])
    (out / "best").mkdir()
    save_model(Whisper(DIMS), out / "best")
    code, _, err = run(capsys, train.main, *base, "--output-dir", out, "--resume")
    assert code == 2
    one_error_line(err, "train_state.pt is damaged", f"--init {out / 'best'}", "start again")


def test_ctrl_c_while_caching_the_encoder(capsys, matrix, random_model, tmp_path, monkeypatch):
    """Ctrl-C after the first batch was encoded: no half cache left, one line, 130."""
    def interrupted(batches, **_):
        yield next(iter(batches))
        raise KeyboardInterrupt

    monkeypatch.setattr(encoder_cache, "tqdm", interrupted)
    out = tmp_path / "run"
    try:
        code, stdout, stderr = run(capsys, train.main, "--train-manifest", matrix.clean_listing, "--eval-manifest",
                                   matrix.clean_listing, "--init", random_model, "--freeze-encoder",
                                   "--cache-encoder", "--eval-batch-size", "2", "--output-dir", out, *TRAIN)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while caching escaped train.main as a KeyboardInterrupt")
    assert code == 130 and stderr.splitlines()[-1] == "interrupted; nothing was saved yet: run the command again"
    assert "Traceback" not in stderr and not list(out.rglob("*.tmp.npy"))
