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

Segments with "words" (word timestamps) are cut into cues as openai-whisper's writers do
(`LineOptions`): lines of at most max_line_width characters, cues of at most max_line_count
lines (a new cue also after a pause over 3 s); without both limits, one cue per segment. Cue
times are then those of their first and last word. highlight_words (srt/vtt) writes one cue per
word with that word underlined (<u>...</u>); tsv puts a cue's lines on one row.
Every write goes to a temporary file beside the target, then os.replace, so readers never see
half a file; missing parent folders are created; files get the user's umask permissions.

Several results and a subtitle format make one file per audio (`per_audio_targets`), named after
the audio in the output folder.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..audio.io import printable
from ..common.files import write_text
from ..common.messages import one_line

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


@dataclass(frozen=True)
class LineOptions:
    """How subtitles are cut when segments carry words (see the module docstring)."""
    max_line_width: int | None = None  # characters per line
    max_line_count: int | None = None  # lines per cue (needs max_line_width)
    highlight_words: bool = False  # srt/vtt: one cue per word, the word underlined


def _safe_word(word: str) -> str:
    """A word with its leading space kept, any other whitespace run made one space."""
    return re.sub(r"\s+", " ", word).replace("-->", "->")


def _cues(result: Result, lines: LineOptions = LineOptions()) -> list[tuple[float, float, str]]:
    """(start, end, text) for each segment with text, or one cue for the whole clip."""
    segments = result.get("segments") or []
    if segments and any("words" in s for s in segments):
        return _word_cues(segments, lines)
    cues = [(s["start"], s["end"], one_line(s["text"])) for s in segments]
    if not cues:
        cues = [(0.0, result.get("duration") or 0.0, one_line(result.get("text", "")))]
    # A "-->" inside cue text would read as a timing line to SRT/VTT parsers.
    return [(start, end, text.replace("-->", "->")) for start, end, text in cues if text]


def _subtitles(segments: list[dict], lines: LineOptions) -> list[list[dict]]:
    """Words grouped into cues; a word that starts a new line carries a "\n" before it."""
    keep_segments = lines.max_line_count is None or lines.max_line_width is None
    width = lines.max_line_width or 1000
    last = next((w["start"] for s in segments for w in s.get("words", [])), segments[0]["start"])
    cues, cue, line_len, line_count = [], [], 0, 1
    for segment in segments:
        for i, original in enumerate(segment.get("words", [])):
            word = dict(original, word=_safe_word(original["word"]))
            long_pause = not keep_segments and word["start"] - last > 3.0
            has_room = line_len + len(word["word"]) <= width
            segment_break = i == 0 and bool(cue) and keep_segments
            if line_len > 0 and has_room and not long_pause and not segment_break:
                line_len += len(word["word"])
            else:
                word["word"] = word["word"].strip()
                full = lines.max_line_count is not None and (long_pause or line_count >= lines.max_line_count)
                if (cue and full) or segment_break:
                    cues.append(cue)
                    cue, line_count = [], 1
                elif line_len > 0:
                    line_count += 1
                    word["word"] = "\n" + word["word"]
                line_len = len(word["word"].strip())
            cue.append(word)
            last = word["start"]
    if cue:
        cues.append(cue)
    return cues


def _word_cues(segments: list[dict], lines: LineOptions) -> list[tuple[float, float, str]]:
    cues = []
    for words in _subtitles(segments, lines):
        text = "".join(w["word"] for w in words)
        if not lines.highlight_words:
            cues.append((words[0]["start"], words[-1]["end"], text))
            continue
        last = words[0]["start"]
        for i, word in enumerate(words):
            if _ms(last) != _ms(word["start"]):  # the gap before the word: the cue without a highlight
                cues.append((last, word["start"], text))
            marked = [w["word"] if j != i else _underlined(w["word"]) for j, w in enumerate(words)]
            cues.append((word["start"], word["end"], "".join(marked)))
            last = word["end"]
    return cues


def _underlined(word: str) -> str:
    bare = word.lstrip()
    return f"{word[:len(word) - len(bare)]}<u>{bare}</u>"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _single(results: Sequence[Result], fmt: str) -> Result:
    if len(results) != 1:
        raise ValueError(f"{fmt} subtitles hold one audio file, got {len(results)} results; "
                         "write one file per audio or use .json, .tsv or .txt")
    return results[0]


def _txt(results: Sequence[Result], lines: LineOptions) -> str:
    if len(results) == 1:
        return one_line(results[0]["text"]) + "\n"
    return "".join(f"{r['audio']}\t{one_line(r['text'])}\n" for r in results)


