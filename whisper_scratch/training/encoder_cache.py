"""Encoder outputs computed once, for training and evaluating with a frozen encoder.

With the encoder frozen, every epoch would run the same clips through the same encoder again; on
a CPU that is most of the step. `build_encoder_cache` runs each clip through it once per variant
and keeps the outputs in a memory-mapped file, and `CachedSpeechDataset` serves Examples that
carry those outputs (`audio_features`) instead of a log-mel. The decoder sees the same numbers
either way: training on the cache gives the live path's loss and gradients (tests check this),
and with fp32 storage it is exact.

Augmentation draws are fixed by (seed, epoch, clip), so variant k of a clip is exactly what the
live dataset gives in epoch k; epoch e trains on variant e % variants. One variant (the default)
suits clean fine-tuning; with noise or SpecAugment, a few variants give the decoder several
noisy versions of each clip at the cost of one encoder pass each.

Layout of the folder: `features.npy` (n_clips, variants, n_audio_ctx, n_audio_state) and
`meta.json` (what it was built from, clip durations, skipped clips), written last, so a folder
whose meta.json matches is complete and is reused (by a resumed run, or a second run on the same
data and model).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .dataset import Example, Skipped, SpeechDataset

STORAGE = {"fp32": np.float32, "fp16": np.float16}


@dataclass
class CacheMeta:
    key: str  # fingerprint of the encoder weights, the clips and the augmentation
    variants: int
    storage: str
    seconds: list[float | None]  # clip durations; None for a skipped clip
    skipped: dict[str, list[str]]  # clip index -> [reason, kind]


def fingerprint(encoder: torch.nn.Module, dataset: SpeechDataset, variants: int, extra: str = "") -> str:
    """A hash of everything the cached numbers depend on: encoder weights, what the dataset's
    log-mels are made from (`SpeechDataset.cache_key`), and the number of variants."""
    h = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    h.update(json.dumps([dataset.cache_key(), variants, extra]).encode())
    return h.hexdigest()


class _Mels(Dataset):
    """(index, mel, seconds) or (index, Skipped) of a SpeechDataset: decoding stays in workers."""

    def __init__(self, dataset: SpeechDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        return index, self.dataset.mel(index)


def _collate(items):
    return items


@torch.no_grad()
def build_encoder_cache(encode: Callable[[Tensor], Tensor], encoder: torch.nn.Module, dataset: SpeechDataset,
                        folder: Path, variants: int = 1, batch_size: int = 8, num_workers: int = 0,
                        storage: str = "fp32", desc: str = "encoding") -> EncoderCache:
    """Encode every clip of `dataset` `variants` times (variant k = the dataset's epoch k) into
    `folder`, or reuse what is there when it was built from the same things.

    encode: mel (B, n_mels, n_frames) on the CPU -> features (B, n_audio_ctx, n_audio_state) (the
    caller moves it to its device and precision); `encoder` is fingerprinted.
    """
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    if storage not in STORAGE:
        raise ValueError(f"storage must be one of {sorted(STORAGE)}, got {storage!r}")
    folder = Path(folder)
    key = fingerprint(encoder, dataset, variants, storage)
    cached = EncoderCache.open(folder)
    if cached is not None and cached.meta.key == key:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").unlink(missing_ok=True)
    n = len(dataset)
    seconds: list[float | None] = [None] * n
    skipped: dict[str, list[str]] = {}
    tmp = folder / "features.tmp.npy"
    array = None
    epoch = dataset.epoch
    try:
        for k in range(variants):
            dataset.set_epoch(k)
            todo = [i for i in range(n) if str(i) not in skipped]
            loader = DataLoader(_Mels(dataset, todo), batch_size=batch_size, num_workers=num_workers,
                                collate_fn=_collate)
            for items in tqdm(loader, desc=f"{desc} ({k + 1}/{variants})" if variants > 1 else desc, unit="batch"):
                good = [(i, item) for i, item in items if not isinstance(item, Skipped)]
                skipped.update({str(i): [item.reason, item.kind] for i, item in items if isinstance(item, Skipped)})
                if not good:
                    continue
                features = encode(torch.stack([mel for _, (mel, _) in good])).float().cpu().numpy()
                if array is None:
                    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=STORAGE[storage],
                                                      shape=(n, variants, *features.shape[1:]))
                for row, (i, (_, secs)) in zip(features, good):
                    array[i, k] = row
                    seconds[i] = secs
    except BaseException:
        # Ctrl-C or a failure part-way: half an array is no cache, and may be gigabytes.
        tmp.unlink(missing_ok=True)
        raise
    finally:
        dataset.set_epoch(epoch)
    if array is None:
        raise ValueError(f"{desc}: no clip could be read ({len(skipped)} skipped), nothing to cache")
    array.flush()
    del array
    os.replace(tmp, folder / "features.npy")
    meta = CacheMeta(key, variants, storage, seconds, skipped)
    tmp_meta = folder / "meta.json.tmp"
    tmp_meta.write_text(json.dumps(asdict(meta)))
    os.replace(tmp_meta, folder / "meta.json")
    return EncoderCache(folder, meta)


def wait_for_encoder_cache(folder: Path, encoder: torch.nn.Module, dataset: SpeechDataset, variants: int = 1,
                           storage: str = "fp32", poll_seconds: float = 2.0) -> EncoderCache:
    """The cache that another process (torchrun's rank 0) is building in `folder` for the same
    encoder and clips, once it is complete. The folder is polled, not waited for in a collective:
    encoding a large split takes longer than any collective timeout, and if the builder fails,
    torchrun stops this process with it."""
    key = fingerprint(encoder, dataset, variants, storage)
    while (cached := EncoderCache.open(folder)) is None or cached.meta.key != key:
        time.sleep(poll_seconds)
    return cached


class EncoderCache:
    """A built cache: `features(index, variant)` (n_audio_ctx, n_audio_state) float32."""

    def __init__(self, folder: Path, meta: CacheMeta):
        self.folder, self.meta = Path(folder), meta
        self._array: np.ndarray | None = None  # opened lazily: a memmap must not be pickled into workers

    @classmethod
    def open(cls, folder: Path) -> EncoderCache | None:
        """The cache in `folder`, or None when there is no complete one."""
        meta_path = Path(folder) / "meta.json"
        if not meta_path.is_file() or not (Path(folder) / "features.npy").is_file():
            return None
        return cls(folder, CacheMeta(**json.loads(meta_path.read_text())))

    def __getstate__(self) -> dict:
        return {"folder": self.folder, "meta": self.meta, "_array": None}

    def features(self, index: int, variant: int) -> Tensor:
        if self._array is None:
            self._array = np.load(self.folder / "features.npy", mmap_mode="r")
        return torch.from_numpy(np.array(self._array[index, variant], dtype=np.float32))


class CachedSpeechDataset(Dataset):
    """`dataset`'s Examples with cached encoder outputs instead of log-mels (same labels, same
    skipped clips); epoch e reads variant e % variants."""

    def __init__(self, dataset: SpeechDataset, cache: EncoderCache):
        if len(cache.meta.seconds) != len(dataset):
            raise ValueError(f"{cache.folder}: cache holds {len(cache.meta.seconds)} clips, dataset {len(dataset)}")
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> Example | Skipped:
        if str(index) in self.cache.meta.skipped:
            reason, kind = self.cache.meta.skipped[str(index)]
            return Skipped(self.dataset.paths[index], reason, kind)
        variant = self.dataset.epoch % self.cache.meta.variants
        return self.dataset.example(index, self.cache.meta.seconds[index],
                                    audio_features=self.cache.features(index, variant))
