"""From audio files to transcripts: batched clips, temperature fallback, no-speech gating and
timestamp-driven 30-second windows for recordings longer than one window."""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from tokenizer import WhisperTokenizer

from .audio import (HOP_LENGTH, SAMPLE_RATE, AudioError, LogMelFrames, is_silent, load_audio, log_mel_window,
                    pad_or_trim)
from .decoding import (TIME_PRECISION, DecodingOptions, DecodingResult, decode_features, detect_language,
                       tokenizer_for)
from .model import Whisper
from .timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS, add_word_timestamps

FRAMES_PER_TOKEN = 2  # mel frames per timestamp step (conv2 has stride 2)
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # mel frames
# trim_padding rounds a clip's frames up to a multiple of this (2 s): few distinct lengths, so
# clips of one length fill whole batches, at a small cost in padding frames still encoded.
TRIM_STEP = 200
# ... after at least this many padding frames: the encoder sees where the speech ends.
TRIM_MARGIN = 200
# Padding windows are encoded once per padding level, rounded to this (with silence_padding the
# level is the clip's floor, which varies; without, it is always 0).
LEVEL_STEP = 0.25


@dataclass(frozen=True)
class TranscribeOptions:
    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    batch_size: int = 8
    # Fallback: re-decode at the next temperature when the output loops or is unlikely.
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    progress: bool = True
    # Opt-in speed-up for clips shorter than a window: encode only the clip's own frames and
    # TRIM_MARGIN more (rounded up to TRIM_STEP) and take the rest of the window from
    # `padding_features`. Transcripts may differ slightly from the full window's; batches then
    # hold clips of one rounded length only.
    trim_padding: bool = False
    # Opt-in: pad clips with silence before the log-mel (see audio.log_mel_window).
    silence_padding: bool = False
    # Word-level timestamps (timing.py): segments get "words" [{"word", "start", "end", "probability"}].
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS  # joined to the word after them
    append_punctuations: str = APPEND_PUNCTUATIONS  # joined to the word before them
    # With word timestamps: skip silences longer than this (seconds) around text that looks invented.
    hallucination_silence_threshold: float | None = None
    # Transcribe only these parts, in seconds: start,end,start,end,... (an odd count's last part
    # runs to the end). Files are then decoded window by window whatever their length.
    clip_timestamps: tuple[float, ...] = ()


def _needs_fallback(r: DecodingResult, opts: TranscribeOptions) -> bool:
    """The output loops or is unlikely, and is not excused as silence (the reference's rules)."""
    too_repetitive = opts.compression_ratio_threshold is not None and r.compression_ratio > opts.compression_ratio_threshold
    too_unlikely = opts.logprob_threshold is not None and r.avg_logprob < opts.logprob_threshold
    silence = (opts.no_speech_threshold is not None and r.no_speech_prob > opts.no_speech_threshold
               and too_unlikely)
    return (too_repetitive or too_unlikely) and not silence


def _best_attempt(attempts: list[DecodingResult], opts: TranscribeOptions) -> DecodingResult:
    """When every temperature failed, faster-whisper's choice: the most likely attempt among those
    that do not loop. openai-whisper keeps the last, hottest sample, which on a one-word clip is
    often a sentence of invented words."""
    limit = opts.compression_ratio_threshold
    not_looping = [r for r in attempts if limit is None or r.compression_ratio <= limit]
    return max(not_looping or attempts, key=lambda r: r.avg_logprob)


def is_no_speech(r: DecodingResult, opts: TranscribeOptions) -> bool:
    """Whisper's no-speech rule, applied to the final decoding of a window: the <|nospeech|>
    probability is high and the text is not likely enough to overrule it."""
    if opts.no_speech_threshold is None or r.no_speech_prob <= opts.no_speech_threshold:
        return False
    return not (opts.logprob_threshold is not None and r.avg_logprob > opts.logprob_threshold)


@torch.no_grad()
def padding_features(model: Whisper, level: float = 0.0) -> Tensor:
    """Encoder output (1, n_audio_ctx, D) for a window of padding only: every mel value `level`
    (0 for zero frames; a clip's floor with silence_padding).

    With `trim_padding` these stand in for a clip's padding frames: Whisper's decoder needs the
    whole window (given only a clip's own frames it repeats itself until the token limit), and a
    padding frame's features depend mostly on its position, little on the speech before it."""
    mel = torch.full((1, model.dims.n_mels, window_frames_of(model)), level, device=model.device, dtype=model.dtype)
    return model.embed_audio(mel)


