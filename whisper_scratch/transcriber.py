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

from .audio import (HOP_LENGTH, SAMPLE_RATE, AudioError, is_silent, load_audio,
                    log_mel_spectrogram, log_mel_window, pad_or_trim)
from .decoding import TIME_PRECISION, DecodingOptions, DecodingResult, decode_features, tokenizer_for
from .model import Whisper

FRAMES_PER_TOKEN = 2  # mel frames per timestamp step (conv2 has stride 2)
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


def _needs_fallback(r: DecodingResult, opts: TranscribeOptions) -> bool:
    if _is_silence(r, opts):
        return False
    too_repetitive = opts.compression_ratio_threshold is not None and r.compression_ratio > opts.compression_ratio_threshold
    too_unlikely = opts.logprob_threshold is not None and r.avg_logprob < opts.logprob_threshold
    return too_repetitive or too_unlikely


def _best_attempt(attempts: list[DecodingResult], opts: TranscribeOptions) -> DecodingResult:
    """When every temperature failed, faster-whisper's choice: the most likely attempt among those
    that do not loop. openai-whisper keeps the last, hottest sample, which on a one-word clip is
    often a sentence of invented words."""
    limit = opts.compression_ratio_threshold
    not_looping = [r for r in attempts if limit is None or r.compression_ratio <= limit]
    return max(not_looping or attempts, key=lambda r: r.avg_logprob)


def _is_silence(r: DecodingResult, opts: TranscribeOptions) -> bool:
    """Whisper's no-speech rule: the <|nospeech|> probability is high and the text is unlikely."""
    if opts.no_speech_threshold is None or r.no_speech_prob <= opts.no_speech_threshold:
        return False
    return opts.logprob_threshold is None or r.avg_logprob < opts.logprob_threshold


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
    features = model.embed_audio(mel.to(model.device, model.dtype))
    if features.shape[1] < model.dims.n_audio_ctx:
        rest = padding[:, features.shape[1]:].expand(features.shape[0], -1, -1)
        features = torch.cat([features, rest], dim=1)
    return features


@torch.no_grad()
def decode_with_fallback(model: Whisper, mel: Tensor, opts: TranscribeOptions,
                         tokenizer: WhisperTokenizer | None = None,
                         decoding: DecodingOptions | None = None,
                         padding: Tensor | None = None) -> list[DecodingResult]:
    """Decode mel (B, n_mels, 3000), or trimmed windows (B, n_mels, n) with `padding` (see
    `embed_audio`); rows that fail the quality checks are decoded again, alone in a smaller batch,
    at the next temperature. Silent rows come back with empty text."""
    decoding = decoding or opts.decoding
    features = embed_audio(model, mel, padding)
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
    for r in results:
        if _is_silence(r, opts):
            r.text, r.tokens = "", []
    return results


def segments_from_tokens(tokens: list[int], tokenizer: WhisperTokenizer, offset: float = 0.0) -> list[dict]:
    """Split timestamped tokens `<|t0|> text <|t1|><|t1|> text <|t2|>` into segments (seconds)."""
    ts = tokenizer.timestamp_begin
    segments, start, text = [], None, []
    for t in tokens:
        if t >= ts:
            time = offset + (t - ts) * TIME_PRECISION
            if start is None:
                start = time
            elif text:
                segments.append({"start": round(start, 3), "end": round(time, 3),
                                 "text": tokenizer.decode(text).strip()})
                start, text = None, []
            else:
                start = time
        elif t < tokenizer.eot:
            text.append(t)
    if text:  # trailing text without a closing timestamp
        segments.append({"start": round(start if start is not None else offset, 3), "end": None,
                         "text": tokenizer.decode(text).strip()})
    return segments


