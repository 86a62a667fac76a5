"""Word-level timestamps: the decoder's cross-attention on its alignment heads, smoothed, then
aligned to the audio frames by dynamic time warping (the method of openai-whisper's timing.py).

Shapes: T text tokens, F encoder frames (1500 per 30 s window, 20 ms each), H alignment heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.whisper import Whisper
from ..tokenizer import TokenizerBase

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"
MEDFILT_WIDTH = 7  # frames of the median filter over each head's attention
TOKENS_PER_SECOND = 50  # encoder frames (and timestamp steps) per second


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float  # seconds from the window's start
    end: float
    probability: float


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a sliding window of odd `width` along the last dimension of x (H, T, F), the
    edges reflected; returned unchanged when too short to reflect."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = F.pad(x, (pad, pad), mode="reflect")
    return padded.unfold(-1, width, 1).sort(dim=-1).values[..., pad]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic alignment of the rows (tokens) of cost (T, F) to its columns (frames) with the least
    total cost: (token indices, frame indices) along the path.

    Cells are filled one anti-diagonal at a time (each depends only on the two before it); totals
    are kept in float32 and ties go diagonal < up < left, so the path is the reference's."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf, dtype=np.float32)
    total[0, 0] = 0
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        diagonal, up, left = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        step = np.where((diagonal < up) & (diagonal < left), 0, np.where((up < diagonal) & (up < left), 1, 2))
        best = np.choose(step, [diagonal, up, left])
        total[i, j] = (cost[i - 1, j - 1] + best.astype(np.float64)).astype(np.float32)
        trace[i, j] = step
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        move = trace[i, j]
        if move == 0:
            i, j = i - 1, j - 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    steps = np.array(path[::-1])
    return steps[:, 0], steps[:, 1]


@torch.no_grad()
def cross_attention(model: Whisper, tokens: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher-forced logits (T, V) of tokens (T,) on features (1, F, D), and the pre-softmax
    cross-attention scores (H, T, F) of the model's alignment heads, in float32."""
    scores: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(attn, args, _output):
            x, (k, _v) = args  # the block calls cross_attn(ln(x), (keys, values))
            q = attn._heads(attn.query(x))
            scores[layer] = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        return hook

    hooks = [block.cross_attn.register_forward_hook(keep(i)) for i, block in enumerate(model.decoder.blocks)]
    try:
        logits = model.logits(tokens[None].to(model.device), features.to(model.dtype))[0]
    finally:
        for h in hooks:
            h.remove()
    heads = model.alignment_heads.nonzero().tolist()
    return logits, torch.stack([scores[layer][0, head] for layer, head in heads])


def find_alignment(model: Whisper, tokenizer: TokenizerBase, text_tokens: list[int], features: Tensor,
                   num_frames: int, language: str = "en", task: str = "transcribe",
                   medfilt_width: int = MEDFILT_WIDTH, qk_scale: float = 1.0) -> list[WordTiming]:
    """Times of the words of `text_tokens` (text in `language`, decoded for `task`) in one window:
    features (1, F, D) of the window, of which the first `num_frames` mel frames are audio (the
    rest padding, never aligned to)."""
    if not text_tokens:
        return []
    sot = list(tokenizer.start_sequence(language, task))
    tokens = torch.tensor([*sot, tokenizer.no_timestamps, *text_tokens, tokenizer.eot])
    logits, weights = cross_attention(model, tokens, features)
    probs = logits[len(sot):, :tokenizer.eot].float().softmax(dim=-1)
    token_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens)].tolist()

    weights = (weights[:, :, :num_frames // 2].cpu() * qk_scale).softmax(dim=-1)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = median_filter((weights - mean) / std, medfilt_width)
    matrix = weights.mean(dim=0)[len(sot):-1]  # rows: no_timestamps + text tokens
    text_indices, time_indices = dtw(-matrix.double().numpy())

    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot], language)
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    # A word starts at the first frame its first token holds in the path.
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    return [WordTiming(word, tokens, float(jump_times[i]), float(jump_times[j]), float(np.mean(token_probs[i:j])))
            for word, tokens, i, j in zip(words, word_tokens, boundaries[:-1], boundaries[1:])]