def _json(results: Sequence[Result], lines: LineOptions) -> str:
    return json.dumps(list(results), ensure_ascii=False, indent=2) + "\n"


def _srt(results: Sequence[Result], lines: LineOptions) -> str:
    cues = _cues(_single(results, "SRT"), lines)
    return "".join(f"{n}\n{format_timestamp(start, True, ',')} --> {format_timestamp(end, True, ',')}\n{text}\n\n"
                   for n, (start, end, text) in enumerate(cues, 1))


def _vtt(results: Sequence[Result], lines: LineOptions) -> str:
    cues = _cues(_single(results, "VTT"), lines)
    return "WEBVTT\n\n" + "".join(f"{format_timestamp(start)} --> {format_timestamp(end)}\n{text}\n\n"
                                  for start, end, text in cues)


def _tsv(results: Sequence[Result], lines: LineOptions) -> str:
    several = len(results) > 1
    rows = [("audio\t" if several else "") + "start\tend\ttext"]
    plain = LineOptions(lines.max_line_width, lines.max_line_count)  # one row per cue: no highlighting
    for result in results:
        for start, end, text in _cues(result, plain):
            rows.append((f"{result['audio']}\t" if several else "")
                        + f"{_ms(start)}\t{_ms(end)}\t{one_line(text)}")
    return "\n".join(rows) + "\n"


_WRITERS: dict[str, Callable[[Sequence[Result], LineOptions], str]] = {
    ".txt": _txt, ".json": _json, ".srt": _srt, ".vtt": _vtt, ".tsv": _tsv}
SUPPORTED_EXTENSIONS = tuple(sorted(_WRITERS))
SUBTITLE_EXTENSIONS = (".srt", ".vtt")  # one audio file each
TIMED_EXTENSIONS = (".srt", ".vtt", ".tsv")  # formats that need segment timestamps


def needs_timestamps(extensions: Sequence[str]) -> bool:
    """Whether writing any of these formats (".srt", ...) needs segment timestamps decoded."""
    return any(ext.lower() in TIMED_EXTENSIONS for ext in extensions)


def per_audio_targets(results: Sequence[Result], folder: Path, suffix: str) -> list[tuple[Result, Path]]:
    """One file per result in `folder`, named after its audio with `suffix`: clips/a.flac ->
    folder/a.srt; subfolders of the inputs are kept (clips/x/b.wav -> folder/x/b.srt), and two
    audio files that differ only in extension keep it (a.wav -> a.wav.srt)."""
    audios = [Path(os.path.abspath(r["audio"])) for r in results]
    if not audios:
        return []
    common = Path(os.path.commonpath([a.parent for a in audios]))
    relative = [a.relative_to(common) for a in audios]
    clashes = Counter(r.with_suffix("") for r in relative)
    targets = []
    for result, rel in zip(results, relative):
        name = rel.with_suffix(suffix) if clashes[rel.with_suffix("")] == 1 else rel.with_name(rel.name + suffix)
        targets.append((result, folder / name))
    return targets


def write_results(results: Sequence[Result], path: str | os.PathLike, lines: LineOptions = LineOptions()) -> None:
    """Write transcription results to `path` in the format its extension names; `lines` cuts the
    subtitles of results with word timestamps."""
    writer = _WRITERS.get(Path(path).suffix.lower())
    if writer is None:
        raise ValueError(f"{path}: unknown output format; supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}")
    write_text(path, writer(_printable_audio(results), lines))


def _printable_audio(rows: Sequence[dict]) -> list[dict]:
    """`rows` with their "audio" names made printable (see audio.io.printable): a file name that
    is not UTF-8 must not stop the transcripts of every file from being written."""
    return [{**r, "audio": printable(r["audio"])} if "audio" in r else dict(r) for r in rows]


def write_evaluation(path: str | os.PathLike, wer: float, cer: float, utterances: Sequence[dict[str, str]],
                     extra: dict[str, Any] | None = None) -> None:
    """JSON {"wer", "cer", "utterances": [{"audio", "reference", "hypothesis", ...}], **extra}."""
    for u in utterances:
        missing = {"audio", "reference", "hypothesis"} - u.keys()
        if missing:
            raise ValueError(f"utterance {u!r} lacks {sorted(missing)}")
    report = {"wer": wer, "cer": cer, "utterances": _printable_audio(utterances), **(extra or {})}
    write_text(path, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
