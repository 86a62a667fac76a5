"""Where things sit in time: samples, mel frames, encoder positions and timestamp tokens, and how
many frames a trimmed window encodes."""
from __future__ import annotations

import math

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in one 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in one window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # mel frames
FRAMES_PER_TOKEN = 2  # mel frames per encoder position and timestamp step (conv2 has stride 2)
TIME_PRECISION = 0.02  # seconds per timestamp token: 30 s / 1500 encoder positions
# A trimmed window (trim_padding) rounds a clip's frames up to a multiple of this (2 s): few
# distinct lengths, so clips of one length fill whole batches, at a small cost in padding frames.
TRIM_STEP = 200
# ... after at least this many padding frames: the encoder sees where the speech ends.
TRIM_MARGIN = 200


def window_frames(n_audio_ctx: int) -> int:
    """Mel frames in one encoder window of `n_audio_ctx` positions: 3000 (30 s) for published
    models, fewer for small models trained from scratch on short clips."""
    return FRAMES_PER_TOKEN * n_audio_ctx


def trimmed_frames(content_frames: int, size: int) -> int:
    """Mel frames that `trim_padding` encodes for a clip of `content_frames` frames: those and
    TRIM_MARGIN padding frames, rounded up to TRIM_STEP, at most the window's `size`."""
    steps = math.ceil((content_frames + TRIM_MARGIN) / TRIM_STEP)
    return min(size, steps * TRIM_STEP)
