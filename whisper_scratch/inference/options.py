"""How files are transcribed (`TranscribeOptions`), and what a run that stops part-way hands back."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..common.device import cpu_native_bf16
from .decoding import DecodingOptions, FallbackOptions
from .timing import APPEND_PUNCTUATIONS, PREPEND_PUNCTUATIONS


@dataclass(frozen=True)
class TranscribeOptions:
    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    # When a window is decoded again, hotter, and when it counts as silence.
    fallback: FallbackOptions = field(default_factory=FallbackOptions)
    batch_size: int = 8
    condition_on_previous_text: bool = True
    progress: bool = True
    # Opt-in speed-up for clips shorter than a window: encode only the clip's own frames and
    # TRIM_MARGIN more (rounded up to TRIM_STEP) and take the rest of the window from
    # `clips.padding_features`. Transcripts may differ slightly from the full window's; batches
    # then hold clips of one rounded length only.
    trim_padding: bool = False
    # Opt-in: pad clips with silence before the log-mel (see audio.features.log_mel_window).
    silence_padding: bool = False
    # Word-level timestamps (timing.py): segments get "words" [{"word", "start", "end", "probability"}].
    word_timestamps: bool = False
    prepend_punctuations: str = PREPEND_PUNCTUATIONS  # joined to the word after them
    append_punctuations: str = APPEND_PUNCTUATIONS  # joined to the word before them
    # With word timestamps: skip silences longer than this (seconds) around text that looks invented.
    hallucination_silence_threshold: float | None = None
    # Transcribe only these parts, in seconds: start,end,start,end,... (an odd count's last part
    # runs to the end). Files are then decoded window by window whatever their length.
    clip_timestamps: tuple[float, ...] = ()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during transcription; `results` and `failed` (as `transcribe_files` returns them)
    hold what was done, a long recording's finished windows included."""

    def __init__(self, results: list[dict], failed: list[tuple[Path, str]]):
        super().__init__("interrupted")
        self.results, self.failed = results, failed


class TranscriptionStopped(RuntimeError):
    """Decoding a long recording failed part-way; `result` holds the windows done before."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def fast_dtype(dtype: str | None, device: str, quantize: str | None = None) -> str | None:
    """The precision `--fast` runs in: the one named, else bf16 on a CPU that computes bf16 itself
    (AMX or AVX-512 BF16) and fp32 on any other, where bf16 is emulated and slower than fp32 (a
    GPU keeps its fp16 default); int8 weights (`quantize`) take fp32 activations, so then fp32."""
    if dtype or str(device).startswith("cuda"):
        return dtype
    return "bf16" if cpu_native_bf16() and not quantize else "fp32"
