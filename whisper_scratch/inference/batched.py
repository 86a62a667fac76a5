"""Batched long-form transcription, as faster-whisper's batched mode: a voice-activity detector
finds the speech, the speech intervals are laid end to end into chunks of at most one window,
and the chunks are decoded together in batches, each on its own (no previous text as prompt).

With `trim_padding` a chunk shorter than the window (the recording's last, and the rest of a
chunk decoded again) is encoded over its own frames only, as a clip is (`clips.embed_windows`).

A `Chunk` keeps which pieces of the recording it holds, so any (start, end) times the decoder
gives within a chunk (segments, words) map back to the recording with
`Chunk.to_recording`.

    from whisper_scratch.inference.batched import transcribe_batched
    result = transcribe_batched(model, audio, TranscribeOptions(batch_size=8))
"""
from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..audio.features import log_mel_window
from ..audio.geometry import HOP_LENGTH, SAMPLE_RATE, TIME_PRECISION, trimmed_frames, window_frames
from ..audio.io import AudioError, load_audio
from ..model.loaded import whisper_vocabulary
from ..model.whisper import Whisper
from ..tokenizer import TokenizerBase
from .clips import PaddingWindows, embed_windows
from .decoding import DecodingResult, decode_with_fallback
from .options import TranscribeOptions
from .segments import segments_from_tokens
from .timing import add_word_timestamps
from .vad import SileroVAD, VadOptions, detect_speech, load_silero_vad

# Seconds by which a segment boundary may miss the seam between two pieces of a chunk and still be
# moved onto it (see Chunk.to_recording).
SEAM_TOLERANCE = 1.0


@dataclass(frozen=True)
class Chunk:
    """One decoder window: pieces of a recording, ((start, end), ...) in samples, laid end to end."""

    pieces: tuple[tuple[int, int], ...]

    @property
    def n_samples(self) -> int:
        return sum(end - start for start, end in self.pieces)

    def audio(self, recording: np.ndarray) -> np.ndarray:
        """The chunk's samples (n_samples,) cut from recording (T,)."""
        return np.concatenate([recording[start:end] for start, end in self.pieces])

    def after(self, at: int) -> Chunk:
        """The part of the chunk from sample `at` of it (0 < at < n_samples) to its end."""
        pieces = []
        for start, end in self.pieces:
            if at < end - start:
                pieces.append((start + max(at, 0), end))
            at -= end - start
        return Chunk(tuple(pieces))

    def to_recording(self, spans: Iterable[tuple[float, float]],
                     tolerance: float = SEAM_TOLERANCE) -> list[tuple[float, float]]:
        """Map (start, end) seconds within the chunk to seconds in the recording.

        Whisper puts a segment boundary anywhere in the pause between two utterances, often a
        second early, and here the pause is mostly cut out, so an early boundary would land in
        the utterance before. A start less than `tolerance` seconds before the end of its piece,
        in a span that goes on into the next piece, moves to that piece's start; an end less
        than `tolerance` into its piece moves back to the previous piece's end (0 turns this
        off). On a seam a start belongs to the later piece, an end to the earlier one. Times are
        clamped to the chunk."""
        ends = (np.cumsum([end - start for start, end in self.pieces]) / SAMPLE_RATE).tolist()
        begins = [0.0] + ends[:-1]
        last_piece = len(self.pieces) - 1

        def place(t: float, i: int) -> float:
            return round(self.pieces[i][0] / SAMPLE_RATE + t - begins[i], 3)

        mapped = []
        for start, end in spans:
            start, end = min(max(start, 0.0), ends[-1]), min(max(end, 0.0), ends[-1])
            first = max(bisect.bisect_right(begins, start) - 1, 0)
            if first < last_piece and ends[first] - start < tolerance and begins[first + 1] < end:
                first, start = first + 1, begins[first + 1]
            last = min(bisect.bisect_left(ends, end), last_piece)
            if last > first and end - begins[last] < tolerance:
                last, end = last - 1, ends[last - 1]
            begin = place(start, first)
            mapped.append((begin, max(begin, place(end, last))))
        return mapped


def chunk_speech(intervals: Sequence[tuple[int, int]], max_samples: int) -> list[Chunk]:
    """Speech intervals (start, end) in samples, in order, laid end to end into chunks of at most
    max_samples; an interval longer than that is cut into several."""
    pieces = [(s, min(s + max_samples, end)) for start, end in intervals for s in range(start, end, max_samples)]
    chunks: list[Chunk] = []
    current: list[tuple[int, int]] = []
    length = 0
    for start, end in pieces:
        if current and length + end - start > max_samples:
            chunks.append(Chunk(tuple(current)))
            current, length = [], 0
        current.append((start, end))
        length += end - start
    if current:
        chunks.append(Chunk(tuple(current)))
    return chunks


