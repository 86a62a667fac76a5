"""Training data: utterance lists, a Dataset that decodes and augments in DataLoader workers, padding
into batches, and a batch sampler whose position can be saved and restored.

How a trainer uses it (one process per rank):

    train, counts = load_utterances(cfg, "train")             # DataError: nothing usable, say why
    dataset = SpeechDataset(train, tokenizer, n_mels, 448, cfg.language, cfg.task, augment, seed,
                            min_duration=cfg.min_duration, max_duration=cfg.max_duration)
    sampler = ResumableBatchSampler(len(dataset), batch_size, shuffle=True, seed=seed,
                                    rank=rank, world_size=world_size)
    sampler.load_state_dict(checkpoint["sampler"])               # when resuming
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=k)
    for epoch in range(sampler.epoch, epochs):
        sampler.set_epoch(epoch)                                 # keeps the position if already there
        dataset.set_epoch(epoch)                                 # before iter(loader): workers copy it
        for batch in loader:                                     # starts at sampler.batches_done
            ...count batch.skipped by reason; train on the rest (len(batch) may be 0: under DDP the
               rank must still join the gradient all-reduce, e.g. with a zero loss)...
            sampler.advance()                                    # this batch is consumed
            checkpoint["sampler"] = sampler.state_dict()

The sampler does not count batches as it hands them out: DataLoader workers fetch several batches
ahead, so only the trainer knows which batches it has really trained on.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..audio.features import log_mel_window
from ..audio.geometry import CHUNK_LENGTH, HOP_LENGTH, N_FRAMES, SAMPLE_RATE, TIME_PRECISION
from ..audio.io import AudioError, load_audio
from ..data.manifest import Utterance
from ..data.splits import DataError
from ..tokenizer.base import TASKS, TokenizerBase, normalize_language
from .augment import Augment

IGNORE_INDEX = -100  # label value that torch.nn.functional.cross_entropy skips by default
UNREADABLE = "unreadable audio"  # Skipped.kind of a clip that could not be decoded (evaluation scores it as empty)

@dataclass
class Example:
    """One training example. T = len(prefix) + len(text tokens); labels[i] is the token that should
    follow tokens[:i + 1], so labels == tokens[1:] + [eot]. The audio is either a log-mel or, with a
    frozen encoder, the encoder's output on it (training.encoder_cache.CachedSpeechDataset)."""

    mel: torch.Tensor | None  # (n_mels, n_frames) float32, exactly what inference feeds the encoder; n_frames = 3000
    tokens: torch.Tensor  # (T,) int64 decoder input
    labels: torch.Tensor  # (T,) int64 targets; the last one is always <|endoftext|>
    path: str
    audio_features: torch.Tensor | None = None  # (n_audio_ctx, n_audio_state): the encoder output instead of mel


@dataclass
class Skipped:
    """An utterance left out of training, and why (one line, e.g. an AudioError message)."""

    path: str
    reason: str
    kind: str = UNREADABLE  # what the trainer counts it as


