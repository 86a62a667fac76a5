"""PNG pictures of what people look at: training curves (loss, learning rate, WER/CER)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training machines have no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_training(history: list[dict], path: str | Path) -> Path:
    """Loss per step on the left, eval WER/CER per step on the right (and WER per SNR when the run
    evaluated under noise); returns the PNG path."""
    train = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval_wer" in h]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot([h["step"] for h in train], [h["loss"] for h in train], label="train loss")
    left.set_xlabel("step")
    left.set_ylabel("cross-entropy")
    left.set_yscale("log")
    left.grid(alpha=0.3)
    left.legend()
    right.plot([h["step"] for h in evals], [100 * h["eval_wer"] for h in evals], "o-", label="WER")
    right.plot([h["step"] for h in evals], [100 * h["eval_cer"] for h in evals], "s--", label="CER")
    noisy = sorted({k for h in evals for k in h if k.startswith("eval_wer_snr")},
                   key=lambda k: -float(k[len("eval_wer_snr"):]))
    for key in noisy:  # evaluation under noise (--eval-noise-dir): one WER line per SNR
        right.plot([h["step"] for h in evals if key in h], [100 * h[key] for h in evals if key in h], ".:",
                   label=f"WER {key[len('eval_wer_snr'):]} dB")
    right.set_xlabel("step")
    right.set_ylabel("%")
    right.grid(alpha=0.3)
    right.legend()
    fig.suptitle("training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_wer_against_minutes(minutes: list[float], wer: list[float], summary: dict, path: str | Path,
                             earlier: dict[str, tuple[list[float], list[float]]] | None = None) -> Path:
    """Dev WER (%) against wall-clock minutes of a fine-tuning run, with the test WER before and
    after (and an optional "goal" WER) as horizontal marks; `summary` holds "before"/"after"
    {"wer"} and "machine". `earlier` maps a label to another run's (minutes, dev WER), drawn
    thinner for comparison."""
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(minutes, [100 * w for w in wer], "o-", label=summary.get("label", "dev WER (greedy, during training)"))
    for label, (other_minutes, other_wer) in (earlier or {}).items():
        ax.plot(other_minutes, [100 * w for w in other_wer], ".--", linewidth=1, label=label)
    for key, style in (("before", ":"), ("after", "--")):
        ax.axhline(100 * summary[key]["wer"], linestyle=style, color="gray")
        ax.text(0.01, 100 * summary[key]["wer"] + 1, f"test WER {key}: {100 * summary[key]['wer']:.1f} %",
                transform=ax.get_yaxis_transform(), fontsize=8)
    if summary.get("goal"):
        ax.axhline(100 * summary["goal"], linestyle="-.", color="tab:red")
        ax.text(0.99, 100 * summary["goal"] - 4, f"goal {100 * summary['goal']:.0f} %", color="tab:red",
                transform=ax.get_yaxis_transform(), fontsize=8, ha="right")
    ax.set_xlabel("minutes since the run started (encoder caching included)")
    ax.set_ylabel("WER %")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left" if earlier else "upper right", fontsize=8)
    ax.set_title(f"fine-tuning on CPU: {summary.get('machine', '')}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
