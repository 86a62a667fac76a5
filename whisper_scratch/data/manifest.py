"""Lists of (audio, transcript) pairs: JSONL/CSV manifests, Common Voice TSVs, folders of audio
with same-named .txt files. Paths are resolved relative to the listing file."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..audio.io import AUDIO_EXTENSIONS, list_audio


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


def read_texts(path: str | Path) -> list[str]:
    """The transcripts of a listing, without its audio: a `.txt` file (one sentence a line), a
    `.jsonl` ({"text": ...} a line), a `.csv` with a `text` column or a Common Voice `.tsv` (its
    `sentence` column). Blank transcripts are dropped."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"text file not found: {path} (pass a .txt, .jsonl, .csv or Common Voice .tsv file)")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = read_listing_text(path).splitlines()
    elif suffix == ".jsonl":
        texts = [_field(row, "text", path, n) for n, row in _jsonl_rows(path)]
    elif suffix in (".tsv", ".csv"):
        key = "sentence" if suffix == ".tsv" else "text"
        fields, rows = _table_rows(path, "\t" if suffix == ".tsv" else ",")
        if key not in fields:
            raise ManifestError(f'{path}: no "{key}" column in the header {fields}')
        texts = [row.get(key) or "" for _, row in rows]
    else:
        raise ManifestError(f"unknown text listing: {path} (use .txt, .jsonl, .csv or a Common Voice .tsv)")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ManifestError(f"{path}: no transcripts")
    return texts


def read_listing_text(path: Path) -> str:
    """The text of a listing or transcript file, read as UTF-8 with or without a byte-order mark
    (Excel and Notepad write one); ManifestError naming the first line that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ManifestError(f"{path} is not UTF-8 at line {line}; re-save it as UTF-8, e.g. "
                            f"iconv -f latin1 -t utf-8 {path} > {path}.utf8 && mv {path}.utf8 {path}") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line; ManifestError for a line that is not a JSON object."""
    for n, line in enumerate(io.StringIO(read_listing_text(path)), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{n}: not JSON (JSONDecodeError: {e})") from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
        yield n, row


def _field(row: dict, key: str, path: Path, n: int) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise ManifestError(f'{path}:{n}: expected a string "{key}" field')
    return value


def _read_jsonl(path: Path) -> list[Utterance]:
    rows = []
    for n, row in _jsonl_rows(path):
        missing = [key for key in ("audio", "text") if key not in row]
        if missing:
            raise ManifestError(f"{path}:{n}: bad row (KeyError: {missing[0]!r}); each line must be "
                                '{"audio": "...", "text": "..."}')
        rows.append(Utterance(path.parent / row["audio"], str(row["text"]), row.get("language")))
    return rows


def _table_rows(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header of a CSV/TSV file and its (line number, row) pairs; Common Voice's TSVs have no quoting."""
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.DictReader(io.StringIO(read_listing_text(path), newline=""), delimiter=delimiter, quoting=quoting)
    return list(reader.fieldnames or []), list(enumerate(reader, 2))


def _read_table(path: Path, delimiter: str) -> list[Utterance]:
    """CSV with audio,text[,language] columns, or Common Voice TSV (path, sentence, locale) whose
    clips live in `clips/` beside the file."""
    fields, table = _table_rows(path, delimiter)
    common_voice = "sentence" in fields and "path" in fields
    audio_key, text_key = ("path", "sentence") if common_voice else ("audio", "text")
    if audio_key not in fields or text_key not in fields:
        # A .tsv is most likely Common Voice's: name its columns first.
        wanted = ("'path' and 'sentence' (Common Voice) or 'audio' and 'text'" if delimiter == "\t"
                  else "'audio' and 'text'")
        raise ManifestError(f"{path}:1: header must have {wanted} columns, found {fields}")
    base = path.parent / "clips" if common_voice else path.parent
    rows = []
    for n, row in table:
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
            rows.append(Utterance(audio, read_listing_text(txt).strip()))
    return rows



def collect_audio(audio_paths: list[str | Path], audio_dir: str | Path | None = None,
                  manifest: str | Path | None = None) -> list[Path]:
    """The audio files a run names: the paths given, the audio of a listing, and every audio file
    below a folder, in that order. ManifestError (one line) for a missing folder or listing, a
    folder without audio, or nothing at all."""
    paths = [Path(p) for p in audio_paths]
    if manifest:
        paths += [r.audio for r in read_manifest(manifest)]
    if audio_dir:
        folder = Path(audio_dir)
        if not folder.is_dir():
            raise ManifestError(f"audio folder not found: {folder} (check --audio_dir)")
        found = list_audio(folder)
        if not found and not paths:
            raise ManifestError(f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {folder}")
        paths += found
    if not paths:
        raise ManifestError("nothing to transcribe: the run needs --audio_dir, --manifest or --audio_path with at "
                            "least one audio file")
    return paths