@dataclass
class Batch:
    """Padded examples; B may be 0 when every item of the batch was skipped."""

    mel: torch.Tensor  # (B, n_mels, n_frames) float32; (0, 0, 0) for an empty batch or one of audio_features
    tokens: torch.Tensor  # (B, T) int64, padded with <|endoftext|>
    labels: torch.Tensor  # (B, T) int64, padded with IGNORE_INDEX (-100)
    paths: list[str]
    skipped: list[Skipped]
    audio_features: torch.Tensor | None = None  # (B, n_audio_ctx, n_audio_state) in place of mel

    def __len__(self) -> int:
        return len(self.paths)

    def _map(self, fn) -> Batch:
        features = None if self.audio_features is None else fn(self.audio_features)
        return Batch(fn(self.mel), fn(self.tokens), fn(self.labels), self.paths, self.skipped, features)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by DataLoader(pin_memory=True)."""
        return self._map(torch.Tensor.pin_memory)


def collate(batch: Sequence[Example | Skipped]) -> Batch:
    """Stack the Examples of `batch` into a Batch and report the Skipped ones in Batch.skipped.

    Token rows are padded with <|endoftext|>, read from each example's own last label (always
    <|endoftext|>), so no tokenizer is needed here. Label rows are padded with -100, which the
    loss ignores; tokens at padded positions come after the real ones and cannot affect them
    under the decoder's causal mask.
    """
    examples = [item for item in batch if isinstance(item, Example)]
    skipped = [item for item in batch if isinstance(item, Skipped)]
    if not examples:
        empty = torch.zeros(0, 0, dtype=torch.long)
        return Batch(torch.zeros(0, 0, 0), empty, empty.clone(), [], skipped)
    length = max(len(ex.tokens) for ex in examples)
    tokens = torch.stack([torch.cat([ex.tokens, ex.labels[-1:].expand(length - len(ex.tokens))]) for ex in examples])
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, ex in zip(labels, examples):
        row[: len(ex.labels)] = ex.labels
    paths = [ex.path for ex in examples]
    if examples[0].audio_features is not None:
        return Batch(torch.zeros(0, 0, 0), tokens, labels, paths, skipped,
                     torch.stack([ex.audio_features for ex in examples]))
    return Batch(torch.stack([ex.mel for ex in examples]), tokens, labels, paths, skipped)


def _language_code(language: str, tokenizer: TokenizerBase) -> str:
    """A tokenizer language code for a code, name or Common Voice locale ("sv-SE" -> "sv")."""
    for candidate in (language, language.split("-")[0]):
        try:
            return normalize_language(candidate, tokenizer.all_language_codes)
        except ValueError:
            pass
    raise DataError(f"language {language!r} is not in this tokenizer (it knows {', '.join(tokenizer.all_language_codes)})")


class SpeechDataset(Dataset):
    """Utterances -> Example (or Skipped), decoded and augmented on access, i.e. in DataLoader workers.

    Decoder input: the start sequence, then <|notimestamps|>, then the transcript encoded with a
    leading space as Whisper does: [sot] for English-only vocabularies, [sot, <|lang|>, <|task|>]
    for multilingual ones (Whisper BPE or SentencePiece with languages). The labels of the prefix
    positions (<|lang|>, <|task|>, <|notimestamps|>) are kept, not masked: they cost nothing, and the
    <|lang|> target keeps training language identification on the fine-tuning language.

    A share `timestamp_share` of the examples (drawn per clip and epoch) is written as Whisper was
    trained to predict segments instead: the start sequence, <|0.00|>, the transcript, the clip's
    duration as a timestamp token, <|endoftext|>. Training on <|notimestamps|> labels alone is
    what makes fine-tuned Whispers forget timestamps, and with them long-form transcription.

    Skipped (counted by the trainer, never trained on): unreadable, empty or missing audio; clips
    outside [min_duration, max_duration] (and anything longer than the encoder window of `n_frames`
    mel frames, 30 s for every published Whisper: a cut clip no longer matches its transcript); token sequences longer than `max_label_tokens`
    (the decoder context, 448). Those are skipped rather than truncated: a truncated target teaches
    the model to stop in mid-sentence.

    Augmentation draws from a generator seeded by (seed, epoch, index), so an example comes out the
    same in any worker, with any number of workers, and after a resume. Call `set_epoch` before
    each epoch's `iter(DataLoader)` (workers copy the dataset when the iterator starts; so do not
    use persistent_workers=True with augmentation).
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        tokenizer: TokenizerBase,
        n_mels: int = 80,
        max_label_tokens: int = 448,
        language: str | None = None,
        task: str = "transcribe",
        augment: Augment | None = None,
        seed: int = 0,
        *,
        n_frames: int = N_FRAMES,
        min_duration: float = 0.0,
        max_duration: float = CHUNK_LENGTH,
        timestamp_share: float = 0.0,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not 0.0 <= timestamp_share <= 1.0:
            raise ValueError(f"timestamp_share must be in [0, 1], got {timestamp_share}")
        self.n_mels = n_mels
        self.n_frames = n_frames
        self.max_label_tokens = max_label_tokens
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.min_duration = min_duration
        self.max_duration = min(max_duration, n_frames * HOP_LENGTH / SAMPLE_RATE)
        self.timestamp_share = timestamp_share
        self.paths = [str(utt.audio) for utt in utterances]
        # Token ids are worked out here, once, so workers need no tokenizer (nothing to pickle or re-load).
        self.eot, self.no_timestamps, self.timestamp_begin = tokenizer.eot, tokenizer.no_timestamps, tokenizer.timestamp_begin
        prefixes: dict[str | None, list[int]] = {}
        self.prefix_ids: list[list[int]] = []
        self.text_ids: list[list[int]] = []
        for utt in utterances:
            code = language or utt.language
            if code not in prefixes:
                prefixes[code] = self._prefix(tokenizer, code, task)
            self.prefix_ids.append(prefixes[code])
            self.text_ids.append(tokenizer.encode(" " + utt.text.strip()))

    @staticmethod
    def _prefix(tokenizer: TokenizerBase, language: str | None, task: str) -> list[int]:
        """The start sequence, without <|notimestamps|>."""
        if not tokenizer.is_multilingual:
            return [tokenizer.sot]
        if language is None:
            raise DataError("a multilingual tokenizer needs a language: set language or give each row one")
        task_token = tokenizer.transcribe if task == "transcribe" else tokenizer.translate
        return [tokenizer.sot, tokenizer.to_language_token(_language_code(language, tokenizer)), task_token]

    def cache_key(self) -> str:
        """What the log-mels of `mel` are made from (clips, window, duration limits, augmentation,
        seed), as text: the encoder cache is reused only when this is unchanged."""
        augment = repr(self.augment.config) if self.augment is not None else "none"
        return json.dumps([self.paths, self.n_mels, self.n_frames, self.max_duration, self.min_duration, augment,
                           self.seed])

    def n_tokens(self, index: int) -> int:
        """Decoder input length of example `index` (the longer form when timestamps may be drawn)."""
        return len(self.prefix_ids[index]) + len(self.text_ids[index]) + 1 + (self.timestamp_share > 0)

    def with_timestamps(self, index: int) -> bool:
        """Whether example `index` is written with timestamps this epoch (a draw of its own, so it
        does not move the augmentation's random stream)."""
        if self.timestamp_share <= 0:
            return False
        return np.random.default_rng([self.seed, self.epoch, index, 1]).random() < self.timestamp_share

    def label_ids(self, index: int, seconds: float) -> list[int]:
        """prefix + transcript + [eot] for a clip of `seconds`: tokens are ids[:-1], labels ids[1:]."""
        prefix, text = self.prefix_ids[index], self.text_ids[index]
        if not self.with_timestamps(index):
            return prefix + [self.no_timestamps] + text + [self.eot]
        end = min(round(seconds / TIME_PRECISION), round(CHUNK_LENGTH / TIME_PRECISION))
        return prefix + [self.timestamp_begin] + text + [self.timestamp_begin + end, self.eot]

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Which epoch's augmentation to draw (see the class docstring)."""
        self.epoch = epoch

    def example_rng(self, index: int) -> np.random.Generator:
        """The augmentation generator of example `index` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> Example | Skipped:
        item = self.mel(index)
        if isinstance(item, Skipped):
            return item
        mel, seconds = item
        return self.example(index, seconds, mel=mel)

    def mel(self, index: int) -> tuple[torch.Tensor, float] | Skipped:
        """Example `index`'s log-mel (n_mels, n_frames), augmented for the current epoch, and the
        clip's duration in seconds; or why it is skipped."""
        path = self.paths[index]
        n_tokens = self.n_tokens(index)
        if n_tokens > self.max_label_tokens:
            return Skipped(path, f"transcript too long: {n_tokens} tokens > {self.max_label_tokens} (max_label_tokens, at most the decoder context)",
                           "transcript too long")
        try:
            audio = load_audio(path)
        except AudioError as err:
            return Skipped(path, str(err))
        seconds = len(audio) / SAMPLE_RATE
        if seconds > self.max_duration:
            return Skipped(path, f"too long: {seconds:.2f} s > {self.max_duration:g} s (max_duration, at most the encoder window)",
                           "too long")
        if seconds < self.min_duration:
            return Skipped(path, f"too short: {seconds:.2f} s < min_duration {self.min_duration:g} s", "too short")

        if self.augment is None:
            mel = log_mel_window(audio, self.n_mels, self.n_frames)
        else:
            rng = self.example_rng(index)
            audio = self.augment(audio, rng)
            mel = self.augment.spec(log_mel_window(audio, self.n_mels, self.n_frames), len(audio) // HOP_LENGTH, rng)
        return mel, seconds

    def example(self, index: int, seconds: float, **audio: torch.Tensor) -> Example:
        """Example `index` of a clip of `seconds` with its audio (mel= or audio_features=)."""
        ids = torch.tensor(self.label_ids(index, seconds), dtype=torch.long)
        return Example(tokens=ids[:-1], labels=ids[1:], path=self.paths[index], mel=audio.get("mel"),
                       audio_features=audio.get("audio_features"))


class ResumableBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices whose position survives a restart, shared out over ranks.

    Epoch e's order is `torch.randperm(n)` from a generator seeded with seed + e (0..n-1 without
    shuffle). It is cut into global batches of batch_size * world_size indices; rank r takes the
    r-th contiguous slice of batch_size indices of each. So 2 ranks with batch b see exactly the
    samples of 1 rank with batch 2b, and every rank yields len(self) batches; the last global batch
    may be short (unless drop_last), leaving a rank a short or even empty batch (collate gives B=0).

    Position: (epoch, batches_done). Iterating starts at batches_done and does not move it; the
    trainer calls `advance()` after each batch it has trained on (DataLoader workers fetch ahead,
    so counting handed-out batches would skip the prefetched ones on resume).

    With `lengths` (one per index, e.g. label tokens), each run of GROUP_BATCHES global batches of
    the shuffled order is sorted by length before it is cut, and the batches are then shuffled:
    a batch holds labels of similar length, so little of it is padding, and the epoch still
    sees every index once in an order that changes with the epoch.
    """

    GROUP_BATCHES = 50

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, lengths: Sequence[int] | None = None) -> None:
        if n < 0 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad sampler setup: n={n}, batch_size={batch_size}, rank={rank}, world_size={world_size}")
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"lengths has {len(lengths)} entries for {n} indices")
        super().__init__()
        self.lengths = None if lengths is None else list(lengths)
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = self.batches_done = 0  # the position: see the class docstring

    @property
    def grouped(self) -> bool:
        return self.lengths is not None

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        full, rest = divmod(self.n, self.global_batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int) -> None:
        """Move to `epoch`, at its first batch; the current epoch keeps its position, so a resumed
        run can call set_epoch for the epoch it resumes in, like a fresh run."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches_done = 0

    def advance(self, n_batches: int = 1) -> None:
        """Record that the trainer has consumed `n_batches` more batches of this epoch."""
        if self.batches_done + n_batches > len(self):
            raise ValueError(f"advance past the end of epoch {self.epoch} ({len(self)} batches); call set_epoch first")
        self.batches_done += n_batches

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The order of all n indices in `epoch`, shape (n,) int64."""
        if not self.shuffle:
            return torch.arange(self.n)
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))

    def global_batches(self, epoch: int) -> list[list[int]]:
        """The len(self) global batches of `epoch`, in the order they are trained on."""
        order, size = self.epoch_order(epoch).tolist(), self.global_batch_size
        if self.lengths is not None:
            run = size * self.GROUP_BATCHES
            order = [i for start in range(0, self.n, run)
                     for i in sorted(order[start:start + run], key=self.lengths.__getitem__, reverse=True)]
        batches = [order[start:start + size] for start in range(0, self.n, size)][:len(self)]
        if self.lengths is not None and self.shuffle:
            # A second stream for the batch order, so the index order stays that of epoch_order.
            perm = torch.randperm(len(batches), generator=torch.Generator().manual_seed(self.seed + epoch + 2**31))
            batches = [batches[i] for i in perm.tolist()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches(self.epoch)
        for b in range(self.batches_done, len(self)):
            yield batches[b][self.rank * self.batch_size:(self.rank + 1) * self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        """Position plus the settings that must match for the position to mean the same batches."""
        return {"epoch": self.epoch, "batches_done": self.batches_done, "n": self.n,
                "global_batch_size": self.global_batch_size, "shuffle": self.shuffle, "seed": self.seed,
                "drop_last": self.drop_last, "grouped": self.grouped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the batch after the last one consumed. World size may change as long as the
        global batch size stays the same."""
        for key in ("n", "global_batch_size", "shuffle", "seed", "drop_last", "grouped"):
            if state.get(key, False) != getattr(self, key):
                raise ValueError(f"sampler state does not fit: saved {key}={state[key]!r}, now {getattr(self, key)!r}")
        self.epoch = int(state["epoch"])
        self.batches_done = int(state["batches_done"])
