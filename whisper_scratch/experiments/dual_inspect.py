"""What the dual-attention decoder does inside: per decoder layer, the speech and noise-branch
cross-attention weights and the gate g of out = a_speech + g * a_noise, read with forward hooks
during an ordinary (teacher-forced) decoder pass. Nothing in the model changes."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from ..model.whisper import MultiHeadAttention, Whisper


@dataclass
class LayerReading:
    """One decoder layer's cross-attention in one pass. B audios, H heads, T tokens, S audio positions."""

    speech: Tensor | None = None  # a_speech (B, T, D)
    noise: Tensor | None = None  # a_noise (B, T, D), before the gate
    gate: Tensor | None = None  # g (B, T, D), in (0, 1)
    speech_weights: Tensor | None = None  # (B, H, T, S), rows sum to 1
    noise_weights: Tensor | None = None  # (B, H, T, S)


def _attention_weights(attn: MultiHeadAttention, x: Tensor, kv: tuple[Tensor, Tensor]) -> Tensor:
    """softmax(q k^T / sqrt(Dh)) (B, H, T, S): the weights the attention kernel applied (no mask:
    cross-attention sees every audio position)."""
    q = attn.query(x).float()
    q = q.view(*q.shape[:2], attn.n_head, -1).transpose(1, 2)  # (B, H, T, Dh)
    k = kv[0].float()
    return torch.softmax(q @ k.transpose(-1, -2) / k.shape[-1] ** 0.5, dim=-1)


@contextmanager
def read_cross_attention(model: Whisper, weights: bool = False) -> Iterator[list[LayerReading]]:
    """Hooks on every decoder block's cross-attention (and, in a dual model, its noise branch and
    gate) for the passes inside the `with`: yields one LayerReading per layer, overwritten by each
    pass. `weights=True` also recomputes the attention weights, (B, H, T, S) per layer and branch."""
    readings = [LayerReading() for _ in model.decoder.blocks]
    handles = []

    def on_attention(layer: int, branch: str):
        def hook(module: MultiHeadAttention, args: tuple, output: Tensor) -> None:
            setattr(readings[layer], branch, output.detach().float())
            if weights:
                attention = _attention_weights(module, args[0], args[1]).detach().float()
                setattr(readings[layer], f"{branch}_weights", attention)
        return hook

    def on_gate(layer: int):
        def hook(module, args, output: Tensor) -> None:
            readings[layer].gate = torch.sigmoid(output.detach().float())
        return hook

    for i, block in enumerate(model.decoder.blocks):
        handles.append(block.cross_attn.register_forward_hook(on_attention(i, "speech")))
        if block.noise_cross_attn is not None:
            handles.append(block.noise_cross_attn.register_forward_hook(on_attention(i, "noise")))
            handles.append(block.noise_gate.register_forward_hook(on_gate(i)))
    try:
        yield readings
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def gate_statistics(model: Whisper, features: Tensor, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher-forced pass of tokens (B, T) over audio features (B, S, D) in a dual model; over
    the positions where mask (B, T) is True: the mean gate value per layer (L,) and the mean
    relative size of the gated noise reading, |g * a_noise| / |a_speech| per token, per layer (L,)."""
    if not model.dual_attention:
        raise ValueError("gate_statistics needs a dual-attention model")
    weight = mask.float()
    with read_cross_attention(model) as readings:
        model.logits(tokens, features)
    gates, shares = [], []
    for r in readings:
        gates.append((r.gate.mean(-1) * weight).sum() / weight.sum())
        share = (r.gate * r.noise).norm(dim=-1) / r.speech.norm(dim=-1).clamp_min(1e-12)
        shares.append((share * weight).sum() / weight.sum())
    return torch.stack(gates), torch.stack(shares)
