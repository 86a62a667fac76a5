"""Voice activity detection: Silero VAD v6 (16 kHz) in plain PyTorch, and the rules that turn its
per-window speech probabilities into speech intervals (Silero's, as faster-whisper applies them;
the default options are those of its batched mode).

The weights come from the `silero-vad` package on PyPI (`pip install whisper-scratch[vad]`), which
ships them as safetensors; it is only read from, never imported (its audio helpers want
torchaudio, the model does not).

Shapes: T samples at 16 kHz, N windows of WINDOW samples.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio.geometry import SAMPLE_RATE
from ..model.formats import CheckpointError, name_list, rename

WINDOW = 512  # samples per speech probability (32 ms)
CONTEXT = 64  # samples of the previous window that each window also sees
N_FFT, STFT_HOP = 256, 128
HIDDEN = 128
# Silences of at least this long (98 ms) are where an over-long speech interval is cut.
MIN_SILENCE_AT_MAX_SPEECH = SAMPLE_RATE * 98 // 1000
# Windows encoded at once before the LSTM runs over them: bounds memory on long recordings.
ENCODE_BLOCK = 8192

PACKAGE = "silero_vad"
WEIGHTS = "data/silero_vad_16k.safetensors"
INSTALL = "pip install 'whisper-scratch[vad]' (or: pip install silero-vad)"

# silero-vad's safetensors names -> ours. The package's recurrent layer is one LSTM cell stepped
# window by window; ours is the same cell run over the whole sequence.
SILERO_NAMES = {
    "stft_conv.weight": "stft.weight",
    "conv1.weight": "encoder.0.weight", "conv1.bias": "encoder.0.bias",
    "conv2.weight": "encoder.2.weight", "conv2.bias": "encoder.2.bias",
    "conv3.weight": "encoder.4.weight", "conv3.bias": "encoder.4.bias",
    "conv4.weight": "encoder.6.weight", "conv4.bias": "encoder.6.bias",
    "lstm_cell.weight_ih": "lstm.weight_ih_l0", "lstm_cell.weight_hh": "lstm.weight_hh_l0",
    "lstm_cell.bias_ih": "lstm.bias_ih_l0", "lstm_cell.bias_hh": "lstm.bias_hh_l0",
    "final_conv.weight": "head.weight", "final_conv.bias": "head.bias",
}


class VadUnavailable(RuntimeError):
    """The silero-vad package (the weights) is not installed; the message says how to install it."""


class SileroVAD(nn.Module):
    """Each window of WINDOW samples, with CONTEXT samples before it, becomes a magnitude spectrum
    (an STFT as a fixed convolution), four convolutions reduce it to one vector, and an LSTM over
    the windows of the recording gives each window its speech probability."""

    def __init__(self):
        super().__init__()
        # Real and imaginary parts of N_FFT // 2 + 1 frequency bins.
        self.stft = nn.Conv1d(1, N_FFT + 2, N_FFT, stride=STFT_HOP, bias=False)
        self.encoder = nn.Sequential(
            nn.Conv1d(N_FFT // 2 + 1, 128, 3, padding=1), nn.ReLU(),
            nn.Conv1d(128, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv1d(64, HIDDEN, 3, padding=1), nn.ReLU())
        self.lstm = nn.LSTM(HIDDEN, HIDDEN, batch_first=True)
        self.head = nn.Conv1d(HIDDEN, 1, 1)

    def encode(self, windows: Tensor) -> Tensor:
        """windows (N, CONTEXT + WINDOW) -> (N, HIDDEN)."""
        x = F.pad(windows, (0, CONTEXT), mode="reflect")[:, None]
        spec = self.stft(x)
        half = N_FFT // 2 + 1
        magnitude = (spec[:, :half] ** 2 + spec[:, half:] ** 2).sqrt()
        return self.encoder(magnitude).squeeze(-1)  # the strided convolutions leave one time step

    def forward(self, audio: Tensor) -> Tensor:
        """audio (T,) at 16 kHz, T a multiple of WINDOW -> speech probability per window (T // WINDOW,)."""
        if audio.ndim != 1 or audio.shape[0] % WINDOW:
            raise ValueError(f"expected a 1-D waveform whose length is a multiple of {WINDOW}, got {tuple(audio.shape)}")
        audio = F.pad(audio.to(self.stft.weight), (CONTEXT, 0))  # the first window's context is silence
        windows = audio.unfold(0, CONTEXT + WINDOW, WINDOW)
        state, hidden = None, []
        for i in range(0, windows.shape[0], ENCODE_BLOCK):
            h, state = self.lstm(self.encode(windows[i:i + ENCODE_BLOCK])[None], state)
            hidden.append(h[0])
        h = torch.cat(hidden).relu()
        return self.head(h[:, :, None]).sigmoid()[:, 0, 0]


def silero_weights_path() -> Path:
    """Where the installed silero-vad package keeps its 16 kHz weights (the package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise VadUnavailable(f"voice activity detection needs the silero-vad package: {INSTALL}")
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS
    if not path.is_file():
        raise VadUnavailable(f"{path} is missing (silero-vad 6.2.3 ships it): "
                             "pip install -U silero-vad")
    return path


def load_silero_vad(path: str | Path | None = None, device: str | torch.device = "cpu") -> SileroVAD:
    """SileroVAD with weights from `path` (a silero_vad_16k.safetensors; default: silero-vad's), strictly."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else silero_weights_path()
    model = SileroVAD()
    state = rename(load_file(path), SILERO_NAMES, str(path))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    shapes = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or shapes:
        raise CheckpointError(f"{path}: not Silero VAD 16 kHz weights (missing: {name_list(missing) or 'none'}; "
                              f"wrong shape: {name_list(shapes) or 'none'})")
    model.load_state_dict(state)
    return model.to(device).eval()


@dataclass(frozen=True)
class VadOptions:
    """How speech probabilities become speech intervals. Defaults: faster-whisper's batched mode."""

    threshold: float = 0.5  # a window at or above this is speech
    neg_threshold: float | None = None  # below this it is silence (default threshold - 0.15)
    min_speech_duration_ms: int = 0  # shorter speech is dropped
    max_speech_duration_s: float = 30.0  # longer speech is cut (at a silence when there is one)
    min_silence_duration_ms: int = 160  # shorter silences do not end the speech
    speech_pad_ms: int = 400  # each interval grows by this much on both sides


@torch.no_grad()
def speech_probabilities(vad: SileroVAD, audio: np.ndarray) -> np.ndarray:
    """Speech probability of each WINDOW of audio (T,); the last window is completed with zeros."""
    padded = np.pad(np.asarray(audio, dtype=np.float32), (0, -len(audio) % WINDOW))
    return vad(torch.from_numpy(padded)).float().cpu().numpy()


def speech_intervals(probs: np.ndarray, n_samples: int, opts: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges of speech in a recording of n_samples, from its window
    probabilities: hysteresis between the two thresholds, silences shorter than
    min_silence_duration_ms bridged, speech longer than max_speech_duration_s cut at its last
    silence of at least 98 ms (else where it reaches the limit), then padded."""
    sr = SAMPLE_RATE
    pad = sr * opts.speech_pad_ms / 1000
    min_speech = sr * opts.min_speech_duration_ms / 1000
    # Room for the padding, so a padded interval stays within the limit.
    max_speech = sr * opts.max_speech_duration_s - WINDOW - 2 * pad
    min_silence = sr * opts.min_silence_duration_ms / 1000
    low = opts.neg_threshold if opts.neg_threshold is not None else max(opts.threshold - 0.15, 0.01)

    speeches: list[list[int]] = []
    start = None  # of the speech under way
    silence_from = 0  # where the current silence inside the speech began (0: none)
    cut_at = resume_at = 0  # last silence of >= 98 ms in this speech, and where speech came back after it
    for i, p in enumerate(probs):
        at = WINDOW * i
        if p >= opts.threshold and silence_from:
            silence_from = 0
            if resume_at < cut_at:
                resume_at = at
        if p >= opts.threshold and start is None:
            start = at
            continue
        if start is not None and at - start > max_speech:
            if cut_at:
                speeches.append([start, cut_at])
                # Still silent since that cut: the speech is over; else it goes on from where it came back.
                start = None if resume_at < cut_at else resume_at
                cut_at = resume_at = silence_from = 0
            else:
                speeches.append([start, at])
                start, cut_at, resume_at, silence_from = None, 0, 0, 0
                continue
        if p < low and start is not None:
            silence_from = silence_from or at
            if at - silence_from > MIN_SILENCE_AT_MAX_SPEECH:
                cut_at = silence_from
            if at - silence_from < min_silence:
                continue
            if silence_from - start > min_speech:
                speeches.append([start, silence_from])
            start, cut_at, resume_at, silence_from = None, 0, 0, 0
    if start is not None and n_samples - start > min_speech:
        speeches.append([start, n_samples])

    # Padding: a gap too short for both pads is shared half and half.
    for i, s in enumerate(speeches):
        if i == 0:
            s[0] = int(max(0, s[0] - pad))
        if i + 1 < len(speeches):
            after = speeches[i + 1]
            gap = after[0] - s[1]
            if gap < 2 * pad:
                s[1] += int(gap // 2)
                after[0] = int(max(0, after[0] - gap // 2))
            else:
                s[1] = int(min(n_samples, s[1] + pad))
                after[0] = int(max(0, after[0] - pad))
        else:
            s[1] = int(min(n_samples, s[1] + pad))
    return [(s, e) for s, e in speeches]


def detect_speech(vad: SileroVAD, audio: np.ndarray, opts: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges of speech in audio (T,) at 16 kHz."""
    return speech_intervals(speech_probabilities(vad, audio), len(audio), opts)
