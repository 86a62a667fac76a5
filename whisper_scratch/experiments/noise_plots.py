"""PNG pictures of the noise experiment: WER/CER against SNR per arm, the gate against SNR per
layer, and one clip's speech and noise-branch attention maps with the gate values."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: training machines have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

from .dual_inspect import LayerReading  # noqa: E402

Rates = Mapping[str, Mapping[str, float]]  # condition -> {"wer", "cer"}


def plot_wer_vs_snr(conditions: Sequence[str], arms: Mapping[str, Rates], path: str | Path, title: str) -> Path:
    """WER (left) and CER (right) in % for each condition, clean first, one line per arm."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(conditions))
    for metric, ax in zip(("wer", "cer"), axes):
        for name, rates in arms.items():
            ax.plot(x, [100 * rates[c][metric] for c in conditions], "o-", label=name)
        ax.set_xticks(x, conditions)
        ax.set_xlabel("test condition (SNR)")
        ax.set_ylabel(f"{metric.upper()} %")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_gate_vs_snr(conditions: Sequence[str], gates: Mapping[str, Mapping[str, Sequence[float]]],
                     shares: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, title: str) -> Path:
    """Per dual arm (a column): mean gate value (top) and |g * a_noise| / |a_speech| (bottom) per
    decoder layer (a line) against the condition."""
    arms = list(gates)
    fig, axes = plt.subplots(2, len(arms), figsize=(5.5 * len(arms), 7), squeeze=False)
    x = np.arange(len(conditions))
    for col, arm in enumerate(arms):
        for row, (values, label) in enumerate(((gates[arm], "mean gate g"), (shares[arm], "|g·a_noise| / |a_speech|"))):
            ax = axes[row, col]
            per_layer = np.array([values[c] for c in conditions])  # (conditions, layers)
            for layer in range(per_layer.shape[1]):
                ax.plot(x, per_layer[:, layer], "o-", label=f"layer {layer}")
            ax.set_xticks(x, conditions)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(arm)
        axes[1, col].set_xlabel("test condition (SNR)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_dual_attention(mel: Tensor, readings: Sequence[LayerReading], tokens: Sequence[str], positions: int,
                        path: str | Path, title: str) -> Path:
    """One clip through a dual model (readings of a batch of 1 with weights): its log-mel on top,
    then per decoder layer the speech and noise-branch cross-attention (mean over heads, the first
    `positions` audio positions, 20 ms each) and the gate per token and channel. Top right: the
    mean gate per token, one line per layer."""
    n_layers = len(readings)
    fig, axes = plt.subplots(n_layers + 1, 3, figsize=(16, 2.2 * (n_layers + 1) + 0.8),
                             gridspec_kw={"width_ratios": [1, 1, 1.1]})
    extent_mel = (0, positions, 0, mel.shape[0])
    for col in (0, 1):
        axes[0, col].imshow(mel[:, :2 * positions].numpy(), aspect="auto", origin="lower", extent=extent_mel,
                            cmap="magma")
        axes[0, col].set_title("noisy input, log-mel" if col == 0 else "(same input)", fontsize=9)
        axes[0, col].set_ylabel("mel bin")
    ticks = np.arange(len(tokens))
    for layer, r in enumerate(readings):
        axes[0, 2].plot(ticks, r.gate[0].mean(-1).cpu().numpy(), ".-", label=f"layer {layer}")
        for col, (weights, name) in enumerate(((r.speech_weights, "speech"), (r.noise_weights, "noise branch"))):
            ax = axes[layer + 1, col]
            ax.imshow(weights[0].mean(0)[:, :positions].cpu().numpy(), aspect="auto", cmap="viridis",
                      extent=(0, positions, len(tokens) - 0.5, -0.5))
            ax.set_title(f"layer {layer}: {name} cross-attention", fontsize=9)
            ax.set_yticks(ticks, tokens, fontsize=6)
        image = axes[layer + 1, 2].imshow(r.gate[0].cpu().numpy(), aspect="auto", cmap="coolwarm", vmin=0, vmax=1,
                                          interpolation="nearest")
        axes[layer + 1, 2].set_title(f"layer {layer}: gate g per token (rows) and channel", fontsize=9)
        axes[layer + 1, 2].set_yticks(ticks, tokens, fontsize=6)
        fig.colorbar(image, ax=axes[layer + 1, 2], fraction=0.04)
    axes[0, 2].set_xticks(ticks, tokens, rotation=90, fontsize=6)
    axes[0, 2].set_ylabel("mean gate")
    axes[0, 2].legend(fontsize=7)
    axes[0, 2].grid(alpha=0.3)
    for col in (0, 1):
        axes[n_layers, col].set_xlabel("audio position (20 ms)")
    axes[n_layers, 2].set_xlabel("channel")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
