"""Whisper's input: waveforms to log-mel spectrograms, window by window for long recordings."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE
from .io import load_audio


def pad_or_trim(array: torch.Tensor | np.ndarray, length: int = N_SAMPLES,
                axis: int = -1) -> torch.Tensor | np.ndarray:
    """Zero-pad or cut `array` along `axis` to exactly `length`; keeps the array type (numpy or torch)."""
    size = array.shape[axis]
    if isinstance(array, torch.Tensor):
        if size > length:
            return array.narrow(axis, 0, length)
        pad = [0, 0] * array.ndim
        pad[2 * (array.ndim - 1 - axis % array.ndim) + 1] = length - size  # F.pad lists the last dim first
        return F.pad(array, pad) if size < length else array
    if size > length:
        return array.take(np.arange(length), axis=axis)
    pad = [(0, 0)] * array.ndim
    pad[axis] = (0, length - size)
    return np.pad(array, pad) if size < length else array


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    log_part = min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, hz / f_sp)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of _hz_to_mel."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    mel = np.asarray(mel, dtype=np.float64)
    log_part = min_log_hz * np.exp(logstep * (np.maximum(mel, min_log_mel) - min_log_mel))
    return np.where(mel >= min_log_mel, log_part, mel * f_sp)


@functools.lru_cache(maxsize=None)
def mel_filters(n_mels: int, sr: int = SAMPLE_RATE, n_fft: int = N_FFT,
                device: str | torch.device | None = None) -> torch.Tensor:
    """Slaney-normalised triangular mel filterbank from 0 Hz to sr/2; returns (n_mels, n_fft // 2 + 1) float32."""
    fft_hz = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    # n_mels + 2 edges evenly spaced in mel: filter i rises from edge i, peaks at i + 1, falls to i + 2.
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_hz - lo) / (mid - lo)
    falling = (hi - fft_hz) / (hi - mid)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (hi - lo)  # equal area per filter, so wide high bands do not dominate
    return torch.from_numpy(weights.astype(np.float32)).to(device)


def log_mel_spectrogram(audio: torch.Tensor | np.ndarray | str | Path, n_mels: int = 80, padding: int = 0,
                        device: str | torch.device | None = None) -> torch.Tensor:
    """Whisper's log-mel input: waveform (T,) -> (n_mels, T' // 160), batch (B, T) -> (B, n_mels, T' // 160),
    where T' = T + padding and the padding is zeros on the right. A path is loaded with load_audio first."""
    if isinstance(audio, (str, Path)):
        audio = load_audio(audio)
    audio = torch.as_tensor(audio, dtype=torch.float32)
    if device is not None:
        audio = audio.to(device)
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP_LENGTH, window=window, center=True, pad_mode="reflect", return_complex=True)
    log_spec = _log10_mel(stft[..., :-1], n_mels)  # the last centred frame hangs past the end; Whisper drops it
    # 80 dB dynamic range below each example's own peak, so batching never changes an example's result.
    return _scaled(log_spec, log_spec.amax(dim=(-2, -1), keepdim=True))


def _log10_mel(stft: torch.Tensor, n_mels: int) -> torch.Tensor:
    """log10 mel power (..., n_mels, frames) of an STFT (..., N_FFT // 2 + 1, frames)."""
    mel = mel_filters(n_mels, device=stft.device) @ stft.abs() ** 2
    return torch.clamp(mel, min=1e-10).log10()


def _scaled(log_spec: torch.Tensor, peak: torch.Tensor | float) -> torch.Tensor:
    """Whisper's scaling of log10 mel power: floored 80 dB below `peak`, then (x + 4) / 4."""
    return (torch.maximum(log_spec, torch.as_tensor(peak) - 8.0) + 4.0) / 4.0


class LogMelFrames:
    """The log-mel of a long recording computed a window at a time: `frames(a, b)` is exactly
    `log_mel_spectrogram(audio, n_mels, padding)[:, a:b]`, but the whole spectrogram (an hour is
    115 MB, its STFT several times that) never exists, so memory stays at the audio itself.

    The 80 dB floor needs the recording's peak, found by one pass over it in `chunk`-frame pieces."""

    def __init__(self, audio: np.ndarray | torch.Tensor, n_mels: int = 80, padding: int = 0, chunk: int = N_FRAMES):
        self.audio = torch.as_tensor(audio, dtype=torch.float32)  # shares a float32 array's memory
        self.n_mels = n_mels
        self.n_samples = len(self.audio) + padding  # the padding zeros are never allocated
        self.n_frames = self.n_samples // HOP_LENGTH
        self.peak = max(float(self._log10(a, min(a + chunk, self.n_frames)).max())
                        for a in range(0, self.n_frames, chunk))

    def _log10(self, start: int, stop: int) -> torch.Tensor:
        # Sample positions of frames start..stop-1 in the centred (reflect-padded) signal.
        pos = torch.arange(start * HOP_LENGTH, (stop - 1) * HOP_LENGTH + N_FFT) - N_FFT // 2
        pos = pos.abs()  # reflection at the start
        pos = torch.where(pos >= self.n_samples, 2 * (self.n_samples - 1) - pos, pos)  # and at the end
        inside = pos < len(self.audio)
        signal = torch.where(inside, self.audio[pos.clamp(max=len(self.audio) - 1)], 0.0)
        window = torch.hann_window(N_FFT)
        return _log10_mel(torch.stft(signal, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True),
                          self.n_mels)

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Log-mel frames start..stop-1: (n_mels, stop - start)."""
        return _scaled(self._log10(start, stop), self.peak)


def log_mel_window(audio: torch.Tensor | np.ndarray, n_mels: int = 80, n_frames: int = N_FRAMES,
                   silence_padding: bool = False) -> torch.Tensor:
    """One encoder window (n_mels, n_frames) for a clip that fits in it, as openai-whisper's and
    faster-whisper's transcribe feed it: the clip's frames, then zeros.

    silence_padding=True pads the waveform with silence to the window before the log-mel instead
    (as Hugging Face's feature extractor does): the padding frames then sit at the clip's floor
    (its peak - 80 dB), which is what Whisper saw for short utterances in training. Short clips
    gain much (tiny.en on 100 short prompts: 7.2 % -> 0.9 % WER, docs/benchmarks.md); transcripts
    then differ from the reference implementations', so it is an option, not the default.

    n_frames is twice the model's n_audio_ctx: 3000 (30 s) for every published Whisper; a model
    trained from scratch may use shorter windows."""
    n_samples = n_frames * HOP_LENGTH
    if silence_padding:
        return log_mel_spectrogram(pad_or_trim(audio[:n_samples], n_samples), n_mels)
    content = min(len(audio) // HOP_LENGTH, n_frames)
    # N_FFT samples of zero padding: the last frames see zeros past the end, not a reflection.
    mel = log_mel_spectrogram(audio[:n_samples], n_mels, padding=N_FFT)[:, :content]
    return pad_or_trim(mel, n_frames)
