"""Transcript and evaluation files, the format picked from the file extension.

A result is a dict {"audio": str, "text": str, "language": str | None, "segments": [{"start",
"end", "text"}], optionally "duration"}. Formats:

- .txt  one result: its text; several: one "audio<TAB>text" line per result.
- .json the list of results as given (always a list).
- .srt  numbered cues, HH:MM:SS,mmm.   Subtitles hold one audio file: several results is an error.
- .vtt  "WEBVTT" then cues, [HH:]MM:SS.mmm (hours only from one hour on).
- .tsv  "start<TAB>end<TAB>text" in integer milliseconds like Whisper's, with a leading "audio"
        column when there are several results.

Cues and rows come one per segment with text. A result without segments but with text becomes a
single cue from 0 to its "duration" (0 when unknown); a result with no text gives none.
Text is flattened to one line and "-->" becomes "->", so that tabs, blank lines and arrows
cannot break the formats.
Every write goes to a temporary file beside the target, then os.replace, so readers never see
half a file; missing parent folders are created.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

Result = dict[str, Any]


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """12.5 -> "00:12.500"; hours appear when asked for or when non-zero."""
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    prefix = f"{hours:02d}:" if always_include_hours or hours else ""
    return f"{prefix}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _cues(result: Result) -> list[tuple[float, float, str]]:
    """(start, end, text) for each segment with text, or one cue for the whole clip."""
    cues = [(s["start"], s["end"], _one_line(s["text"])) for s in result.get("segments") or []]
    if not cues:
        cues = [(0.0, result.get("duration") or 0.0, _one_line(result.get("text", "")))]
    # A "-->" inside cue text would read as a timing line to SRT/VTT parsers.
    return [(start, end, text.replace("-->", "->")) for start, end, text in cues if text]


def _single(results: Sequence[Result], fmt: str) -> Result:
    if len(results) != 1:
        raise ValueError(f"{fmt} subtitles hold one audio file, got {len(results)} results; "
                         "write one file per audio or use .json, .tsv or .txt")
    return results[0]


def _txt(results: Sequence[Result]) -> str:
    if len(results) == 1:
        return _one_line(results[0]["text"]) + "\n"
    return "".join(f"{r['audio']}\t{_one_line(r['text'])}\n" for r in results)


def _json(results: Sequence[Result]) -> str:
    return json.dumps(list(results), ensure_ascii=False, indent=2) + "\n"


def _srt(results: Sequence[Result]) -> str:
    cues = _cues(_single(results, "SRT"))
    return "".join(f"{n}\n{format_timestamp(start, True, ',')} --> {format_timestamp(end, True, ',')}\n{text}\n\n"
                   for n, (start, end, text) in enumerate(cues, 1))


def _vtt(results: Sequence[Result]) -> str:
    cues = _cues(_single(results, "VTT"))
    return "WEBVTT\n\n" + "".join(f"{format_timestamp(start)} --> {format_timestamp(end)}\n{text}\n\n"
                                  for start, end, text in cues)


def _tsv(results: Sequence[Result]) -> str:
    several = len(results) > 1
    lines = [("audio\t" if several else "") + "start\tend\ttext"]
    for result in results:
        for start, end, text in _cues(result):
            lines.append((f"{result['audio']}\t" if several else "") + f"{round(start * 1000)}\t{round(end * 1000)}\t{text}")
    return "\n".join(lines) + "\n"


_WRITERS: dict[str, Callable[[Sequence[Result]], str]] = {
    ".txt": _txt, ".json": _json, ".srt": _srt, ".vtt": _vtt, ".tsv": _tsv}
SUPPORTED_EXTENSIONS = tuple(sorted(_WRITERS))


def _atomic_write(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_results(results: Sequence[Result], path: str | os.PathLike) -> None:
    """Write transcription results to `path` in the format its extension names."""
    writer = _WRITERS.get(Path(path).suffix.lower())
    if writer is None:
        raise ValueError(f"{path}: unknown output format; supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}")
    _atomic_write(path, writer(results))


def write_evaluation(path: str | os.PathLike, wer: float, cer: float, utterances: Sequence[dict[str, str]],
                     extra: dict[str, Any] | None = None) -> None:
    """JSON {"wer", "cer", "utterances": [{"audio", "reference", "hypothesis", ...}], **extra}."""
    for u in utterances:
        missing = {"audio", "reference", "hypothesis"} - u.keys()
        if missing:
            raise ValueError(f"utterance {u!r} lacks {sorted(missing)}")
    report = {"wer": wer, "cer": cer, "utterances": [dict(u) for u in utterances], **(extra or {})}
    _atomic_write(path, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
