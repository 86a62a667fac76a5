"""Lists of (audio, transcript) pairs: JSONL/CSV manifests, Common Voice TSVs, folders of audio
with same-named .txt files. Paths are resolved relative to the listing file."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".mp4")


class ManifestError(ValueError):
    """A listing that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Utterance:
    audio: Path
    text: str
    language: str | None = None


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a `.jsonl`, `.csv` or Common Voice `.tsv` listing."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path} (pass a .jsonl, .csv or Common Voice .tsv file)")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix in (".tsv", ".csv"):
        return _read_table(path, "\t" if suffix == ".tsv" else ",")
    raise ManifestError(f"unknown manifest type: {path} (use .jsonl, .csv or a Common Voice .tsv)")


def _read_jsonl(path: Path) -> list[Utterance]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append(Utterance(path.parent / row["audio"], str(row["text"]), row.get("language")))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ManifestError(f"{path}:{n}: bad row ({type(e).__name__}: {e}); each line must be "
                                    '{"audio": "...", "text": "..."}') from None
    return rows


def _read_table(path: Path, delimiter: str) -> list[Utterance]:
    """CSV with audio,text[,language] columns, or Common Voice TSV (path, sentence, locale) whose
    clips live in `clips/` beside the file."""
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        fields = reader.fieldnames or []
        common_voice = "sentence" in fields and "path" in fields
        audio_key, text_key = ("path", "sentence") if common_voice else ("audio", "text")
        if audio_key not in fields or text_key not in fields:
            raise ManifestError(f"{path}:1: header must have '{audio_key}' and '{text_key}' columns, found {fields}")
        base = path.parent / "clips" if common_voice else path.parent
        rows = []
        for n, row in enumerate(reader, 2):
            audio, text = row.get(audio_key), row.get(text_key)
            if not audio or text is None:
                raise ManifestError(f"{path}:{n}: row has no {audio_key!r} or {text_key!r} value")
            rows.append(Utterance(base / audio, text, row.get("locale") or row.get("language") or None))
    return rows


def read_folder(folder: str | Path) -> list[Utterance]:
    """Audio files in `folder` (recursively) that have a same-named `.txt` transcript."""
    folder = Path(folder)
    rows = []
    for audio in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS):
        txt = audio.with_suffix(".txt")
        if txt.is_file():
            rows.append(Utterance(audio, txt.read_text(encoding="utf-8").strip()))
    return rows


def list_audio(folder: str | Path) -> list[Path]:
    """Every audio file below `folder`, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
