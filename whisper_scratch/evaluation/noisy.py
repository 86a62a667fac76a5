"""Evaluation under noise: every reference clip mixed with recorded noise at given SNRs, and WER/CER
per condition, clean always first. A clip gets the same noise segment (`audio.noise.NoiseMixer`)
in `transcribe.py --mode evaluate`, in the trainer's evaluation and in the noise study."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..audio.io import load_audio
from ..audio.noise import (
    NoiseMixer,
    NoiseSegment,
    clip_keys,
)
from ..data.manifest import Utterance
from ..inference.decoding import DecodingOptions, FallbackOptions
from ..inference.options import TranscribeOptions
from ..inference.transcriber import transcribe_files
from ..model.whisper import Whisper
from ..tokenizer import TokenizerBase
from .metrics import error_rates

CLEAN = "clean"


def parse_snrs(text: str) -> tuple[float, ...]:
    """"20,10,5,0" -> (20.0, 10.0, 5.0, 0.0): dB values in the order given, repeats dropped."""
    values: list[float] = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"SNR {part.strip()!r} is not a number; give dB values separated by commas, "
                             "e.g. 20,10,5,0") from None
        if not math.isfinite(value):
            raise ValueError(f"SNR {part.strip()!r} is not a finite number of dB; clean audio is always evaluated")
        if value not in values:
            values.append(value)
    return tuple(values)


def condition_name(snr_db: float | None) -> str:
    """None -> "clean", 5.0 -> "5 dB", -2.5 -> "-2.5 dB"."""
    return CLEAN if snr_db is None else f"{snr_db:g} dB"


def metric_suffix(snr_db: float) -> str:
    """5.0 -> "snr5", -2.5 -> "snr-2.5": the tail of metric names such as eval_wer_snr5."""
    return f"snr{snr_db:g}"


@dataclass
class NoisyRun:
    """Transcripts of the listed clips under one condition."""

    snr_db: float | None
    results: list[dict]
    failed: list[tuple[Path, str]]
    segments: dict[Path, NoiseSegment] = field(default_factory=dict)


def transcribe_noisy(model: Whisper, paths: list[Path], opts: TranscribeOptions, tokenizer: TokenizerBase | None,
                     mixer: NoiseMixer, snrs: Sequence[float], keys: dict[Path, str] | None = None) -> list[NoisyRun]:
    """One `transcribe_files` pass per SNR, each clip mixed with its own noise segment (chosen by
    its key in `keys`, by default `clip_keys(paths)`)."""
    keys = keys or clip_keys(paths)
    runs = []
    for snr in snrs:
        segments: dict[Path, NoiseSegment] = {}

        def load(path: Path, snr: float = snr, segments: dict = segments) -> np.ndarray:
            mixed, segments[path] = mixer.mix(load_audio(path), keys[path], snr)
            return mixed

        results, failed = transcribe_files(model, paths, opts, tokenizer, load=load)
        runs.append(NoisyRun(snr, results, failed, segments))
    return runs


@dataclass
class ConditionScore:
    snr_db: float | None
    wer: float
    cer: float
    utterances: list[dict]
    unreadable: int

    @property
    def name(self) -> str:
        return condition_name(self.snr_db)

    def to_dict(self) -> dict:
        return {"condition": self.name, "snr_db": self.snr_db, "wer": self.wer, "cer": self.cer,
                "unreadable": self.unreadable, "utterances": self.utterances}


def score_run(run: NoisyRun, rows: Sequence[Utterance], language: str | None,
              scoring: str = "standard") -> ConditionScore:
    """WER/CER of one condition against the listing. An unreadable clip counts as an empty
    hypothesis: skipping it would flatter the WER."""
    hyps = {Path(r["audio"]): r["text"] for r in run.results}
    utterances = []
    for row in rows:
        u = {"audio": str(row.audio), "reference": row.text, "hypothesis": hyps.get(row.audio, "")}
        if row.audio in run.segments:
            u.update(run.segments[row.audio].to_dict())
        utterances.append(u)
    rates = error_rates([u["reference"] for u in utterances], [u["hypothesis"] for u in utterances], language,
                        scoring)
    return ConditionScore(run.snr_db, rates["wer"], rates["cer"], utterances, len(run.failed))


def format_table(scores: Sequence[ConditionScore]) -> str:
    """A fixed-width table: one row per condition with WER and CER in percent."""
    lines = [f"{'condition':<10} {'WER':>8} {'CER':>8}"]
    lines += [f"{s.name:<10} {100 * s.wer:>7.2f}% {100 * s.cer:>7.2f}%" for s in scores]
    return "\n".join(lines)


def noise_report(mixer: NoiseMixer, scores: Sequence[ConditionScore]) -> dict:
    """The JSON fields evaluation under noise adds: how the noise was chosen, and every condition."""
    return {"noise": {"noise_dir": str(mixer.noise_dir), "seed": mixer.seed,
                      "snr_db": [s.snr_db for s in scores if s.snr_db is not None]},
            "conditions": [s.to_dict() for s in scores]}


class NoisyEvaluation:
    """The trainer's periodic evaluation under noise: greedy transcripts of the eval clips at each
    SNR, as metrics {"eval_wer_snr10": ..., "eval_cer_snr10": ...}. The noise folder is read at
    construction, so a bad one stops the run before training. Under torchrun each rank decodes
    its share, with the noise each clip gets in one process, and `gather` joins the shares."""

    def __init__(self, utterances: Sequence[Utterance], noise_dir: Path, snrs: Sequence[float], seed: int = 0):
        if not snrs:
            raise ValueError("eval_snr is empty: give at least one SNR in dB, e.g. 10,0")
        self.utterances = list(utterances)
        self.snrs = tuple(snrs)
        self.mixer = NoiseMixer(noise_dir, seed)
        self.keys = clip_keys([u.audio for u in self.utterances])

    def __call__(self, model: Whisper, tokenizer: TokenizerBase, decoding: DecodingOptions, batch_size: int,
                 language: str | None, scoring: str = "standard", shard: tuple[int, int] = (0, 1),
                 gather: Callable[[list], list] = list) -> dict[str, float]:
        """Metrics for `model`, decoded with `decoding` (greedy; no fallback, no silence gate) and
        scored for `language` the `scoring` way (see evaluation.metrics.error_rates). `shard`
        (rank, world): this process decodes clips rank, rank + world, …; `gather` returns every
        rank's list joined."""
        opts = TranscribeOptions(decoding=replace(decoding, temperature=0.0), batch_size=batch_size,
                                 fallback=FallbackOptions((0.0,), None, None, None), progress=False)
        rank, world = shard
        paths = [u.audio for u in self.utterances[rank::world]]
        runs = transcribe_noisy(model, paths, opts, tokenizer, self.mixer, self.snrs, self.keys)
        metrics = {}
        for run in runs:
            run = NoisyRun(run.snr_db, gather(run.results), gather(run.failed),
                           dict(gather(list(run.segments.items()))))
            score = score_run(run, self.utterances, language, scoring)
            metrics[f"eval_wer_{metric_suffix(run.snr_db)}"] = score.wer
            metrics[f"eval_cer_{metric_suffix(run.snr_db)}"] = score.cer
        return metrics
