"""Hugging Face datasets as utterance lists: a folder written by `save_to_disk`, a folder of
parquet/arrow shards, an `audiofolder` (audio files beside a metadata.csv/.jsonl/.parquet whose
`file_name` column names them), or a dataset on the Hub by name.

`datasets` decodes audio with torchcodec, which this project does without: the audio column is
read undecoded, as {"bytes", "path"}. A path to a local file is used as it is; embedded bytes are
written once to a file named by their hash in the cache (`$WHISPER_SCRATCH_CACHE/dataset-audio`),
so `audio.load_audio` decodes them like any listed clip, in DataLoader workers that need no copy
of the dataset. The audiofolder layout is read here too, because `datasets` needs torchcodec even
to list one.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..common.files import cache_dir
from .manifest import ManifestError, Utterance

# The names common datasets give their transcript column (LibriSpeech, Common Voice, FLEURS and
# most audiofolders) and their language column, tried in this order when none is named.
TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript")
LANGUAGE_COLUMNS = ("language", "locale")
# save_to_disk writes one of these at the top of its folder (a DatasetDict, a Dataset).
SAVED_MARKERS = ("dataset_dict.json", "state.json")
# audiofolder: a metadata table per split; its `file_name` (or `<audio column>_file_name`) column
# holds the audio path relative to the table.
METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")
AUDIO_CACHE = "dataset-audio"


def read_dataset(source: str | Path, split: str, *, config: str | None = None, audio_column: str = "audio",
                 text_column: str | None = None, cache: str | Path | None = None) -> list[Utterance]:
    """The rows of `split` of a Hugging Face dataset as Utterances, in the dataset's order.

    `source` is a local folder (save_to_disk, parquet/arrow shards, audiofolder) or a Hub name,
    loaded the same way as a folder of shards; `config` is the Hub configuration (e.g. a Common
    Voice language). `text_column` defaults to the first of TEXT_COLUMNS the dataset has; a
    `language`/`locale` column, when there is one, gives each row its language. Embedded audio is
    written under cache_dir(cache). Raises ManifestError, one line naming the dataset and the fix.
    """
    name, path = str(source), Path(source)
    where = f"{name} [{split}]"
    if path.is_dir() and not _is_saved(path) and _metadata_tables(path):
        rows, columns = _audiofolder(path, split, audio_column)
        text_column, language_column = _columns(where, columns, audio_column, text_column)
    else:
        dataset = _load(name, path, split, config)
        text_column, language_column = _columns(where, dataset.column_names, audio_column, text_column)
        rows = _undecoded(dataset, [c for c in (audio_column, text_column, language_column) if c])
    base = path if path.is_dir() else None  # relative paths in a local dataset are relative to it
    audio_dir = cache_dir(cache) / AUDIO_CACHE
    utterances = []
    for index, row in enumerate(rows):
        audio = _audio_file(row[audio_column], base, audio_dir, f"{where} row {index}")
        text = row[text_column]
        language = row.get(language_column) if language_column else None
        utterances.append(Utterance(audio, "" if text is None else str(text), language or None))
    return utterances


def read_dataset_texts(source: str | Path, split: str, *, config: str | None = None,
                       text_column: str | None = None) -> list[str]:
    """The non-blank transcripts of `split` of a Hugging Face dataset (as `read_dataset` finds it),
    with no audio read or cached: text for a language model. ManifestError as `read_dataset`."""
    name, path = str(source), Path(source)
    where = f"{name} [{split}]"
    if path.is_dir() and not _is_saved(path) and _metadata_tables(path):
        rows, columns = _audiofolder(path, split, "audio")
        column = _text_column(where, columns, text_column)
    else:
        dataset = _load(name, path, split, config)
        column = _text_column(where, dataset.column_names, text_column)
        rows = dataset.select_columns([column])
    texts = [str(row[column]) for row in rows if row[column] is not None and str(row[column]).strip()]
    if not texts:
        raise ManifestError(f"{where}: no transcripts in its {column!r} column")
    return texts


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ManifestError("reading Hugging Face datasets needs the datasets package: "
                            "pip install 'whisper-scratch[datasets]'") from None
    return datasets


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _is_saved(path: Path) -> bool:
    return any((path / marker).is_file() for marker in SAVED_MARKERS)


def _metadata_tables(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("metadata.*") if p.name in METADATA_FILES)


def _load(name: str, path: Path, split: str, config: str | None):
    """One split of a save_to_disk folder, or of whatever `load_dataset` reads (shards, Hub)."""
    datasets = _datasets()
    try:
        if path.is_dir() and _is_saved(path):
            loaded = datasets.load_from_disk(str(path))
            # A saved Dataset (not a DatasetDict) is the split load_dataset cut it as, else "train"
            # as load_dataset names a folder without split names.
            single = isinstance(loaded, datasets.Dataset)
            splits = {str(loaded.split or "train"): loaded} if single else loaded
            if split not in splits:
                note = " (a saved Dataset that has no split name is train)" if single and not loaded.split else ""
                raise ManifestError(f"{name}: no split {split!r}; it has {', '.join(splits)}{note}")
            return splits[split]
        return datasets.load_dataset(name, config, split=split)
    except ManifestError:
        raise
    except Exception as e:  # missing folder, offline Hub, unknown split, foreign files: say which
        hint = "" if path.exists() else " (no such local folder, so it was looked up on the Hub)"
        raise ManifestError(f"cannot load dataset {name}{hint}: {_one_line(e)}") from None


def _columns(where: str, columns: list[str], audio_column: str,
             text_column: str | None) -> tuple[str, str | None]:
    """The transcript and language columns; ManifestError when the audio or text column is missing."""
    if audio_column not in columns:
        raise ManifestError(f"{where}: no audio column {audio_column!r} (columns: {', '.join(columns)}); "
                            "pass --audio-column")
    return _text_column(where, columns, text_column), next((c for c in LANGUAGE_COLUMNS if c in columns), None)


def _text_column(where: str, columns: list[str], text_column: str | None) -> str:
    """The transcript column: the one named, else the first of TEXT_COLUMNS there is."""
    listed = ", ".join(columns)
    if text_column is None:
        text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
        if text_column is None:
            raise ManifestError(f"{where}: no transcript column among {', '.join(TEXT_COLUMNS)} "
                                f"(columns: {listed}); pass --text-column")
    elif text_column not in columns:
        raise ManifestError(f"{where}: no text column {text_column!r} (columns: {listed}); pass --text-column")
    return text_column


def _undecoded(dataset, columns: list[str]) -> Iterable[dict[str, Any]]:
    """The rows of `columns` only (another Audio or Image column would be decoded too), with the
    Audio column as {"bytes", "path"}."""
    datasets = _datasets()
    dataset = dataset.select_columns(columns)
    for name, feature in dataset.features.items():
        if isinstance(feature, datasets.Audio):
            dataset = dataset.cast_column(name, datasets.Audio(decode=False))
    return dataset


def _audiofolder(path: Path, split: str, audio_column: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of an audiofolder's split, the audio column a path; splits are found by the rules of
    `load_dataset` (folder and file names such as train/, test/, validation/)."""
    _datasets()
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        files = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except Exception as e:
        raise ManifestError(f"cannot read the audiofolder {path}: {_one_line(e)}") from None
    splits = {str(k): v for k, v in files.items()}
    if split not in splits:
        raise ManifestError(f"{path}: no split {split!r}; it has {', '.join(splits)}")
    tables = sorted(Path(f) for f in splits[split] if Path(f).name in METADATA_FILES)
    if not tables:
        raise ManifestError(f"{path} [{split}]: no {' / '.join(METADATA_FILES)} among this split's files")
    rows = []
    for table in tables:
        for n, row in enumerate(_read_table(table), 1):
            file = row.pop("file_name", None) or row.pop(f"{audio_column}_file_name", None)
            if not file:
                raise ManifestError(f"{table}: row {n} has no file_name (the audio file, relative to the table)")
            row[audio_column] = str(table.parent / file)
            rows.append(row)
    return rows, list(rows[0]) if rows else [audio_column]