def embed_audio(model: Whisper, mel: Tensor, padding: Tensor | None = None) -> Tensor:
    """Features (B, n_audio_ctx, D) of mel (B, n_mels, n): a full window (n = 3000), or the first
    n frames of one, completed with the frames of `padding` (1 or B, n_audio_ctx, D; from
    `padding_features`) after them."""
    return model.embed_audio(mel.to(model.device, model.dtype), padding)


@torch.no_grad()
def decode_with_fallback(model: Whisper, features: Tensor, opts: TranscribeOptions,
                         tokenizer: WhisperTokenizer | None = None,
                         decoding: DecodingOptions | None = None) -> list[DecodingResult]:
    """Decode features (B, n_audio_ctx, D) (see `embed_audio`); rows that fail the quality checks
    are decoded again, alone in a smaller batch, at the next temperature. Rows that are no speech
    (`is_no_speech`) come back as decoded: the caller drops their text."""
    decoding = decoding or opts.decoding
    results = decode_features(model, features, replace(decoding, temperature=opts.temperatures[0]), tokenizer)
    attempts = [[r] for r in results]
    for temperature in opts.temperatures[1:]:
        retry = [i for i, r in enumerate(results) if _needs_fallback(r, opts)]
        if not retry:
            break
        # Sampling at T > 0 explores; beam search is only used at T = 0, as in the reference.
        again = decode_features(model, features[retry], replace(decoding, temperature=temperature, beam_size=None),
                                tokenizer)
        for i, r in zip(retry, again):
            results[i] = r
            attempts[i].append(r)
    for i, r in enumerate(results):
        if _needs_fallback(r, opts):
            results[i] = _best_attempt(attempts[i], opts)
    return results


def segments_from_tokens(tokens: list[int], tokenizer: WhisperTokenizer, offset: float = 0.0) -> list[dict]:
    """Split the timestamped tokens of a clip, `<|t0|> text <|t1|><|t1|> text <|t2|>`, into segments
    {"start", "end", "text", "tokens"} (seconds; "end" None for trailing text left open)."""
    ts = tokenizer.timestamp_begin
    segments, start, text = [], None, []
    for t in tokens:
        if t >= ts:
            time = offset + (t - ts) * TIME_PRECISION
            if start is None:
                start = time
            elif text:
                segments.append({"start": start, "end": time, "text": tokenizer.decode(text).strip(),
                                 "tokens": [*text, t]})
                start, text = None, []
            else:
                start = time
        elif t < tokenizer.eot:
            text.append(t)
    if text:
        segments.append({"start": start if start is not None else offset, "end": None,
                         "text": tokenizer.decode(text).strip(), "tokens": text})
    return segments


def window_segments(tokens: list[int], tokenizer: WhisperTokenizer, time_offset: float,
                    n_frames: int) -> tuple[list[dict], int, bool]:
    """The reference's reading of one window of a long recording, which starts at `time_offset`
    seconds and holds n_frames mel frames of audio: (segments {"start", "end", "text", "tokens"},
    mel frames to advance, whether the output ended on a single timestamp).

    Each pair of consecutive timestamps closes a segment. Text after the last pair is unfinished:
    it is dropped and the next window starts at that pair, unless a lone final timestamp says
    nothing more is spoken in the window (then the whole window is consumed)."""
    ts = tokenizer.timestamp_begin
    stamp = [t >= ts for t in tokens]
    single_ending = stamp[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if stamp[i] and stamp[i + 1]]
    if not cuts:
        stamps = [t for t in tokens if t >= ts]
        duration = n_frames * HOP_LENGTH / SAMPLE_RATE
        if stamps and stamps[-1] != ts:
            duration = (stamps[-1] - ts) * TIME_PRECISION
        return [_segment(tokens, tokenizer, time_offset, time_offset + duration)], n_frames, single_ending
    if single_ending:
        cuts.append(len(tokens))
    segments, begin = [], 0
    for end in cuts:
        part = tokens[begin:end]
        segments.append(_segment(part, tokenizer, time_offset + (part[0] - ts) * TIME_PRECISION,
                                 time_offset + (part[-1] - ts) * TIME_PRECISION))
        begin = end
    advance = n_frames if single_ending else (tokens[begin - 1] - ts) * FRAMES_PER_TOKEN
    return segments, advance, single_ending