def merge_punctuations(alignment: list[WordTiming], prepended: str, appended: str) -> None:
    """Attach opening punctuation to the word after it and closing punctuation to the word before
    it, in place; the emptied entries stay (with no word and no tokens) so indices keep lining up."""
    i = len(alignment) - 2
    j = len(alignment) - 1
    while i >= 0:
        before, after = alignment[i], alignment[j]
        if before.word.startswith(" ") and before.word.strip() in prepended:
            after.word, after.tokens = before.word + after.word, before.tokens + after.tokens
            before.word, before.tokens = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(alignment):
        before, after = alignment[i], alignment[j]
        if not before.word.endswith(" ") and after.word in appended:
            before.word, before.tokens = before.word + after.word, before.tokens + after.tokens
            after.word, after.tokens = "", []
        else:
            i = j
        j += 1


def _clip_long_words(alignment: list[WordTiming], max_duration: float) -> None:
    """A word next to a sentence end that lasts over max_duration is cut to it: such a word has
    usually swallowed the pause after (or before) the sentence."""
    for i in range(1, len(alignment)):
        if alignment[i].end - alignment[i].start > max_duration:
            if alignment[i].word in SENTENCE_END_MARKS:
                alignment[i].end = alignment[i].start + max_duration
            elif alignment[i - 1].word in SENTENCE_END_MARKS:
                alignment[i].start = alignment[i].end - max_duration


def add_word_timestamps(segments: list[dict], model: Whisper, tokenizer: TokenizerBase, features: Tensor,
                        num_frames: int, time_offset: float, last_speech_timestamp: float,
                        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
                        append_punctuations: str = APPEND_PUNCTUATIONS, *, language: str = "en",
                        task: str = "transcribe") -> None:
    """Give each segment of one window (dicts with "start", "end" in seconds and "tokens") its
    "words": [{"word", "start", "end", "probability"}], and move the segment's start and end to
    its first and last word where those are believable. features: (1, F, D) of the window, which
    starts at `time_offset` seconds; `last_speech_timestamp` is where speech last ended before it;
    the text is in `language`, decoded for `task`."""
    if not segments:
        return
    per_segment = [[t for t in s["tokens"] if t < tokenizer.eot] for s in segments]
    alignment = find_alignment(model, tokenizer, [t for ts in per_segment for t in ts], features, num_frames,
                               language, task)
    durations = np.array([w.end - w.start for w in alignment])
    durations = durations[durations.nonzero()]
    median_duration = min(0.7, float(np.median(durations))) if len(durations) else 0.0
    max_duration = median_duration * 2
    if len(durations):
        _clip_long_words(alignment, max_duration)
    merge_punctuations(alignment, prepend_punctuations, append_punctuations)

    index = 0
    for segment, text_tokens in zip(segments, per_segment):
        taken, words = 0, []
        while index < len(alignment) and taken < len(text_tokens):
            timing = alignment[index]
            if timing.word:
                words.append({"word": timing.word, "start": round(time_offset + timing.start, 2),
                              "end": round(time_offset + timing.end, 2), "probability": timing.probability})
            taken += len(timing.tokens)
            index += 1
        if words:
            _fit_segment_and_words(segment, words, last_speech_timestamp, median_duration, max_duration)
            last_speech_timestamp = segment["end"]
        segment["words"] = words


def _fit_segment_and_words(segment: dict, words: list[dict], last_speech_timestamp: float,
                           median_duration: float, max_duration: float) -> None:
    """The reference's repairs at segment edges, in place: a first word after a pause that is too
    long is shortened, and the segment's start/end follow its first/last word unless that word is
    much longer than the timestamp tokens say."""
    first_too_long = words[0]["end"] - words[0]["start"] > max_duration
    first_two_too_long = len(words) > 1 and words[1]["end"] - words[0]["start"] > max_duration * 2
    if words[0]["end"] - last_speech_timestamp > median_duration * 4 and (first_too_long or first_two_too_long):
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > max_duration:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - max_duration)
            words[0]["end"] = words[1]["start"] = boundary
        words[0]["start"] = max(0, words[0]["end"] - max_duration)

    if segment["start"] < words[0]["end"] and segment["start"] - 0.5 > words[0]["start"]:
        words[0]["start"] = max(0, min(words[0]["end"] - median_duration, segment["start"]))
    else:
        segment["start"] = words[0]["start"]
    if segment["end"] > words[-1]["start"] and segment["end"] + 0.5 < words[-1]["end"]:
        words[-1]["end"] = max(words[-1]["start"] + median_duration, segment["end"])
    else:
        segment["end"] = words[-1]["end"]
