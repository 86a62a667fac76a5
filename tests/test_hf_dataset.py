"""Hugging Face datasets in: the 16 asterisk clips of tests/data saved as a `datasets` DatasetDict
(save_to_disk), as parquet shards and as an audiofolder must give exactly what the same clips give
as JSONL manifests: the same utterances and audio, the same labels, the same training losses and
the same WER."""
import csv
import json
import shutil
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import sentencepiece as spm

from whisper_scratch.audio.io import load_audio
from whisper_scratch.cli import train, transcribe
from whisper_scratch.data.hf_dataset import AUDIO_CACHE, read_dataset
from whisper_scratch.data.manifest import ManifestError
from whisper_scratch.data.splits import DataConfig, DataError, load_utterances
from whisper_scratch.tokenizer import get_tokenizer
from whisper_scratch.training.dataset import SpeechDataset

REPO = Path(__file__).resolve().parents[1]


ASTERISK = REPO / "tests/data/asterisk16"
N_TRAIN = 12  # the first 12 clips train, the last 4 test
FORMATS = ("save_to_disk", "parquet", "audiofolder")
# A from-scratch model small enough for a few steps on a 2-core CPU (3 s windows).
SMALL = ["--whisper-size", "tiny", "--audio-ctx", "150", "--text-ctx", "48", "--width", "64", "--heads", "2",
         "--layers", "1", "--vocab-size", "300", "--num-workers", "0", "--language", "en"]


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """Our audio cache and the `datasets` cache in this test's folder, never in ~/.cache."""
    monkeypatch.setenv("WHISPER_SCRATCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """JSONL manifests of the two splits, and the same rows in each dataset format."""
    root = tmp_path_factory.mktemp("sources")
    rows = [json.loads(line) for line in (ASTERISK / "manifest.jsonl").read_text().splitlines()]
    splits = {"train": rows[:N_TRAIN], "test": rows[N_TRAIN:]}
    out = {}
    for split, chosen in splits.items():
        manifest = root / f"{split}.jsonl"
        manifest.write_text("".join(json.dumps({**r, "audio": str(ASTERISK / r["audio"])}) + "\n" for r in chosen))
        out[split] = manifest

    # How a dataset with an Audio column is stored: the file's bytes and its name.
    dataset = datasets.DatasetDict({split: datasets.Dataset.from_dict({
        "audio": [{"bytes": (ASTERISK / r["audio"]).read_bytes(), "path": Path(r["audio"]).name} for r in chosen],
        "text": [r["text"] for r in chosen],
        "language": [r["language"] for r in chosen],
    }).cast_column("audio", datasets.Audio()) for split, chosen in splits.items()})
    dataset.save_to_disk(root / "save_to_disk")
    for split, part in dataset.items():
        part.to_parquet(root / "parquet" / "data" / f"{split}-00000-of-00001.parquet")

    for split, chosen in splits.items():
        folder = root / "audiofolder" / split
        folder.mkdir(parents=True)
        with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "transcription", "language"])
            for r in chosen:
                shutil.copy(ASTERISK / r["audio"], folder)
                writer.writerow([Path(r["audio"]).name, r["text"], r["language"]])
    for name in FORMATS:
        out[name] = root / name
    return out


def manifest_config(sources, **kw) -> DataConfig:
    return DataConfig(train_manifest=sources["train"], eval_manifest=sources["test"], **kw)


def dataset_config(sources, name, **kw) -> DataConfig:
    return DataConfig(dataset=str(sources[name]), train_split="train", eval_split="test", **kw)


@pytest.mark.parametrize("name", FORMATS)
def test_dataset_gives_the_manifest_utterances_and_audio(sources, name):
    for split in ("train", "eval"):
        want, want_counts = load_utterances(manifest_config(sources), split)
        got, got_counts = load_utterances(dataset_config(sources, name), split)
        assert got_counts == want_counts
        assert [(u.text, u.language) for u in got] == [(u.text, u.language) for u in want]
        assert len(want) == (N_TRAIN if split == "train" else 16 - N_TRAIN)
        for g, w in zip(got, want):
            assert np.array_equal(load_audio(g.audio), load_audio(w.audio)), (g.audio, w.audio)


@pytest.mark.parametrize("name", FORMATS)
def test_dataset_gives_the_manifest_labels_and_features(sources, name):
    tokenizer = get_tokenizer(multilingual=True)
    # Half the labels with timestamps, so both label forms are compared.
    want, got = (SpeechDataset(load_utterances(cfg, "train")[0], tokenizer, n_frames=300, timestamp_share=0.5)
                 for cfg in (manifest_config(sources), dataset_config(sources, name)))
    assert (got.prefix_ids, got.text_ids) == (want.prefix_ids, want.text_ids)
    for i in range(len(want)):
        a, b = got[i], want[i]
        assert a.tokens.equal(b.tokens) and a.labels.equal(b.labels) and a.mel.equal(b.mel)


def test_embedded_audio_is_written_once(sources, tmp_path):
    first = read_dataset(sources["save_to_disk"], "test")
    assert all(u.audio.is_relative_to(tmp_path / "cache") for u in first)
    assert first[0].audio.name.endswith("-" + Path(json.loads(sources["test"].read_text().splitlines()[0])["audio"]).name)
    stamps = [u.audio.stat().st_mtime_ns for u in first]
    again = read_dataset(sources["parquet"], "test")  # the same bytes: the same files, not rewritten
    assert [u.audio for u in again] == [u.audio for u in first]
    assert [u.audio.stat().st_mtime_ns for u in again] == stamps


def test_audiofolder_audio_is_read_in_place(sources):
    rows = read_dataset(sources["audiofolder"], "train")
    assert [u.audio.parent for u in rows] == [sources["audiofolder"] / "train"] * N_TRAIN


def losses_and_wer(out: Path) -> tuple[list, list]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return ([(r["step"], r["loss"]) for r in records if "loss" in r],
            [(r["step"], r["eval_wer"], r["eval_cer"]) for r in records if "eval_wer" in r])


def test_training_on_a_dataset_equals_training_on_manifests(sources, tmp_path):
    """Same seed: the same vocabulary, batches, losses and evaluations before and after."""
    common = [*SMALL, "--max-steps", "4", "--train-batch-size", "4", "--learning-rate", "3e-3", "--warmup-steps", "1",
              "--eval-every", "2", "--save-every", "100", "--log-every", "1"]
    by_manifest, by_dataset = tmp_path / "manifest", tmp_path / "dataset"
    assert train.main(["--train-manifest", str(sources["train"]), "--eval-manifest", str(sources["test"]),
                       "--output-dir", str(by_manifest), *common]) == 0
    assert train.main(["--dataset", str(sources["save_to_disk"]), "--eval-split", "test",
                       "--output-dir", str(by_dataset), *common]) == 0
    want, got = losses_and_wer(by_manifest), losses_and_wer(by_dataset)
    assert len(want[0]) == 4 and len(want[1]) == 3  # before training, after step 2, after step 4
    assert got == want
    vocabularies = [spm.SentencePieceProcessor(model_file=str(out / "tokenizer" / "spm.model"))
                    for out in (by_manifest, by_dataset)]
    assert [[v.id_to_piece(i) for i in range(v.get_piece_size())] for v in vocabularies] == \
        [[vocabularies[0].id_to_piece(i) for i in range(vocabularies[0].get_piece_size())]] * 2


def test_train_names_a_missing_split(sources, tmp_path, capsys):
    code = train.main(["--dataset", str(sources["save_to_disk"]), *SMALL, "--max-steps", "1",
                       "--output-dir", str(tmp_path / "out")])  # --eval-split defaults to dev
    err = capsys.readouterr().err
    assert code == 2 and "no split 'dev'; it has train, test" in err


@pytest.mark.parametrize("kw, needle", [
    ({"text_column": "sentence"}, "no text column 'sentence' (columns: audio, text, language); pass --text-column"),
    ({"audio_column": "speech"}, "no audio column 'speech'"),
])
def test_missing_columns_are_named(sources, kw, needle):
    with pytest.raises(DataError) as err:
        load_utterances(dataset_config(sources, "save_to_disk", **kw), "train")
    assert needle in str(err.value)


def test_transcript_column_is_found_by_its_usual_names(sources, tmp_path):
    renamed = datasets.load_from_disk(str(sources["save_to_disk"]))["test"].rename_column("text", "sentence")
    renamed.save_to_disk(tmp_path / "cv-like")
    rows = read_dataset(tmp_path / "cv-like", "train")  # a saved Dataset without a split name is train
    assert [u.text for u in rows] == [u.text for u in read_dataset(sources["save_to_disk"], "test")]
    with pytest.raises(ManifestError, match=r"no split 'test'; it has train \(a saved Dataset that has no split"):
        read_dataset(tmp_path / "cv-like", "test")


def test_no_transcript_column_is_named(tmp_path):
    datasets.Dataset.from_dict({"audio": ["a.wav"], "words": ["x"]}).save_to_disk(tmp_path / "bare")
    with pytest.raises(ManifestError, match=r"no transcript column among text, sentence, .*"
                                            r"\(columns: audio, words\); pass --text-column"):
        read_dataset(tmp_path / "bare", "train")


def test_hub_name_offline_is_one_line(monkeypatch):
    """A Hub name goes through the same load_dataset call as a local folder of shards; offline
    (as here) it fails in one line that names the dataset."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ManifestError) as err:
        read_dataset("no-such-owner/no-such-dataset", "test", config="mn")
    message = str(err.value)
    assert message.startswith("cannot load dataset no-such-owner/no-such-dataset (no such local folder")
    assert "\n" not in message


def test_without_the_datasets_package_says_what_to_install(sources, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(ManifestError, match=r"pip install 'whisper-scratch\[datasets\]'"):
        read_dataset(sources["save_to_disk"], "test")


@pytest.mark.parametrize("argv, needle", [
    (["--mode", "evaluate", "--manifest", "a.jsonl", "--dataset", "d"], "takes one of --manifest, --reference_file "
                                                                         "and --dataset, got --manifest and --dataset"),
    (["--mode", "batch", "--audio_path", "a.wav", "--dataset", "d"], "--dataset is for --mode evaluate, not batch"),
    (["--audio_path", "a.wav", "--dataset", "d"], "--dataset is for --mode evaluate, not single"),
])
def test_cli_dataset_flag_errors(capsys, argv, needle):
    assert transcribe.main(["--model_path", "/nonexistent/model", *argv]) == 2
    assert needle in capsys.readouterr().err


def test_cli_missing_split_is_one_line_before_the_model_loads(capsys, sources):
    code = transcribe.main(["--model_path", "/nonexistent/model", "--mode", "evaluate",
                            "--dataset", str(sources["parquet"]), "--split", "validation"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err  # above the error: the progress of datasets' own loading
    assert err.strip().splitlines()[-1].startswith(
        f"error: cannot load dataset {sources['parquet']}: Unknown split \"validation\". Should be one of ['train', 'test']")


@pytest.mark.shared
@pytest.mark.parametrize("name", FORMATS)
def test_evaluate_on_a_dataset_equals_evaluate_on_a_manifest(capsys, tmp_path, tiny_en_dir, sources, name):
    """tiny.en through transcribe.py --mode evaluate: the same references, hypotheses and WER."""
    reports = {}
    for how, flags in (("manifest", ["--manifest", sources["test"]]),
                       (name, ["--dataset", sources[name], "--split", "test"])):
        target = tmp_path / f"{how}.json"
        code = transcribe.main([str(a) for a in ("--model_path", tiny_en_dir, "--mode", "evaluate", *flags,
                                                 "--output_file", target, "--batch_size", "4")])
        out = capsys.readouterr().out
        assert code == 0 and "on 4 utterances (0 unreadable)" in out
        reports[how] = json.loads(target.read_text())
    want, got = reports["manifest"], reports[name]
    assert [(u["reference"], u["hypothesis"]) for u in got["utterances"]] == \
        [(u["reference"], u["hypothesis"]) for u in want["utterances"]]
    assert (got["wer"], got["cer"]) == (want["wer"], want["cer"])
    assert sum(bool(u["hypothesis"]) for u in want["utterances"]) == 4 and want["wer"] < 0.3


@pytest.mark.parametrize("name", FORMATS)
def test_lm_build_reads_a_datasets_text_column_as_its_manifest(sources, name, tmp_path, capsys):
    """`lm build --dataset` builds the same model as `--text` over the same rows' manifest, and
    writes no audio to the cache."""
    from whisper_scratch.lm.command import main

    args = ["build", "--language", "en", "--order", "3", "--no-progress"]
    assert main([*args, "--text", str(sources["train"]), "--out", str(tmp_path / "manifest.arpa")]) == 0
    assert main([*args, "--dataset", str(sources[name]), "--split", "train", "--out", str(tmp_path / "ds.arpa")]) == 0
    assert (tmp_path / "ds.arpa").read_bytes() == (tmp_path / "manifest.arpa").read_bytes()
    assert not (tmp_path / "cache" / AUDIO_CACHE).exists()
    capsys.readouterr()
    assert main([*args, "--dataset", str(sources[name]), "--split", "train", "--text-column", "nope",
                 "--out", str(tmp_path / "x.arpa")]) == 2
    assert "'nope'" in capsys.readouterr().err
