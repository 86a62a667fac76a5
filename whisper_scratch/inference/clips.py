"""Clips that fit one encoder window, decoded in batches: the encoder input (whole, or trimmed to
the clip and completed with the features of a window of padding), decoding with fallback, the
no-speech gate, segments and word timestamps."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..audio.geometry import HOP_LENGTH, SAMPLE_RATE, window_frames
from ..model.whisper import Whisper
from ..tokenizer import TokenizerBase
from .decoding import decode_with_fallback
from .options import TranscribeOptions
from .segments import public_segment, segments_from_tokens
from .timing import add_word_timestamps

# Padding windows are encoded once per padding level, rounded to this (with silence_padding the
# level is the clip's floor, which varies; without, it is always 0).
LEVEL_STEP = 0.25


@torch.no_grad()
def padding_features(model: Whisper, level: float = 0.0) -> Tensor:
    """Encoder output (1, n_audio_ctx, D) for a window of padding only: every mel value `level`
    (0 for zero frames; a clip's floor with silence_padding).

    With `trim_padding` these stand in for a clip's padding frames: Whisper's decoder needs the
    whole window (given only a clip's own frames it repeats itself until the token limit), and a
    padding frame's features depend mostly on its position, little on the speech before it."""
    mel = torch.full((1, model.dims.n_mels, window_frames(model.dims.n_audio_ctx)), level, device=model.device, dtype=model.dtype)
    return model.embed_audio(mel)


@torch.no_grad()
def embed_audio(model: Whisper, mel: Tensor, padding: Tensor | None = None) -> Tensor:
    """Features (B, n_audio_ctx, D) of mel (B, n_mels, n): a full window (n = 3000), or the first
    n frames of one, completed with the frames of `padding` (1 or B, n_audio_ctx, D; from
    `padding_features`) after them."""
    return model.embed_audio(mel.to(model.device, model.dtype), padding)


class PaddingWindows:
    """The features of windows of padding only (`padding_features`), encoded once per padding
    level, for the clips of trimmed batches."""

    def __init__(self, model: Whisper):
        self.model = model
        self.by_level: dict[float, Tensor] = {}

    def __call__(self, mels: Tensor) -> Tensor:
        """Padding features (B, n_audio_ctx, D) for the trimmed mels (B, n_mels, n) of a batch: a
        trimmed window ends with at least TRIM_MARGIN padding frames, so the last frame's value is
        the clip's padding level."""
        rows = []
        for mel in mels:
            level = round(float(mel[0, -1]) / LEVEL_STEP) * LEVEL_STEP
            if level not in self.by_level:
                self.by_level[level] = padding_features(self.model, level)
            rows.append(self.by_level[level])
        return torch.cat(rows)


@torch.no_grad()
def embed_windows(model: Whisper, mels: list[Tensor], paddings: PaddingWindows) -> Tensor:
    """Features (B, n_audio_ctx, D) of B mels (n_mels, n) of any lengths n up to one window: the
    mels of one length are encoded together, and a trimmed one is completed by `paddings`."""
    size = window_frames(model.dims.n_audio_ctx)
    rows: list[Tensor | None] = [None] * len(mels)
    for n in sorted({mel.shape[-1] for mel in mels}):
        same = [i for i, mel in enumerate(mels) if mel.shape[-1] == n]
        group = torch.stack([mels[i] for i in same])
        features = embed_audio(model, group, paddings(group) if n < size else None)
        for j, i in enumerate(same):
            rows[i] = features[j]
    return torch.stack(rows)


@torch.no_grad()
def transcribe_clips(model: Whisper, features: Tensor, audios: list[np.ndarray], opts: TranscribeOptions,
                     tokenizer: TokenizerBase) -> list[dict]:
    """Results {"text", "language", "segments", "duration"} of clips that fit one window each:
    features (B, n_audio_ctx, D) their encoder outputs (`embed_audio`)."""
    want_segments = not opts.decoding.without_timestamps
    out = []
    results = decode_with_fallback(model, features, opts.decoding, tokenizer, opts.fallback)
    for i, (audio, r) in enumerate(zip(audios, results)):
        if opts.fallback.is_no_speech(r):
            r.text, r.tokens = "", []
        duration = round(len(audio) / SAMPLE_RATE, 3)
        segments = segments_from_tokens(r.tokens, tokenizer) if want_segments else []
        for s in segments:
            s["end"] = s["end"] if s["end"] is not None else duration
        if opts.word_timestamps and segments:
            add_word_timestamps(segments, model, tokenizer, features[i:i + 1], len(audio) // HOP_LENGTH, 0.0, 0.0,
                                opts.prepend_punctuations, opts.append_punctuations,
                                language=r.language, task=opts.decoding.task)
        text = " ".join(s["text"] for s in segments) if want_segments else r.text
        out.append({"text": text.strip(), "language": r.language, "segments": [public_segment(s) for s in segments],
                    "duration": duration})
    return out
