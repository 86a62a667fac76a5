"""From audio files to transcripts: files are read ahead in a thread, clips up to one window go
through in batches (`clips`), longer recordings window by window (`longform`); a file that cannot
be read or fails costs only itself."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ..audio.features import log_mel_window
from ..audio.geometry import HOP_LENGTH, SAMPLE_RATE, trimmed_frames, window_frames
from ..audio.io import AudioError, is_silent, load_audio
from ..common.messages import one_line
from ..model.loaded import whisper_vocabulary
from ..model.whisper import Whisper
from ..tokenizer import TokenizerBase
from .clips import PaddingWindows, embed_audio, transcribe_clips
from .longform import transcribe_long
from .options import Interrupted, TranscribeOptions, TranscriptionStopped


def _load(path: Path, n_mels: int, n_frames: int, silence_padding: bool,
          sequential: bool, load: Callable[[Path], np.ndarray] = load_audio) -> tuple[np.ndarray, Tensor] | None:
    """A clip that fits one window: its audio and encoder input. None for a file to be decoded
    window by window: it is read again when its turn comes, so that prefetching never holds
    more than one long recording. `load` reads a file's 16 kHz samples (T,)."""
    audio = load(path)
    if sequential or len(audio) > n_frames * HOP_LENGTH:
        return None
    return audio, log_mel_window(audio, n_mels, n_frames, silence_padding)


def _prefetch(paths: list[Path], n_mels: int, n_frames: int, ahead: int, silence_padding: bool,
              sequential: bool, load: Callable[[Path], np.ndarray] = load_audio
              ) -> Iterator[tuple[Path, tuple | AudioError | None]]:
    """Decode audio in a background thread while the model works (soundfile releases the GIL),
    keeping at most `ahead` files in memory."""
    def job(p: Path):
        try:
            return _load(p, n_mels, n_frames, silence_padding, sequential, load)
        except AudioError as e:
            return e
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque()
        for p in paths:
            pending.append((p, pool.submit(job, p)))
            if len(pending) > ahead:
                q, f = pending.popleft()
                yield q, f.result()
        while pending:
            q, f = pending.popleft()
            yield q, f.result()


def transcribe_files(model: Whisper, paths: list[Path], opts: TranscribeOptions,
                     tokenizer: TokenizerBase | None = None,
                     load: Callable[[Path], np.ndarray] = load_audio,
                     encoded: dict[Path, Tensor] | None = None) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Transcribe many files: clips up to 30 s go through in batches, longer ones (and every file
    when `clip_timestamps` are given) window by window with `transcribe_long`. `load` reads a
    file's 16 kHz samples (T,); noisy evaluation passes one that mixes in noise. `tokenizer`
    defaults to Whisper's vocabulary for the model. `encoded`, when given, keeps each clip's
    encoder output (1, n_audio_ctx, D) by path and reuses it on the next call with the same
    model and audio: decoding the same clips under other options (`lm tune`) then skips the
    encoder, with the same batches and so the same transcripts.

    Returns (results in input order, [(path, error line)] for files that could not be read or
    failed part-way; a long recording that failed part-way is also in the results, with the text
    of the windows done). Ctrl-C raises Interrupted carrying both lists so far."""
    tokenizer = tokenizer or whisper_vocabulary(model)
    results: dict[Path, dict] = {}
    failed: list[tuple[Path, str]] = []
    size = window_frames(model.dims.n_audio_ctx)
    sequential = bool(opts.clip_timestamps)
    # Clips wait in one batch per encoded length (always the full window without trim_padding), so
    # a clip's transcript never depends on the lengths of the others.
    batches: dict[int, list[tuple[Path, np.ndarray, Tensor]]] = {}
    paddings = PaddingWindows(model)

    def _features(batch: list[tuple[Path, np.ndarray, Tensor]]) -> Tensor:
        if encoded is not None and all(p in encoded for p, _, _ in batch):
            return torch.cat([encoded[p] for p, _, _ in batch])
        mels = torch.stack([m for _, _, m in batch])
        features = embed_audio(model, mels, paddings(mels) if mels.shape[-1] < size else None)
        if encoded is not None:
            encoded.update((p, features[i:i + 1]) for i, (p, _, _) in enumerate(batch))
        return features

    def flush(batch: list[tuple[Path, np.ndarray, Tensor]]):
        try:
            features = _features(batch)
            for (p, audio, _), result in zip(batch, transcribe_clips(model, features, [a for _, a, _ in batch], opts,
                                                                       tokenizer)):
                results[p] = {"audio": str(p), **result}
        except Exception as e:  # noqa: BLE001 -- one failing batch must not cost the other files
            failed.extend((p, f"cannot transcribe {p}: {one_line(e)}") for p, _, _ in batch)

    def long_file(path: Path):
        try:
            results[path] = {"audio": str(path), **transcribe_long(model, load(path), opts, tokenizer,
                                                                   name=path.name)}
        except AudioError as e:
            failed.append((path, str(e)))
        except TranscriptionStopped as e:
            results[path] = {"audio": str(path), **e.result}
            failed.append((path, f"{path}: {e}"))
        except Interrupted as e:
            results[path] = {"audio": str(path), **e.results[0]}
            raise
        except Exception as e:  # noqa: BLE001 -- e.g. out of memory before the first window
            failed.append((path, f"cannot transcribe {path}: {one_line(e)}"))

    try:
        with tqdm(total=len(paths), desc="transcribing", unit="file",
                  disable=not opts.progress or len(paths) == 1) as bar:
            for path, loaded in _prefetch(paths, model.dims.n_mels, size, 2 * opts.batch_size, opts.silence_padding,
                                          sequential, load):
                if isinstance(loaded, AudioError):
                    failed.append((path, str(loaded)))
                elif loaded is None:
                    long_file(path)
                elif is_silent(loaded[0]):
                    results[path] = {"audio": str(path), "text": "", "language": opts.decoding.language,
                                     "segments": [], "duration": round(len(loaded[0]) / SAMPLE_RATE, 3)}
                else:
                    audio, mel = loaded
                    frames = trimmed_frames(len(audio) // HOP_LENGTH, size) if opts.trim_padding else size
                    batch = batches.setdefault(frames, [])
                    batch.append((path, audio, mel[:, :frames]))
                    if len(batch) == opts.batch_size:
                        flush(batches.pop(frames))
                bar.update(1)
            for batch in batches.values():
                flush(batch)
    except KeyboardInterrupt:
        raise Interrupted([results[p] for p in paths if p in results], failed) from None
    return [results[p] for p in paths if p in results], failed
