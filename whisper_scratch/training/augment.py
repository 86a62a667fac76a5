"""Training-time augmentation: background noise mixed in at a random SNR (waveform) and SpecAugment
masks (log-mel).

Every random choice comes from a `np.random.Generator` the caller passes in; `SpeechDataset` derives
it from (seed, epoch, index), so an example is augmented the same way whichever DataLoader worker
builds it and whether or not the run was resumed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..audio.noise import fit_length, list_noise_files, load_noise_files, mix_at_snr, pink_noise, white_noise

log = logging.getLogger(__name__)

NOISE_KINDS = ("white", "pink")
# -80 dBFS: quieter samples at a noise file's ends count as padding (ESC-50 clips are mostly zeros).
SILENCE_LEVEL = 1e-4


@dataclass
class AugmentConfig:
    """What `Augment` does. Noise is on when `noise` is set or `noise_dir` is given: recordings from
    `noise_dir` (any format load_audio reads, resampled to 16 kHz), else synthetic `noise_kind` noise."""

    spec_augment: bool = False
    freq_masks: int = 2
    freq_width: int = 27  # widest frequency mask, in mel bins
    time_masks: int = 2
    time_width_ratio: float = 0.05  # widest time mask, as a fraction of the clip's content frames
    noise: bool = False
    noise_dir: Path | None = None
    noise_kind: Literal["white", "pink"] = "white"
    snr_range: tuple[float, float] = (5.0, 20.0)  # dB, drawn uniformly
    noise_prob: float = 0.5  # chance that an example gets noise at all: clean speech stays in the mix

    def __post_init__(self) -> None:
        if self.noise_kind not in NOISE_KINDS:
            raise ValueError(f"noise_kind must be one of {NOISE_KINDS}, got {self.noise_kind!r}")
        low, high = self.snr_range
        if low > high:
            raise ValueError(f"snr_range must be (low, high) with low <= high, got {self.snr_range}")
        if not 0.0 <= self.noise_prob <= 1.0:
            raise ValueError(f"noise_prob must be in [0, 1], got {self.noise_prob}")
        if self.noise_dir is not None:
            self.noise_dir = Path(self.noise_dir)

    @property
    def adds_noise(self) -> bool:
        return self.noise or self.noise_dir is not None



class Augment:
    """Noise on the waveform (`__call__`) and SpecAugment on the log-mel (`spec`).

    Noise recordings are loaded on first use, once per process (each DataLoader worker has its own
    copy of this object). Call `load_noise()` in the main process before starting workers to read
    them once: forked workers then inherit the loaded arrays, and an unreadable file is logged
    once instead of once per worker.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self._noise: list[np.ndarray] | None = None
        self._noise_files: list[Path] = []
        if config.noise_dir is not None:
            self._noise_files = list_noise_files(config.noise_dir)

    def load_noise(self) -> list[np.ndarray]:
        """The noise_dir recordings as 16 kHz float32 arrays with silent ends trimmed (none without a
        noise_dir); unreadable or silent files are logged and left out."""
        if self._noise is None and self._noise_files:
            self._noise = [audio for _, audio in load_noise_files(self._noise_files, self.config.noise_dir)]
        return self._noise or []

    def _draw_noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.config.noise_dir is None:
            make = pink_noise if self.config.noise_kind == "pink" else white_noise
            return make(n, rng)
        bank = self.load_noise()
        return fit_length(bank[int(rng.integers(len(bank)))], n, rng)

    def __call__(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Waveform (T,) -> (T,) float32: with probability noise_prob, noise at an SNR drawn from snr_range."""
        cfg = self.config
        if not cfg.adds_noise or len(audio) == 0:
            return audio
        if rng.random() >= cfg.noise_prob:
            return audio
        snr_db = rng.uniform(*cfg.snr_range)
        return mix_at_snr(audio, self._draw_noise(len(audio), rng), snr_db)

    def spec(self, mel: torch.Tensor, content_frames: int, rng: np.random.Generator) -> torch.Tensor:
        """SpecAugment on a log-mel window (n_mels, n_frames) -> a masked copy, same shape.

        Masks stay inside the first `content_frames` frames (the clip; the rest is padding). They are
        filled with 0, the value of the zero padding after the clip: a mask then looks like audio the
        model does not get to hear, not like a new, made-up signal level.
        """
        cfg = self.config
        if not cfg.spec_augment:
            return mel
        mel = mel.clone()
        n_mels = mel.shape[0]
        content_frames = min(content_frames, mel.shape[1])
        for _ in range(cfg.freq_masks):
            width = int(rng.integers(0, min(cfg.freq_width, n_mels) + 1))
            start = int(rng.integers(0, n_mels - width + 1))
            mel[start:start + width, :content_frames] = 0.0
        max_time = int(cfg.time_width_ratio * content_frames)
        for _ in range(cfg.time_masks):
            width = int(rng.integers(0, max_time + 1))
            start = int(rng.integers(0, content_frames - width + 1))
            mel[:, start:start + width] = 0.0
        return mel
