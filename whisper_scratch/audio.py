"""Audio front end: decode files to 16 kHz mono float32 and turn waveforms into Whisper's log-mel input."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in one 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in one window

# Containers libsndfile reads itself; a failure on one of these means a broken file, not a missing decoder.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf"})


class AudioError(Exception):
    """A file that cannot be turned into audio; the message is one line naming the file and the fix."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# libmpg123 (libsndfile's mp3 decoder) prints its complaints about a broken file straight to
# fd 2: "Note: Illegal Audio-MPEG-Header ...", "[src/libmpg123/id3.c:...] error: ...", to the end
# of the line, possibly right after a progress bar. Not after a letter, so that Python's
# "UserWarning: ..." lines pass.
C_DECODER_MESSAGE = re.compile(r"(?<![A-Za-z])(?:Note|Warning|Error): [^\r\n]*\n?|\[src/libmpg123/[^\r\n]*\n?")


class _CStderr:
    """Sends fd 2 to a temporary file while C decoders run, then passes on everything but their
    messages: a broken file is reported by our one line only.

    fd 2 belongs to the whole process, so there is one capture (`C_STDERR`) shared by the threads
    that decode at the same time (the transcriber's prefetch thread, while the main thread may
    print): the first to enter redirects, the last to leave restores and passes the rest on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = -1
        self._file: BinaryIO | None = None
        os.register_at_fork(after_in_child=self._restore_in_child)

    @contextmanager
    def captured(self) -> Iterator[None]:
        """Run the body with fd 2 captured (nested and concurrent uses share one capture)."""
        with self._lock:
            if self._depth == 0:
                _flush_stderr()
                self._file = tempfile.TemporaryFile()
                self._saved = os.dup(2)
                os.dup2(self._file.fileno(), 2)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._restore()

    def _restore(self, pass_on: bool = True) -> None:
        _flush_stderr()  # Python text written meanwhile belongs to the capture, in order
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        rest = C_DECODER_MESSAGE.sub("", self._file.read().decode("utf-8", errors="replace"))
        self._file.close()
        if rest and pass_on:
            os.write(2, rest.encode("utf-8"))

    def _restore_in_child(self) -> None:
        # A process forked mid-capture (a DataLoader worker) gets its own stderr back; what was
        # captured so far is the parent's to pass on.
        self._lock = threading.Lock()
        if self._depth:
            self._depth = 0
            self._restore(pass_on=False)


def _flush_stderr() -> None:
    if sys.stderr is not None:
        sys.stderr.flush()


C_STDERR = _CStderr()


def _libsndfile_reason(err: sf.LibsndfileError) -> str:
    """libsndfile's reason without its "Error opening <path>:" prefix (the message names the file
    already). On a file that exists and is not empty, its mp3 reader's "File does not exist or is
    not a regular file" means that no frame could be decoded; saying so avoids sending the user
    to check a path that is fine."""
    reason = _one_line(getattr(err, "error_string", err)).rstrip(".")
    if "does not exist" in reason:
        return "no audio frame could be decoded"
    return reason


def _decode_ffmpeg(path: Path, sr: int) -> np.ndarray:
    """Let ffmpeg decode, downmix and resample in one go; returns float32 (T,)."""
    cmd = ["ffmpeg", "-nostdin", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(sr), "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["ffmpeg failed"]
        raise AudioError(f"cannot decode {path}: {_one_line(reason[0])} (is it a valid audio file?)")
    return np.frombuffer(proc.stdout, np.int16).astype(np.float32) / 32768.0


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as float32 mono samples in [-1, 1] at `sr` Hz; returns shape (T,)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path} (check the path)")
    if path.stat().st_size == 0:
        raise AudioError(f"empty audio file: {path} is 0 bytes (re-export or re-download it)")
    try:
        with C_STDERR.captured():
            data, file_sr = sf.read(path, dtype="float32", always_2d=True)  # (T, channels)
        audio = data.mean(axis=1, dtype=np.float32)
        if file_sr != sr and len(audio) > 0:
            audio = soxr.resample(audio, file_sr, sr, quality="HQ").astype(np.float32, copy=False)
    except sf.LibsndfileError as err:
        if shutil.which("ffmpeg"):
            audio = _decode_ffmpeg(path, sr)
        elif path.suffix.lower() in SOUNDFILE_SUFFIXES:
            raise AudioError(f"cannot decode {path}: {_libsndfile_reason(err)} (is it a valid audio file? "
                             "install ffmpeg for other containers)") from None
        else:
            raise AudioError(f"cannot decode {path}: ffmpeg is needed for {path.suffix or 'this'} files "
                             "(install ffmpeg or convert it to wav/flac)") from None
    if len(audio) == 0:
        raise AudioError(f"empty audio: {path} has no samples")
    # Downmixing is safe, but resampling can ring a hair past full scale.
    return np.clip(audio, -1.0, 1.0)


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


def is_silent(audio: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the clip's peak is below `threshold_db` dBFS: nothing there for Whisper to hear,
    and Whisper invents words ("you", "Thank you.") on digital silence."""
    return audio.size == 0 or float(np.abs(audio).max()) < 10 ** (threshold_db / 20)