def _read_table(path: Path) -> list[dict[str, Any]]:
    """An audiofolder metadata table as dicts."""
    try:
        if path.suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:  # JSONDecodeError and pyarrow's errors are ValueErrors
        raise ManifestError(f"cannot read {path}: {_one_line(e)}") from None


def _audio_file(value: Any, base: Path | None, audio_dir: Path, where: str) -> Path:
    """A local file holding one row's audio: its own path, or its embedded bytes written to the cache."""
    if isinstance(value, str):
        value = {"bytes": None, "path": value}
    if not isinstance(value, dict) or (value.get("bytes") is None and not value.get("path")):
        raise ManifestError(f"{where}: no audio (neither bytes nor a path); drop such rows from the dataset")
    if value["bytes"] is not None:
        return _cached(value["bytes"], value.get("path"), audio_dir)
    if "://" in value["path"]:
        raise ManifestError(f"{where}: the audio is a remote file ({value['path']}); download the dataset "
                            "with its audio and pass the local folder")
    audio = Path(value["path"])
    return audio if audio.is_absolute() or base is None else base / audio


def _cached(data: bytes, original: str | None, audio_dir: Path) -> Path:
    """`data` in a file named by its hash (and the original name, for people reading logs);
    written atomically once, reused by later runs."""
    name = re.sub(r"[^\w.-]", "_", Path(original).name)[-80:] if original else "audio"
    target = audio_dir / f"{hashlib.sha256(data).hexdigest()[:24]}-{name}"
    if not target.is_file():
        audio_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=audio_dir, prefix=".", suffix=".tmp")
        try:
            with open(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise
    return target
