"""Noise mixed into speech at an exact signal-to-noise ratio: recorded noise (a folder of any
audio files, silent ends trimmed) or synthetic white and pink noise, and `NoiseMixer`, which gives
every clip one fixed noise segment.

Which noise a clip gets from a `NoiseMixer` is fixed by the clip alone: a generator seeded with
(seed, hash of the clip's key, its path relative to the folder all listed clips share) picks the
noise file and the offset. So the same clip gets the same noise segment in every run, at every SNR
(only the gain changes), whatever the order or batch of the clips.

SNR is over the whole clip: 20·log10(rms(speech) / rms(noise)), pauses included (`mix_at_snr`
keeps it exact also when the mix has to be scaled down to avoid clipping).
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .geometry import SAMPLE_RATE
from .io import AudioError, list_audio, load_audio

log = logging.getLogger(__name__)

# -80 dBFS: quieter samples at a noise file's ends count as padding (ESC-50 clips are mostly zeros).
SILENCE_LEVEL = 1e-4


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def trim_silence(audio: np.ndarray, threshold: float = SILENCE_LEVEL) -> np.ndarray:
    """`audio` (T,) without its leading and trailing samples quieter than `threshold`; (0,) if all are."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0]:loud[-1] + 1] if len(loud) else audio[:0]


def random_start(length: int, n: int, rng: np.random.Generator) -> int:
    """Where `fit_length` starts in a recording of `length` samples: a crop that stays inside it
    (length >= n), else the point where the loop is entered."""
    return int(rng.integers(length - n + 1)) if length >= n else int(rng.integers(length))


def fit_length(noise: np.ndarray, n: int, rng: np.random.Generator | None = None, start: int | None = None) -> np.ndarray:
    """`noise` (L,) cropped (L >= n) or looped (L < n) to (n,), from sample `start`; without it the
    start is drawn from `rng` (see `random_start`), or 0 without either."""
    if len(noise) == 0:
        raise ValueError("noise has no samples")
    if start is None:
        start = random_start(len(noise), n, rng) if rng is not None else 0
    if len(noise) >= n:
        return noise[start:start + n]  # a crop never wraps: no click where the end meets the start
    reps = -(-(start + n) // len(noise))  # ceil: enough loops to cover start + n samples
    return np.tile(noise, reps)[start:start + n]


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech (T,) + noise scaled so that 20·log10(rms(speech) / rms(scaled noise)) == snr_db exactly.

    `noise` of another length is looped or cropped from its start (see `fit_length`). If the sum
    would clip, speech and noise are scaled down together, which keeps the SNR. Silent speech or
    silent noise has no defined SNR: the speech comes back unchanged. Returns float32 (T,).
    """
    speech = np.asarray(speech, dtype=np.float32)
    noise = fit_length(np.asarray(noise, dtype=np.float32), len(speech))
    speech_rms, noise_rms = _rms(speech), _rms(noise)
    if speech_rms == 0.0 or noise_rms == 0.0:
        return speech.copy()
    gain = speech_rms / (noise_rms * 10.0 ** (snr_db / 20.0))
    mixed = speech.astype(np.float64) + gain * noise.astype(np.float64)
    peak = float(np.abs(mixed).max())
    if peak > 1.0:
        mixed /= peak
    return mixed.astype(np.float32)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise, unit RMS, float32 (n,)."""
    x = rng.standard_normal(n)
    return (x / max(_rms(x), 1e-12)).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Pink (1/f power) noise, unit RMS, float32 (n,): white noise shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0  # leave DC at white level instead of dividing by zero; it is removed below
    spectrum /= np.sqrt(freqs)  # amplitude 1/sqrt(f) -> power 1/f
    spectrum[0] = 0.0
    x = np.fft.irfft(spectrum, n)
    return (x / max(_rms(x), 1e-12)).astype(np.float32)


def list_noise_files(folder: Path) -> list[Path]:
    """The audio files below `folder`, sorted; a ValueError naming it when there is none."""
    if not folder.is_dir():
        raise ValueError(f"noise folder not found: {folder}")
    files = list_audio(folder)
    if not files:
        raise ValueError(f"no audio files in the noise folder {folder}")
    return files


def load_noise_files(paths: list[Path], folder: Path) -> list[tuple[Path, np.ndarray]]:
    """(path, 16 kHz float32 samples with silent ends trimmed) for each usable file of `folder`;
    unreadable or silent files are logged and left out, none usable is a ValueError."""
    noise = []
    for path in paths:
        try:
            # Without the silent ends, a random crop is seldom silence and a loop has no long gaps.
            audio = trim_silence(load_audio(path))
        except AudioError as err:
            log.warning("skipping noise file: %s", err)
            continue
        if len(audio) == 0:
            log.warning("skipping noise file: %s is silent", path)
            continue
        noise.append((path, audio))
    if not noise:
        raise ValueError(f"no usable noise file in {folder} (see the skipped files above)")
    return noise


def clip_keys(paths: Sequence[Path]) -> dict[Path, str]:
    """Each path's name relative to the folder all of them share (POSIX style): what seeds its noise,
    so moving the data set elsewhere does not change it."""
    absolute = [os.path.abspath(p) for p in paths]
    if not absolute:
        return {}
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    return {p: Path(os.path.relpath(a, root)).as_posix() for p, a in zip(paths, absolute)}


def stable_hash(key: str) -> int:
    """64 bits of SHA-256: unlike hash(), the same in every process."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


@dataclass(frozen=True)
class NoiseSegment:
    """Which noise a clip got: a file of the noise folder and the sample (16 kHz) where its crop,
    or its loop, starts."""

    file: str
    start: int

    def to_dict(self) -> dict:
        return {"noise_file": self.file, "noise_start_s": round(self.start / SAMPLE_RATE, 4)}


class NoiseMixer:
    """Recordings of `noise_dir` (silent ends trimmed) mixed into clips, one fixed segment per clip key."""

    def __init__(self, noise_dir: str | Path, seed: int = 0):
        self.noise_dir = Path(noise_dir)
        self.seed = seed
        self.bank = load_noise_files(list_noise_files(self.noise_dir), self.noise_dir)

    def pick(self, key: str, n: int) -> tuple[NoiseSegment, np.ndarray]:
        """The segment for clip `key`, fitted to n samples: (where it comes from, samples (n,))."""
        rng = np.random.default_rng([self.seed, stable_hash(key)])
        path, samples = self.bank[int(rng.integers(len(self.bank)))]
        start = random_start(len(samples), n, rng)
        segment = NoiseSegment(path.relative_to(self.noise_dir).as_posix(), start)
        return segment, fit_length(samples, n, start=start)

    def mix(self, speech: np.ndarray, key: str, snr_db: float) -> tuple[np.ndarray, NoiseSegment]:
        """speech (T,) with this clip's noise at snr_db -> (float32 (T,), the segment used)."""
        segment, noise = self.pick(key, len(speech))
        return mix_at_snr(speech, noise, snr_db), segment
