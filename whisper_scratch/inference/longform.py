"""Recordings longer than one window, transcribed window by window as openai-whisper's
transcribe() does: the next window starts where the last complete segment ends, the text so far
prompts the next window, and (with word timestamps) silences around invented text are skipped."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..audio.features import LogMelFrames, pad_or_trim
from ..audio.geometry import FRAMES_PER_SECOND, HOP_LENGTH, SAMPLE_RATE, window_frames
from ..audio.io import is_silent
from ..common.messages import one_line
from ..model.loaded import whisper_vocabulary
from ..model.whisper import Whisper
from ..tokenizer import TokenizerBase
from .decoding import decode_with_fallback, detect_language, prompt_tokens
from .options import Interrupted, TranscribeOptions, TranscriptionStopped
from .segments import public_segment, window_segments
from .timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS, add_word_timestamps


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


def _clips(clip_timestamps: tuple[float, ...], content_frames: int) -> list[tuple[int, int]]:
    """(first, end) frames of the parts to transcribe: start,end,start,end,... seconds, the last
    end defaulting to the end of the recording; parts past its end are cut there."""
    points = [min(round(t * FRAMES_PER_SECOND), content_frames) for t in clip_timestamps] or [0]
    if len(points) % 2:
        points.append(content_frames)
    return list(zip(points[::2], points[1::2]))


@torch.no_grad()
def transcribe_long(model: Whisper, audio: np.ndarray, opts: TranscribeOptions,
                    tokenizer: TokenizerBase | None = None, name: str = "") -> dict:
    """Transcribe a recording of any length window by window, as openai-whisper's transcribe():
    the language from the first window unless given; each window decoded with timestamps (and
    fallback); the next window starts where its last complete segment ends; with
    `condition_on_previous_text`, the text so far (timestamps included, after the initial prompt
    `opts.decoding.prompt`) prompts the next window, reset after a window decoded hotter than 0.5.
    `tokenizer` defaults to Whisper's vocabulary for the model.

    Returns {"text", "language", "segments": [{"start", "end", "text", ["words"]}], "duration"}.
    Raises TranscriptionStopped (a decoding error) or Interrupted (Ctrl-C) carrying the windows done."""
    size = window_frames(model.dims.n_audio_ctx)
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

    tk = tokenizer or whisper_vocabulary(model)
    language = opts.decoding.language
    if language is None:
        language = detect_language(model, features(0, size), tk)[0][0]
    decoding = replace(opts.decoding, language=language, without_timestamps=False)
    initial = prompt_tokens(tk, opts.decoding.prompt)
    all_tokens, reset_since = list(initial), 0
    segments: list[dict] = []
    last_speech = 0.0

    def result() -> dict:
        return {"text": tk.decode(all_tokens[len(initial):]).strip(), "language": language,
                "segments": [public_segment(s) for s in segments], "duration": round(len(audio) / SAMPLE_RATE, 3)}

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
                    r = decode_with_fallback(model, x, replace(decoding, prompt=prompt or None), tk, opts.fallback)[0]
                    if opts.fallback.is_no_speech(r):
                        seek += window.n_frames
                        continue
                    current, advance, single_ending = window_segments(r.tokens, tk, window.start, window.n_frames)
                    seek += advance
                    if opts.word_timestamps:
                        add_word_timestamps(current, model, tk, x, window.n_frames, window.start, last_speech,
                                            opts.prepend_punctuations, opts.append_punctuations,
                                            language=language, task=decoding.task)
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
                                       f"({one_line(e)}); the text before is kept", result()) from e
    return result()
