"""Audio files in: decode any file to 16 kHz mono float32 samples, with one clear line for a file
that cannot be read, and list the audio files of a folder."""
from __future__ import annotations

import errno
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

from ..common.messages import one_line
from .geometry import SAMPLE_RATE

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".mp4")
# Containers libsndfile reads itself; a failure on one of these means a broken file, not a missing decoder.
SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf"})


class AudioError(Exception):
    """A file that cannot be turned into audio; the message is one line naming the file and the fix."""


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
    reason = one_line(getattr(err, "error_string", err)).rstrip(".")
    if "does not exist" in reason:
        return "no audio frame could be decoded"
    return reason


def _decode_ffmpeg(path: Path, sr: int) -> np.ndarray:
    """Let ffmpeg decode, downmix and resample in one go; returns float32 (T,)."""
    cmd = ["ffmpeg", "-nostdin", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(sr), "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["ffmpeg failed"]
        raise AudioError(f"cannot decode {printable(str(path))}: {one_line(reason[0])} (is it a valid audio file?)")
    return np.frombuffer(proc.stdout, np.int16).astype(np.float32) / 32768.0


def printable(text: str) -> str:
    """`text` with the bytes of a file name that are not UTF-8 (Python holds them as lone
    surrogates) written as \\xNN, so that a message or transcript naming that file can be printed
    and saved as UTF-8."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name gives (e.g. from a JSON escape)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def file_problem(path: str | Path) -> str | None:
    """Why `path` is no audio file to open, from the file system alone (missing, a link that
    loops or leads nowhere, a folder, 0 bytes); None when it is a non-empty file."""
    path = Path(path)
    name = printable(str(path))
    try:
        info = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"symbolic link loop: {name} leads back to itself (fix or remove the link)"
        if path.is_symlink():
            return f"broken symbolic link: {name} points to {printable(os.readlink(path))}, which does not exist"
        return f"audio file not found: {name} (check the path)"
    if path.is_dir():
        return f"{name} is a folder, not an audio file (check the path)"
    if info.st_size == 0:
        return f"empty audio file: {name} is 0 bytes (re-export or re-download it)"
    return None


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as float32 mono samples in [-1, 1] at `sr` Hz; returns shape (T,).
    AudioError (one line) for a file that cannot be read or holds NaN or infinite samples."""
    path = Path(path)
    if problem := file_problem(path):
        raise AudioError(problem)
    name = printable(str(path))
    try:
        with C_STDERR.captured():
            # Bytes, not str: soundfile encodes a str name strictly, failing on a name that is not UTF-8.
            data, file_sr = sf.read(os.fsencode(path), dtype="float32", always_2d=True)  # (T, channels)
        audio = data.mean(axis=1, dtype=np.float32)
        if file_sr != sr and len(audio) > 0:
            audio = soxr.resample(audio, file_sr, sr, quality="HQ").astype(np.float32, copy=False)
    except sf.LibsndfileError as err:
        if shutil.which("ffmpeg"):
            audio = _decode_ffmpeg(path, sr)
        elif path.suffix.lower() in SOUNDFILE_SUFFIXES:
            raise AudioError(f"cannot decode {name}: {_libsndfile_reason(err)} (is it a valid audio file? "
                             "install ffmpeg for other containers)") from None
        else:
            raise AudioError(f"cannot decode {name}: ffmpeg is needed for {path.suffix or 'this'} files "
                             "(install ffmpeg or convert it to wav/flac)") from None
    if len(audio) == 0:
        raise AudioError(f"empty audio: {name} has no samples")
    # A float file can hold NaN or inf; one such clip would turn its whole decoding batch (or
    # training step) into NaN, so it is refused here, alone.
    if not np.isfinite(audio).all():
        raise AudioError(f"corrupt audio: {name} has NaN or infinite samples (re-export it)")
    # Downmixing is safe, but resampling can ring a hair past full scale.
    return np.clip(audio, -1.0, 1.0)


def is_silent(audio: np.ndarray, threshold_db: float = -60.0) -> bool:
    """True when the clip's peak is below `threshold_db` dBFS: nothing there for Whisper to hear,
    and Whisper invents words ("you", "Thank you.") on digital silence."""
    return audio.size == 0 or float(np.abs(audio).max()) < 10 ** (threshold_db / 20)


def list_audio(folder: str | Path) -> list[Path]:
    """Every audio file below `folder`, sorted; with them the links named like audio files that
    lead nowhere or loop, so that reading them reports them instead of their silent absence."""
    return sorted(p for p in Path(folder).rglob("*")
                  if p.suffix.lower() in AUDIO_EXTENSIONS and (p.is_file() or (p.is_symlink() and not p.exists())))