def plan_chunks(detector: SileroVAD, audio: np.ndarray, max_samples: int,
                vad: VadOptions = VadOptions()) -> list[Chunk]:
    """The chunks to decode for audio (T,): its speech, laid into windows of max_samples."""
    vad = replace(vad, max_speech_duration_s=min(vad.max_speech_duration_s, max_samples / SAMPLE_RATE))
    return chunk_speech(detect_speech(detector, audio, vad), max_samples)


@dataclass
class _Recording:
    """A recording while it is decoded: its chunks and, for each chunk, its decoded parts in
    order (the chunk itself, then any rest of it decoded again, see `_rest`), each with its
    language and its segments in seconds of that part (see `_part_segments`)."""

    n_samples: int
    chunks: list[Chunk]
    audio: np.ndarray | None = None  # kept until every part is decoded
    parts: list[list[tuple[Chunk, str, list[dict]]]] = field(default_factory=list)
    pending: int = 0  # chunks not yet decoded to their end


def _rest(r: DecodingResult, chunk: Chunk, tk: TokenizerBase) -> Chunk | None:
    """The part of `chunk` to decode again when its timestamped decoding did not end on a closing
    timestamp (it stopped at the start of a segment, or inside one): the rest from the last
    boundary between two segments, where the sequential path would seek. r.tokens are cut there."""
    ts = tk.timestamp_begin
    pairs = [i for i in range(1, len(r.tokens)) if r.tokens[i] >= ts and r.tokens[i - 1] >= ts]
    ends_single = len(r.tokens) >= 2 and r.tokens[-1] >= ts > r.tokens[-2]
    if not pairs or ends_single:
        return None
    cut = pairs[-1]
    at = round((r.tokens[cut] - ts) * TIME_PRECISION * SAMPLE_RATE)
    r.tokens = r.tokens[:cut]
    return chunk.after(at) if 0 < at < chunk.n_samples else None


def _part_segments(model: Whisper, r: DecodingResult, chunk: Chunk, tk: TokenizerBase, features: Tensor,
                   opts: TranscribeOptions) -> list[dict]:
    """Segments {"start", "end", "text", "tokens"[, "words"]} of one decoded part, in seconds of
    the part; words (from features (1, F, D)) when opts.word_timestamps."""
    segments = segments_from_tokens(r.tokens, tk)
    for s in segments:
        s["end"] = s["end"] if s["end"] is not None else chunk.n_samples / SAMPLE_RATE
    if opts.word_timestamps and not opts.decoding.without_timestamps and segments:
        add_word_timestamps(segments, model, tk, features, chunk.n_samples // HOP_LENGTH, 0.0, 0.0,
                            opts.prepend_punctuations, opts.append_punctuations,
                            language=r.language, task=opts.decoding.task)
    return segments