def _segment(tokens: list[int], tokenizer: WhisperTokenizer, start: float, end: float) -> dict:
    return {"start": start, "end": end, "text": tokenizer.decode(tokens), "tokens": tokens}


def _words_end(segments: list[dict]) -> float | None:
    """Where the last word ends, else the last segment's end (None without segments)."""
    ends = [w["end"] for s in segments for w in s.get("words", [])]
    return ends[-1] if ends else (segments[-1]["end"] if segments else None)


def _anomaly(word: dict) -> float:
    """How unlike a real word a word timing is: improbable, very short or very long."""
    duration = word["end"] - word["start"]
    score = 1.0 if word["probability"] < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def _is_hallucination(segment: dict | None) -> bool:
    """Judged on its first 8 words (punctuation aside), as the reference does."""
    if segment is None or not segment["words"]:
        return False
    words = [w for w in segment["words"] if w["word"] not in PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS][:8]
    score = sum(_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def _next_with_words(segments: list[dict]) -> dict | None:
    return next((s for s in segments if s["words"]), None)


@dataclass
class _Window:
    """One decoding window of a long recording, in mel frames and seconds."""
    seek: int  # first frame
    n_frames: int  # frames of audio in it (the rest of the model's window is zero padding)
    size: int  # the model's window

    @property
    def start(self) -> float:
        return self.seek * HOP_LENGTH / SAMPLE_RATE

    @property
    def end(self) -> float:  # of the model's window, padding included
        return (self.seek + self.size) * HOP_LENGTH / SAMPLE_RATE

    @property
    def duration(self) -> float:  # of its audio
        return self.n_frames * HOP_LENGTH / SAMPLE_RATE


def _skip_hallucinations(segments: list[dict], window: _Window, seek: int, single_ending: bool,
                         last_speech: float, content_frames: int, threshold: float) -> tuple[int, bool]:
    """The reference's --hallucination_silence_threshold: where a window's segments look invented
    (improbable, too short or too long words) and sit in silence longer than `threshold` seconds,
    skip the silence instead of keeping them. Drops such segments from `segments` in place;
    returns (the next seek, whether to drop the whole window and decode again from there)."""
    if not single_ending:
        end = _words_end(segments)
        if end is not None and end > window.start:
            seek = round(end * FRAMES_PER_SECOND) if window.end - end > threshold else window.seek + window.n_frames
    first = _next_with_words(segments)
    if first is not None and _is_hallucination(first):
        gap = first["start"] - window.start
        if gap > threshold:
            return window.seek + round(gap * FRAMES_PER_SECOND), True
    last_end = last_speech
    for i, segment in enumerate(segments):
        if not segment["words"]:
            continue
        if _is_hallucination(segment):
            following = _next_with_words(segments[i + 1:])
            next_start = following["words"][0]["start"] if following else window.start + window.duration
            silence_before = (segment["start"] - last_end > threshold or segment["start"] < threshold
                              or segment["start"] - window.start < 2.0)
            silence_after = (next_start - segment["end"] > threshold or _is_hallucination(following)
                             or window.end - segment["end"] < 2.0)
            if silence_before and silence_after:
                seek = round(max(window.start + 1, segment["start"]) * FRAMES_PER_SECOND)
                if content_frames * HOP_LENGTH / SAMPLE_RATE - segment["end"] < threshold:
                    seek = content_frames
                del segments[i:]
                break
        last_end = segment["end"]
    return seek, False


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during transcription; `results` and `failed` (as `transcribe_files` returns them)
    hold what was done, a long recording's finished windows included."""

    def __init__(self, results: list[dict], failed: list[tuple[Path, str]]):
        super().__init__("interrupted")
        self.results, self.failed = results, failed


class TranscriptionStopped(RuntimeError):
    """Decoding a long recording failed part-way; `result` holds the windows done before."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def _prompt_tokens(prompt: str | list[int] | None, tokenizer: WhisperTokenizer) -> list[int]:
    if not prompt:
        return []
    return tokenizer.encode(" " + prompt.strip()) if isinstance(prompt, str) else list(prompt)


def _clips(clip_timestamps: tuple[float, ...], content_frames: int) -> list[tuple[int, int]]:
    """(first, end) frames of the parts to transcribe: start,end,start,end,... seconds, the last
    end defaulting to the end of the recording; parts past its end are cut there."""
    points = [min(round(t * FRAMES_PER_SECOND), content_frames) for t in clip_timestamps] or [0]
    if len(points) % 2:
        points.append(content_frames)
    return list(zip(points[::2], points[1::2]))


@torch.no_grad()
def transcribe_long(model: Whisper, audio: np.ndarray, opts: TranscribeOptions,
                    tokenizer: WhisperTokenizer | None = None, name: str = "") -> dict:
    """Transcribe a recording of any length window by window, as openai-whisper's transcribe():
    the language from the first window unless given; each window decoded with timestamps (and
    fallback); the next window starts where its last complete segment ends; with
    `condition_on_previous_text`, the text so far (timestamps included, after the initial prompt
    `opts.decoding.prompt`) prompts the next window, reset after a window decoded hotter than 0.5.

    Returns {"text", "language", "segments": [{"start", "end", "text", ["words"]}], "duration"}.
    Raises TranscriptionStopped (a decoding error) or Interrupted (Ctrl-C) carrying the windows done."""
    size = window_frames_of(model)
    mel = LogMelFrames(audio, model.dims.n_mels, padding=size * HOP_LENGTH)
    content_frames = mel.n_frames - size
    encoded: dict[tuple[int, int], Tensor] = {}

    def features(seek: int, n_frames: int) -> Tensor:
        # The first window is also what detects the language: encode it once.
        if (seek, n_frames) not in encoded:
            encoded.clear()
            window = pad_or_trim(mel.frames(seek, seek + n_frames), size)[None]
            encoded[seek, n_frames] = model.embed_audio(window.to(model.device, model.dtype))
        return encoded[seek, n_frames]

    language = opts.decoding.language
    if language is None:
        tk = tokenizer or tokenizer_for(model)
        language = detect_language(model, features(0, size), tk)[0][0]
    tk = tokenizer or tokenizer_for(model, DecodingOptions(language=language, task=opts.decoding.task))
    decoding = replace(opts.decoding, language=language, without_timestamps=False)
    initial = _prompt_tokens(opts.decoding.prompt, tk)
    all_tokens, reset_since = list(initial), 0
    segments: list[dict] = []
    last_speech = 0.0

    def result() -> dict:
        return {"text": tk.decode(all_tokens[len(initial):]).strip(), "language": language,
                "segments": [_public(s) for s in segments], "duration": round(len(audio) / SAMPLE_RATE, 3)}

    seek = 0
    with tqdm(total=round(content_frames / FRAMES_PER_SECOND, 2), unit="s", desc=name or "transcribing",
              disable=not opts.progress, leave=False) as bar:
        try:
            for clip_start, clip_end in _clips(opts.clip_timestamps, content_frames):
                seek = clip_start
                while seek < clip_end:
                    bar.update(max(0.0, round(min(seek, content_frames) / FRAMES_PER_SECOND - bar.n, 2)))
                    window = _Window(seek, min(size, content_frames - seek, clip_end - seek), size)
                    if is_silent(audio[seek * HOP_LENGTH:(seek + window.n_frames) * HOP_LENGTH]):
                        seek += window.n_frames  # digital silence: nothing to hear, and Whisper would invent
                        continue
                    prompt = all_tokens[reset_since:]
                    x = features(seek, window.n_frames)
                    r = decode_with_fallback(model, x, opts, tk, replace(decoding, prompt=prompt or None))[0]
                    if is_no_speech(r, opts):
                        seek += window.n_frames
                        continue
                    current, advance, single_ending = window_segments(r.tokens, tk, window.start, window.n_frames)
                    seek += advance
                    if opts.word_timestamps:
                        add_word_timestamps(current, model, tk, x, window.n_frames, window.start, last_speech,
                                            opts.prepend_punctuations, opts.append_punctuations)
                        end = _words_end(current)
                        if not single_ending and end is not None and end > window.start:
                            seek = round(end * FRAMES_PER_SECOND)
                        if opts.hallucination_silence_threshold is not None:
                            seek, again = _skip_hallucinations(current, window, seek, single_ending, last_speech,
                                                               content_frames, opts.hallucination_silence_threshold)
                            if again:
                                continue
                        end = _words_end(current)
                        if end is not None:
                            last_speech = end
                    for s in current:
                        # An instantaneous or empty segment says nothing, and does not prompt.
                        if s["start"] != s["end"] and s["text"].strip():
                            segments.append(s)
                            all_tokens.extend(s["tokens"])
                    if not opts.condition_on_previous_text or r.temperature > 0.5:
                        reset_since = len(all_tokens)  # a sampled window is a poor prompt
            bar.update(round(content_frames / FRAMES_PER_SECOND - bar.n, 2))
        except KeyboardInterrupt:
            raise Interrupted([result()], []) from None
        except Exception as e:
            done = seek * HOP_LENGTH / SAMPLE_RATE
            raise TranscriptionStopped(f"decoding stopped at {done:.1f} s of {len(audio) / SAMPLE_RATE:.1f} s "
                                       f"({_one_line(e)}); the text before is kept", result()) from e
    return result()


def _public(segment: dict) -> dict:
    """A segment as results carry it: times rounded to the millisecond, text stripped."""
    out = {"start": round(segment["start"], 3), "end": round(segment["end"], 3), "text": segment["text"].strip()}
    if "words" in segment:
        out["words"] = [dict(w, probability=round(w["probability"], 4)) for w in segment["words"]]
    return out


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _tokenizer(model: Whisper, language: str | None, task: str) -> WhisperTokenizer:
    return tokenizer_for(model, DecodingOptions(language=language, task=task))


def window_frames_of(model: Whisper) -> int:
    """Mel frames in one encoder window: 3000 (30 s) for published models, fewer for small
    models trained from scratch on short clips."""
    return 2 * model.dims.n_audio_ctx


def trimmed_frames(content_frames: int, size: int) -> int:
    """Mel frames that `trim_padding` encodes for a clip of `content_frames` frames: those and
    TRIM_MARGIN padding frames, rounded up to TRIM_STEP, at most the window's `size`."""
    steps = math.ceil((content_frames + TRIM_MARGIN) / TRIM_STEP)
    return min(size, steps * TRIM_STEP)


def _load(path: Path, n_mels: int, n_frames: int, silence_padding: bool,
          sequential: bool, load: Callable[[Path], np.ndarray] = load_audio) -> tuple[np.ndarray, Tensor] | None:
    """A clip that fits one window: its audio and encoder input. None for a file to be decoded
    window by window: it is read again when its turn comes, so that prefetching never holds
    more than one long recording. `load` reads a file's 16 kHz samples (T,)."""
    audio = load(path)
    if sequential or len(audio) > n_frames * HOP_LENGTH:
        return None
    return audio, log_mel_window(audio, n_mels, n_frames, silence_padding)


def _prefetch(paths: list[Path], n_mels: int, n_frames: int, ahead: int, silence_padding: bool,
              sequential: bool, load: Callable[[Path], np.ndarray] = load_audio
              ) -> Iterator[tuple[Path, tuple | AudioError | None]]:
    """Decode audio in a background thread while the model works (soundfile releases the GIL),
    keeping at most `ahead` files in memory."""
    def job(p: Path):
        try:
            return _load(p, n_mels, n_frames, silence_padding, sequential, load)
        except AudioError as e:
            return e
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque()
        for p in paths:
            pending.append((p, pool.submit(job, p)))
            if len(pending) > ahead:
                q, f = pending.popleft()
                yield q, f.result()
        while pending:
            q, f = pending.popleft()
            yield q, f.result()


def transcribe_files(model: Whisper, paths: list[Path], opts: TranscribeOptions,
                     tokenizer: WhisperTokenizer | None = None,
                     load: Callable[[Path], np.ndarray] = load_audio) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Transcribe many files: clips up to 30 s go through in batches, longer ones (and every file
    when `clip_timestamps` are given) window by window with `transcribe_long`. `load` reads a
    file's 16 kHz samples (T,); noisy evaluation passes one that mixes in noise.

    Returns (results in input order, [(path, error line)] for files that could not be read or
    failed part-way; a long recording that failed part-way is also in the results, with the text
    of the windows done). Ctrl-C raises Interrupted carrying both lists so far."""
    results: dict[Path, dict] = {}
    failed: list[tuple[Path, str]] = []
    size = window_frames_of(model)
    sequential = bool(opts.clip_timestamps)
    # Clips wait in one batch per encoded length (always the full window without trim_padding), so
    # a clip's transcript never depends on the lengths of the others.
    batches: dict[int, list[tuple[Path, np.ndarray, Tensor]]] = {}
    paddings: dict[float, Tensor] = {}  # padding_features by rounded padding level

    def padding_for(mel: Tensor) -> Tensor:
        # A trimmed window ends with at least TRIM_MARGIN padding frames: the last one's value is
        # the padding level.
        level = round(float(mel[0, -1]) / LEVEL_STEP) * LEVEL_STEP
        if level not in paddings:
            paddings[level] = padding_features(model, level)
        return paddings[level]

    def flush(batch: list[tuple[Path, np.ndarray, Tensor]]):
        try:
            mels = torch.stack([m for _, _, m in batch])
            padding = torch.cat([padding_for(m) for _, _, m in batch]) if mels.shape[-1] < size else None
            for (p, audio, _), result in zip(batch, _transcribe_clips(model, mels, [a for _, a, _ in batch], opts,
                                                                       tokenizer, padding)):
                results[p] = {"audio": str(p), **result}
        except Exception as e:  # noqa: BLE001 -- one failing batch must not cost the other files
            failed.extend((p, f"cannot transcribe {p}: {_one_line(e)}") for p, _, _ in batch)

    def long_file(path: Path):
        try:
            results[path] = {"audio": str(path), **transcribe_long(model, load(path), opts, tokenizer,
                                                                   name=path.name)}
        except AudioError as e:
            failed.append((path, str(e)))
        except TranscriptionStopped as e:
            results[path] = {"audio": str(path), **e.result}
            failed.append((path, f"{path}: {e}"))
        except Interrupted as e:
            results[path] = {"audio": str(path), **e.results[0]}
            raise
        except Exception as e:  # noqa: BLE001 -- e.g. out of memory before the first window
            failed.append((path, f"cannot transcribe {path}: {_one_line(e)}"))

    try:
        with tqdm(total=len(paths), desc="transcribing", unit="file",
                  disable=not opts.progress or len(paths) == 1) as bar:
            for path, loaded in _prefetch(paths, model.dims.n_mels, size, 2 * opts.batch_size, opts.silence_padding,
                                          sequential, load):
                if isinstance(loaded, AudioError):
                    failed.append((path, str(loaded)))
                elif loaded is None:
                    long_file(path)
                elif is_silent(loaded[0]):
                    results[path] = {"audio": str(path), "text": "", "language": opts.decoding.language,
                                     "segments": [], "duration": round(len(loaded[0]) / SAMPLE_RATE, 3)}
                else:
                    audio, mel = loaded
                    frames = trimmed_frames(len(audio) // HOP_LENGTH, size) if opts.trim_padding else size
                    batch = batches.setdefault(frames, [])
                    batch.append((path, audio, mel[:, :frames]))
                    if len(batch) == opts.batch_size:
                        flush(batches.pop(frames))
                bar.update(1)
            for batch in batches.values():
                flush(batch)
    except KeyboardInterrupt:
        raise Interrupted([results[p] for p in paths if p in results], failed) from None
    return [results[p] for p in paths if p in results], failed


@torch.no_grad()
def _transcribe_clips(model: Whisper, mels: Tensor, audios: list[np.ndarray], opts: TranscribeOptions,
                      tokenizer: WhisperTokenizer | None, padding: Tensor | None) -> list[dict]:
    """Results {"text", "language", "segments", "duration"} of clips that fit one window each:
    mels (B, n_mels, n) their encoder inputs, `padding` as for `embed_audio`."""
    features = embed_audio(model, mels, padding)
    want_segments = not opts.decoding.without_timestamps
    out = []
    for i, (audio, r) in enumerate(zip(audios, decode_with_fallback(model, features, opts, tokenizer))):
        if is_no_speech(r, opts):
            r.text, r.tokens = "", []
        duration = round(len(audio) / SAMPLE_RATE, 3)
        tk = tokenizer or _tokenizer(model, r.language, opts.decoding.task)
        segments = segments_from_tokens(r.tokens, tk) if want_segments else []
        for s in segments:
            s["end"] = s["end"] if s["end"] is not None else duration
        if opts.word_timestamps and segments:
            add_word_timestamps(segments, model, tk, features[i:i + 1], len(audio) // HOP_LENGTH, 0.0, 0.0,
                                opts.prepend_punctuations, opts.append_punctuations)
        text = " ".join(s["text"] for s in segments) if want_segments else r.text
        out.append({"text": text.strip(), "language": r.language, "segments": [_public(s) for s in segments],
                    "duration": duration})
    return out
