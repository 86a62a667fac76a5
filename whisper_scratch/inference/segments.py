"""Timestamped tokens read as segments: a clip's `<|t0|> text <|t1|>` pairs, and the reference's
reading of one window of a long recording (where the next window starts)."""
from __future__ import annotations

from ..audio.geometry import FRAMES_PER_TOKEN, HOP_LENGTH, SAMPLE_RATE, TIME_PRECISION
from ..tokenizer import TokenizerBase


def segments_from_tokens(tokens: list[int], tokenizer: TokenizerBase, offset: float = 0.0) -> list[dict]:
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


def window_segments(tokens: list[int], tokenizer: TokenizerBase, time_offset: float,
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


def _segment(tokens: list[int], tokenizer: TokenizerBase, start: float, end: float) -> dict:
    return {"start": start, "end": end, "text": tokenizer.decode(tokens), "tokens": tokens}


def public_segment(segment: dict) -> dict:
    """A segment as results carry it: times rounded to the millisecond, text stripped."""
    out = {"start": round(segment["start"], 3), "end": round(segment["end"], 3), "text": segment["text"].strip()}
    if "words" in segment:
        out["words"] = [dict(w, probability=round(w["probability"], 4)) for w in segment["words"]]
    return out
