"""The fusion weights lm_alpha and lm_beta searched on a dev split (`whisper-scratch lm tune`): every
trial decodes the split exactly as `transcribe.py --mode evaluate --beam_size N --lm LM` would, and
scores it the same way; the encoder runs once per clip, the trials only decode again.

Search: a pattern search over the grid `alphas` x `betas` (start in the middle, move to the best
of the four neighbours until none is better) or the whole grid, within a budget of trials. The
plain beam search (no LM) is always trial 0, so that a tuned LM is never worse than none on dev.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from torch import Tensor

from ..common.files import write_json
from ..data.manifest import Utterance
from ..evaluation.listing import score_runs
from ..evaluation.noisy import NoisyRun
from ..inference.decoding import DecodingOptions, WordScorer
from ..inference.options import TranscribeOptions
from ..inference.transcriber import transcribe_files
from ..model.loaded import LoadedModel

ALPHAS = (0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75)
BETAS = (-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)
# Beside a checkpoint: the pair tuned for it, which transcribe.py --lm uses when not given.
STORED = "lm_fusion.json"


@dataclass(frozen=True)
class Trial:
    alpha: float
    beta: float
    wer: float
    cer: float
    seconds: float  # decoding and scoring (the first trial also encodes)
    fused: bool = True  # False: the plain beam search, no LM

    @property
    def key(self) -> tuple[float, float, float]:
        """Lower is better: WER, then CER, then the lighter LM weight."""
        return self.wer, self.cer, self.alpha


class DevSplit:
    """A model and the clips of a dev listing, decoded under any fusion weights: the encoder
    output of each clip is kept after the first decoding."""

    def __init__(self, loaded: LoadedModel, rows: Sequence[Utterance], language: str | None, options: TranscribeOptions):
        self.loaded, self.rows, self.language, self.options = loaded, list(rows), language, options
        self.encoded: dict[Path, Tensor] = {}

    def trial(self, lm: WordScorer | None, alpha: float, beta: float) -> Trial:
        """Decode and score the split with these weights (`lm` None: plain beam search)."""
        started = time.perf_counter()
        decoding = replace(self.options.decoding, lm=lm, lm_alpha=alpha, lm_beta=beta)
        results, failed = transcribe_files(self.loaded.model, [r.audio for r in self.rows],
                                           replace(self.options, decoding=decoding), self.loaded.tokenizer,
                                           encoded=self.encoded)
        score = score_runs([NoisyRun(None, results, failed)], self.rows, self.language)[0]
        return Trial(alpha, beta, score.wer, score.cer, time.perf_counter() - started, lm is not None)


def search(run: Callable[[float, float], Trial], alphas: Sequence[float], betas: Sequence[float],
           budget: int, whole_grid: bool = False) -> list[Trial]:
    """Fused trials, in the order run: the whole grid (row by row), or a pattern search from its
    middle; at most `budget` trials either way."""
    done: dict[tuple[int, int], Trial] = {}

    def visit(i: int, j: int) -> None:
        if (i, j) not in done and len(done) < budget and 0 <= i < len(alphas) and 0 <= j < len(betas):
            done[i, j] = run(alphas[i], betas[j])

    if whole_grid:
        for i in range(len(alphas)):
            for j in range(len(betas)):
                visit(i, j)
        return list(done.values())
    here = (len(alphas) // 2, len(betas) // 2)
    visit(*here)
    while len(done) < budget:
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            visit(here[0] + di, here[1] + dj)
        best = min(done, key=lambda ij: done[ij].key)
        if best == here:
            break
        here = best
    return list(done.values())


def best_trial(trials: Sequence[Trial]) -> Trial:
    return min(trials, key=lambda t: t.key)


def format_table(trials: Sequence[Trial]) -> str:
    """A markdown table of the trials, best marked."""
    best = best_trial(trials)
    lines = ["| lm_alpha | lm_beta | WER | CER | seconds |", "| ---: | ---: | ---: | ---: | ---: |"]
    for t in trials:
        mark = " **best**" if t is best else ""
        weights = f"{t.alpha:g} | {t.beta:g}" if t.fused else "no LM | no LM"
        lines.append(f"| {weights} | {t.wer * 100:.2f} %{mark} | {t.cer * 100:.2f} % | {t.seconds:.0f} |")
    return "\n".join(lines)


def write_stored(folder: Path, best: Trial, lm: Path, dev: str, beam_size: int) -> Path:
    """`folder/lm_fusion.json`: the tuned pair, for transcribe.py --lm without --lm_alpha/--lm_beta."""
    path = folder / STORED
    write_json(path, {"lm": str(Path(lm).resolve()), "lm_alpha": best.alpha, "lm_beta": best.beta, "dev": dev,
                      "dev_wer": best.wer, "dev_cer": best.cer, "beam_size": beam_size})
    return path


def read_stored(model_path: str | Path, lm: str | Path) -> dict | None:
    """The pair `lm tune --save` stored beside a checkpoint folder for an LM of the same file name
    as `lm` (weights tuned for one LM do not fit another), or None: no folder, no file, another
    LM, or a file that does not hold two numbers."""
    path = Path(model_path) / STORED
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        numbers = all(isinstance(stored.get(k), (int, float)) for k in ("lm_alpha", "lm_beta"))
        return stored if numbers and Path(str(stored.get("lm"))).name == Path(lm).name else None
    except (OSError, ValueError, AttributeError):
        return None


def report(trials: Sequence[Trial], baseline: Trial) -> dict:
    """What `lm tune --output` writes."""
    best = best_trial([baseline, *trials])
    return {"baseline": asdict(baseline), "trials": [asdict(t) for t in trials],
            "best": {"lm_alpha": best.alpha, "lm_beta": best.beta, "wer": best.wer, "cer": best.cer}}


def default_options(language: str | None, beam_size: int, batch_size: int = 8) -> TranscribeOptions:
    """What `transcribe.py --mode evaluate --beam_size N` decodes with (no timestamps, temperature
    fallback, best_of 5, seed 0), without progress bars."""
    return TranscribeOptions(decoding=DecodingOptions(language=language, beam_size=beam_size, best_of=5,
                                                      without_timestamps=True),
                             batch_size=batch_size, progress=False)