def _decode_recordings(model: Whisper, recordings: Iterable[_Recording], opts: TranscribeOptions,
                       tokenizer: TokenizerBase) -> None:
    """Decode the chunks of every recording into `_Recording.parts`, batch_size at a time across
    recordings; the rest of a chunk whose decoding stopped early joins a later batch."""
    size = window_frames(model.dims.n_audio_ctx)
    queue: list[tuple[_Recording, int, Chunk, torch.Tensor]] = []
    paddings = PaddingWindows(model)

    def enqueue(rec: _Recording, i: int, chunk: Chunk):
        mel = log_mel_window(chunk.audio(rec.audio), model.dims.n_mels, size, opts.silence_padding)
        if opts.trim_padding:  # the rest of a chunk is often a few seconds
            mel = mel[:, :trimmed_frames(chunk.n_samples // HOP_LENGTH, size)]
        queue.append((rec, i, chunk, mel))

    def flush():
        batch = queue[:opts.batch_size]
        del queue[:opts.batch_size]
        features = embed_windows(model, [mel for *_, mel in batch], paddings)
        results = decode_with_fallback(model, features, opts.decoding, tokenizer, opts.fallback)
        for j, ((rec, i, chunk, _), r) in enumerate(zip(batch, results)):
            if opts.fallback.is_no_speech(r):
                r = replace(r, tokens=[], text="")
            rest = _rest(r, chunk, tokenizer) if r.tokens else None
            rec.parts[i].append((chunk, r.language, _part_segments(model, r, chunk, tokenizer, features[j:j + 1], opts)))
            if rest is not None:
                enqueue(rec, i, rest)
                continue
            rec.pending -= 1
            if not rec.pending:
                rec.audio = None

    for rec in recordings:
        rec.parts, rec.pending = [[] for _ in rec.chunks], len(rec.chunks)
        for i, chunk in enumerate(rec.chunks):
            enqueue(rec, i, chunk)
            if len(queue) >= opts.batch_size:
                flush()
        if not rec.pending:
            rec.audio = None
    while queue:
        flush()


def _result(rec: _Recording, opts: TranscribeOptions) -> dict:
    """The sequential path's result dict: {"text", "language", "segments", "duration"}."""
    segments = []
    decoded = [part for parts in rec.parts for part in parts if part[2]]
    # Without timestamps a segment is a whole chunk, and word times are aligned to the audio:
    # neither needs moving onto a seam.
    seams = not opts.decoding.without_timestamps and not opts.word_timestamps
    for chunk, _, pieces in decoded:
        times = chunk.to_recording([(s["start"], s["end"]) for s in pieces], SEAM_TOLERANCE if seams else 0.0)
        for (start, end), s in zip(times, pieces):
            segments.append({"start": start, "end": end, "text": s["text"]})
            if "words" in s:
                spans = chunk.to_recording([(w["start"], w["end"]) for w in s["words"]], 0.0)
                segments[-1]["words"] = [dict(w, start=a, end=b, probability=round(w["probability"], 4))
                                         for w, (a, b) in zip(s["words"], spans)]
    languages = Counter(language for _, language, _ in decoded)
    language = languages.most_common(1)[0][0] if languages else opts.decoding.language
    return {"text": " ".join(s["text"] for s in segments).strip(), "language": language, "segments": segments,
            "duration": round(rec.n_samples / SAMPLE_RATE, 3)}


def transcribe_batched(model: Whisper, audio: np.ndarray, opts: TranscribeOptions = TranscribeOptions(),
                       tokenizer: TokenizerBase | None = None, vad: VadOptions = VadOptions(),
                       detector: SileroVAD | None = None) -> dict:
    """Transcribe audio (T,) at 16 kHz of any length: Silero VAD finds the speech, which is cut
    into chunks of at most one window (30 s), decoded opts.batch_size at a time, each with
    temperature fallback and without the previous chunk's text.

    Returns {"text", "language", "segments": [{"start", "end", "text"[, "words"]}], "duration"} as
    `longform.transcribe_long`, times in seconds of the recording (words with
    opts.word_timestamps: [{"word", "start", "end", "probability"}]). Without timestamps
    each chunk is one segment from its first piece's start to its last piece's end. `language`
    (when not given) is detected per chunk; the one found most often is reported. `detector`
    defaults to `vad.load_silero_vad()`, which needs the silero-vad package; `tokenizer` to
    Whisper's vocabulary for the model."""
    detector = detector or load_silero_vad()
    rec = _Recording(len(audio), plan_chunks(detector, audio, window_frames(model.dims.n_audio_ctx) * HOP_LENGTH, vad), audio)
    _decode_recordings(model, [rec], opts, tokenizer or whisper_vocabulary(model))
    return _result(rec, opts)


def transcribe_files_batched(model: Whisper, paths: list[Path], opts: TranscribeOptions,
                             tokenizer: TokenizerBase | None = None, vad: VadOptions = VadOptions(),
                             detector: SileroVAD | None = None,
                             load: Callable[[Path], np.ndarray] = load_audio) -> tuple[list[dict], list[tuple[Path, str]]]:
    """`transcribe_batched` over files, the chunks of all files sharing batches; `load` reads a
    file's 16 kHz samples (T,). The same return as `transcriber.transcribe_files`: (results in
    input order, [(path, error line)])."""
    detector = detector or load_silero_vad()
    max_samples = window_frames(model.dims.n_audio_ctx) * HOP_LENGTH
    recordings: dict[Path, _Recording] = {}
    failed: list[tuple[Path, str]] = []

    def planned() -> Iterator[_Recording]:
        for path in tqdm(paths, desc="transcribing", unit="file", disable=not opts.progress):
            try:
                audio = load(path)
            except AudioError as e:
                failed.append((path, str(e)))
                continue
            recordings[path] = _Recording(len(audio), plan_chunks(detector, audio, max_samples, vad), audio)
            yield recordings[path]

    _decode_recordings(model, planned(), opts, tokenizer or whisper_vocabulary(model))
    return [{"audio": str(p), **_result(recordings[p], opts)} for p in paths if p in recordings], failed
