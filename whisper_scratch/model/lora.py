"""LoRA adapters on the attention projections, merged into plain weights for export.

W x + (alpha / r) * B A x, with A (r, in) random and B (out, r) zero, so an adapted model starts
exactly equal to the base one. The base weight keeps its name, so merging gives back a model that
loads strictly anywhere."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .whisper import MultiHeadAttention

PROJECTIONS = ("query", "key", "value", "out")


class LoRALinear(nn.Linear):
    """nn.Linear plus a trainable low-rank update; `weight` and `bias` are frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device=base.weight.device, dtype=base.weight.dtype)
        self.load_state_dict(base.state_dict())
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out)"""
        update = (x @ self.lora_A.to(x.dtype).T) @ self.lora_B.to(x.dtype).T
        return super().forward(x) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain nn.Linear with the update folded into its weight."""
        plain = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            plain.weight.copy_(self.weight + self.scale * (self.lora_B @ self.lora_A).to(self.weight.dtype))
            if self.bias is not None:
                plain.bias.copy_(self.bias)
        return plain


def _attention_modules(model: nn.Module) -> list[MultiHeadAttention]:
    """The pretrained attention layers; the noise branch is new and trains in full instead."""
    return [m for name, m in model.named_modules() if isinstance(m, MultiHeadAttention) and "noise_" not in name]


def add_lora(model: nn.Module, rank: int, alpha: float | None = None) -> list[nn.Parameter]:
    """Wrap every attention projection of `model` (a Whisper, or a part such as its decoder) in
    LoRA; returns the new trainable parameters."""
    alpha = alpha if alpha is not None else 2.0 * rank
    params = []
    for attn in _attention_modules(model):
        for name in PROJECTIONS:
            wrapped = LoRALinear(getattr(attn, name), rank, alpha)
            setattr(attn, name, wrapped)
            params += [wrapped.lora_A, wrapped.lora_B]
    return params


def merged_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The weights of `model` on the CPU with every adapter folded in, under OpenAI's names: what
    `merge_lora` would leave, without a second copy of the model on its device."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for name, layer in model.named_modules():
        if isinstance(layer, LoRALinear):
            a, b, weight = state.pop(f"{name}.lora_A"), state.pop(f"{name}.lora_B"), state[f"{name}.weight"]
            state[f"{name}.weight"] = weight + layer.scale * (b @ a).to(weight.dtype)
    return state


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its weight, in place; the model then has only OpenAI names."""
    for attn in _attention_modules(model):
        for name in PROJECTIONS:
            layer = getattr(attn, name)
            if isinstance(layer, LoRALinear):
                setattr(attn, name, layer.merged())
    return model
