"""Which utterances a run reads: `DataConfig` names the sources of the train and eval splits (a
manifest, a folder, a Hugging Face dataset or a Common Voice folder), `load_utterances` reads one
split and cleans its transcripts, and says in one line why when nothing usable is left."""
from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..tokenizer.base import TASKS
from .hf_dataset import read_dataset
from .manifest import ManifestError, Utterance, read_folder, read_manifest

SPLITS = ("train", "eval")


class DataError(ValueError):
    """A data source that yields nothing to train or evaluate on; the one-line message names the file and the cause."""


@dataclass
class DataConfig:
    """Where the utterances come from and which ones to keep.

    Per split, a manifest (`train_manifest` / `eval_manifest`: .jsonl, .csv, Common Voice .tsv, or a
    folder of audio files with same-named .txt transcripts) wins over `dataset`, a Hugging Face
    dataset (local folder or Hub name, see data.hf_dataset.read_dataset) whose `train_split` /
    `eval_split` are read, which wins over `local_data_dir`, a Common Voice language folder
    (`cv-corpus-X/<lang>`) whose `<train_split>.tsv` / `<eval_split>.tsv` are read.
    """

    local_data_dir: Path | None = None
    train_split: str = "train"
    eval_split: str = "dev"
    train_manifest: Path | None = None
    eval_manifest: Path | None = None
    dataset: str | None = None  # Hugging Face dataset: save_to_disk/shards/audiofolder folder or Hub name
    dataset_config: str | None = None  # its Hub configuration, e.g. a Common Voice language
    audio_column: str = "audio"
    text_column: str | None = None  # default: the first of hf_dataset.TEXT_COLUMNS the dataset has
    min_duration: float = 0.0  # seconds; shorter clips are skipped when loaded
    max_duration: float = 30.0  # seconds; the encoder window (30 s) is the limit anyway
    # Label tokens (prompt included); longer transcripts are skipped and counted. None: the decoder
    # context. A cap bounds the logits' memory (batch x tokens x vocabulary) on a small card.
    max_label_tokens: int | None = None
    keep_chars: str | None = None  # allowed transcript characters, see normalize_transcript
    language: str | None = None  # overrides the manifests' per-row language
    task: str = "transcribe"
    # Share of training labels written with timestamps (<|0.00|> text <|end|>), drawn per clip and
    # epoch: half keeps both of Whisper's output forms in use, so timestamps survive fine-tuning.
    timestamp_share: float = 0.5

    def __post_init__(self) -> None:
        for name in ("local_data_dir", "train_manifest", "eval_manifest"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if not 0.0 <= self.min_duration <= self.max_duration:
            raise ValueError(f"need 0 <= min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        if self.keep_chars is not None and not self.keep_chars.strip():
            raise ValueError("keep_chars is empty: every transcript would be dropped")


def normalize_transcript(text: str, keep_chars: str) -> str:
    """`text` reduced to the characters of `keep_chars`: NFC, lowercased when `keep_chars` has no
    upper-case letter, other characters dropped, whitespace (always a word separator, whether or
    not `keep_chars` has a space) collapsed to single spaces."""
    keep = set(unicodedata.normalize("NFC", keep_chars))
    text = unicodedata.normalize("NFC", text)
    if not any(ch.isupper() for ch in keep):
        text = text.lower()
    words = ("".join(ch for ch in word if ch in keep) for word in text.split())
    return " ".join(word for word in words if word)


def _read_split(cfg: DataConfig, split: str) -> tuple[str, list[Utterance], str]:
    """The rows that `split` ("train" or "eval") reads, from a manifest, a folder, a Hugging Face
    dataset or a Common Voice .tsv; with the source's name and what it lacks when it has no row."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'eval' (which one, not a .tsv name: DataConfig.train_split "
                         f"and eval_split name those), got {split!r}")
    manifest = cfg.train_manifest if split == "train" else cfg.eval_manifest
    name = cfg.train_split if split == "train" else cfg.eval_split
    try:
        if manifest is None and cfg.dataset is not None:
            rows = read_dataset(cfg.dataset, name, config=cfg.dataset_config, audio_column=cfg.audio_column,
                                text_column=cfg.text_column)
            return f"{cfg.dataset} [{name}]", rows, "empty split (no rows)"
        if manifest is None:
            if cfg.local_data_dir is None:
                raise DataError(f"no {split} data: set {split}_manifest or local_data_dir, or a dataset")
            manifest = cfg.local_data_dir / f"{name}.tsv"
            if not manifest.is_file():
                raise DataError(f"{manifest}: file not found (the {split} split of the Common Voice folder "
                                f"{cfg.local_data_dir})")
        if manifest.is_dir():
            return str(manifest), read_folder(manifest), "no audio file with a same-named .txt"
        return str(manifest), read_manifest(manifest), f"empty {manifest.suffix.lstrip('.') or 'manifest'} (no rows)"
    except ManifestError as err:
        raise DataError(str(err)) from None


def load_utterances(cfg: DataConfig, split: str) -> tuple[list[Utterance], Counter]:
    """The utterances of `split` ("train" or "eval") with cleaned transcripts, and what happened to the rows.

    Counter keys: rows (read), kept, empty_transcript, empty_after_keep_chars (dropped rows). Audio is
    not opened here; unreadable or over-long clips are skipped later by SpeechDataset. Raises
    DataError when the file is missing, has no rows, or none survives the filters.
    """
    source, rows, empty = _read_split(cfg, split)
    counts: Counter = Counter(rows=len(rows))
    kept = []
    for row in rows:
        text = " ".join(unicodedata.normalize("NFC", row.text).split())
        if not text:
            counts["empty_transcript"] += 1
            continue
        if cfg.keep_chars is not None:
            text = normalize_transcript(text, cfg.keep_chars)
            if not text:
                counts["empty_after_keep_chars"] += 1
                continue
        kept.append(Utterance(row.audio, text, cfg.language or row.language))
    counts["kept"] = len(kept)

    if not kept:
        if not rows:
            cause = empty
        else:
            causes = []
            if counts["empty_after_keep_chars"]:
                causes.append(f"{counts['empty_after_keep_chars']} rows had only characters outside --keep-chars")
            if counts["empty_transcript"]:
                causes.append(f"{counts['empty_transcript']} rows had an empty transcript")
            cause = "0 usable rows: " + ", ".join(causes)
        raise DataError(f"{source}: {cause}")
    return kept, counts