def transcribe_long(model: Whisper, audio: np.ndarray, opts: TranscribeOptions,
                    tokenizer: WhisperTokenizer | None = None) -> dict:
    """Transcribe a recording of any length window by window. With timestamps, each window's last
    complete timestamp says where the next one starts; without, windows follow end to end. With
    `condition_on_previous_text`, each window's text prompts the next."""
    size = window_frames_of(model)
    mel = log_mel_spectrogram(audio, model.dims.n_mels, padding=size * HOP_LENGTH)
    n_frames = mel.shape[-1] - size
    decoding = opts.decoding
    seek, segments, previous, language = 0, [], [], opts.decoding.language
    while seek < n_frames:
        window_frames = min(size, n_frames - seek)
        if is_silent(audio[seek * HOP_LENGTH:(seek + window_frames) * HOP_LENGTH]):
            seek += window_frames
            continue
        # As in the reference pipelines: frames past the recording's end are zeros.
        window = pad_or_trim(mel[:, seek:seek + window_frames], size)[None]
        prompt = previous[-(model.dims.n_text_ctx // 2 - 1):] if opts.condition_on_previous_text else None
        r = decode_with_fallback(model, window, opts, tokenizer,
                                 replace(decoding, prompt=prompt or None, language=language))[0]
        language = language or r.language
        offset = seek * HOP_LENGTH / SAMPLE_RATE
        if not r.tokens:
            seek += window_frames
            continue
        tk = tokenizer or _tokenizer(model, r.language, opts.decoding.task)
        stamps = [i for i, t in enumerate(r.tokens) if t >= tk.timestamp_begin]
        ends_single = len(r.tokens) >= 2 and r.tokens[-1] >= tk.timestamp_begin > r.tokens[-2]
        pairs = [i for i in stamps if i > 0 and r.tokens[i - 1] >= tk.timestamp_begin]
        if pairs and not ends_single:
            # Cut after the last complete segment; its unfinished tail is decoded again next window.
            cut = pairs[-1]
            kept = r.tokens[:cut]
            seek += (r.tokens[cut] - tk.timestamp_begin) * FRAMES_PER_TOKEN
        else:
            kept = r.tokens
            seek += window_frames
        for s in segments_from_tokens(kept, tk, offset):
            s["end"] = s["end"] if s["end"] is not None else round(offset + window_frames / 100, 3)
            segments.append(s)
        previous += [t for t in kept if t < tk.eot]
        if r.temperature > 0.5:
            previous = []  # a sampled window is a poor prompt: do not let its errors propagate
    return {"text": " ".join(s["text"] for s in segments).strip(), "language": language, "segments": segments,
            "duration": round(len(audio) / SAMPLE_RATE, 3)}


def _tokenizer(model: Whisper, language: str | None, task: str) -> WhisperTokenizer:
    return tokenizer_for(model, DecodingOptions(language=language, task=task))


def window_frames_of(model: Whisper) -> int:
    """Mel frames in one encoder window: 3000 (30 s) for published models, fewer for small
    models trained from scratch on short clips."""
    return 2 * model.dims.n_audio_ctx


def _trimmed_frames(n_samples: int, size: int) -> int:
    """Mel frames that `trim_padding` encodes for a clip of n_samples: its frames and TRIM_MARGIN
    padding frames, rounded up to TRIM_STEP, at most the window's `size`."""
    steps = math.ceil((n_samples // HOP_LENGTH + TRIM_MARGIN) / TRIM_STEP)
    return min(size, steps * TRIM_STEP)


def _load(path: Path, n_mels: int, n_frames: int, silence_padding: bool,
          load: Callable[[Path], np.ndarray] = load_audio) -> tuple[np.ndarray, Tensor | None]:
    """Audio and, for a clip that fits one window, its encoder input (None for longer recordings)."""
    audio = load(path)
    if len(audio) > n_frames * HOP_LENGTH:
        return audio, None
    return audio, log_mel_window(audio, n_mels, n_frames, silence_padding)


def _prefetch(paths: list[Path], n_mels: int, n_frames: int, ahead: int, silence_padding: bool,
              load: Callable[[Path], np.ndarray] = load_audio) -> Iterator[tuple[Path, tuple | AudioError]]:
    """Decode audio in a background thread while the model works (soundfile releases the GIL),
    keeping at most `ahead` files in memory."""
    def job(p: Path):
        try:
            return _load(p, n_mels, n_frames, silence_padding, load)
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
    """Transcribe many files: clips up to 30 s go through in batches, longer ones window by window.
    `load` reads a file's 16 kHz samples (T,); noisy evaluation passes one that mixes in noise.

    Returns (results in input order, [(path, error line)] for files that could not be read)."""
    results: dict[Path, dict] = {}
    failed: list[tuple[Path, str]] = []
    size = window_frames_of(model)
    # Clips wait in one batch per encoded length (always the full window without trim_padding), so
    # a clip's transcript never depends on the lengths of the others.
    batches: dict[int, list[tuple[Path, np.ndarray, Tensor]]] = {}
    want_segments = not opts.decoding.without_timestamps
    paddings: dict[float, Tensor] = {}  # padding_features by rounded padding level

    def padding_for(mel: Tensor) -> Tensor:
        # A trimmed window ends with at least TRIM_MARGIN padding frames: the last one's value is
        # the padding level.
        level = round(float(mel[0, -1]) / LEVEL_STEP) * LEVEL_STEP
        if level not in paddings:
            paddings[level] = padding_features(model, level)
        return paddings[level]

    def flush(batch: list[tuple[Path, np.ndarray, Tensor]]):
        mels = torch.stack([m for _, _, m in batch])
        padding = torch.cat([padding_for(m) for _, _, m in batch]) if mels.shape[-1] < size else None
        for (p, audio, _), r in zip(batch, decode_with_fallback(model, mels, opts, tokenizer, padding=padding)):
            duration = round(len(audio) / SAMPLE_RATE, 3)
            tk = tokenizer or _tokenizer(model, r.language, opts.decoding.task)
            segments = segments_from_tokens(r.tokens, tk) if want_segments else []
            for s in segments:
                s["end"] = s["end"] if s["end"] is not None else duration
            text = " ".join(s["text"] for s in segments) if want_segments else r.text
            results[p] = {"audio": str(p), "text": text.strip(), "language": r.language,
                          "segments": segments, "duration": duration}

    with tqdm(total=len(paths), desc="transcribing", unit="file", disable=not opts.progress) as bar:
        for path, loaded in _prefetch(paths, model.dims.n_mels, size, 2 * opts.batch_size, opts.silence_padding,
                                      load):
            if isinstance(loaded, AudioError):
                failed.append((path, str(loaded)))
            elif is_silent(loaded[0]):
                results[path] = {"audio": str(path), "text": "", "language": opts.decoding.language,
                                 "segments": [], "duration": round(len(loaded[0]) / SAMPLE_RATE, 3)}
            elif loaded[1] is None:
                results[path] = {"audio": str(path), **transcribe_long(model, loaded[0], opts, tokenizer)}
            else:
                audio, mel = loaded
                frames = _trimmed_frames(len(audio), size) if opts.trim_padding else size
                batch = batches.setdefault(frames, [])
                batch.append((path, audio, mel[:, :frames]))
                if len(batch) == opts.batch_size:
                    flush(batches.pop(frames))
            bar.update(1)
        for batch in batches.values():
            flush(batch)
    return [results[p] for p in paths if p in results], failed
