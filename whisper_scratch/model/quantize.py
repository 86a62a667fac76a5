"""Smaller weights for CPU inference (`--quantize`): every linear layer, and the decoder's output
projection (tied to the token embedding), becomes torch's dynamically quantized linear (the
fbgemm/x86 kernels). Convolutions, attention and layer norms stay float32.

  int8  int8 weights with one scale per output channel; activations quantized to 8 bits per
        call, products summed in int32. A quarter of fp32's weight bytes and int8 arithmetic:
        the fastest, and it moves the logits enough to change words (docs/benchmarks.md).
  fp16  float16 weights, float32 activations and sums: half the weight bytes, which is what a
        decoding step's output projection (n_vocab x n_state, read once per token) waits on,
        and logits within about 1e-4 of fp32's.

Why torch's own kernels and not torchao's: on a CPU without AVX-512 (the 2-core EPYC of
docs/benchmarks.md) torchao's int8 configurations run eagerly at a fraction of fp32's speed
(they need torch.compile), where fbgemm's is several times faster than fp32.

A quantized model only runs: saving and export refuse it (`is_quantized`), since its
weights are no longer the checkpoint's.

`fp32_logits` gives a bf16 model the same kind of output projection, for precision rather than
size: bf16 keeps 8 bits of mantissa, so logits of 20 to 30 come out in steps of 0.125 to 0.25,
coarse enough that the top two tie and greedy decoding takes the lower token id. Window by window
on the 30-minute recording of docs/benchmarks.md that fell into repetition loops, which the
previous-text prompt carried on.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from .whisper import Whisper

QUANTIZATIONS: dict[str, torch.dtype] = {"int8": torch.qint8, "fp16": torch.float16}


def is_quantized(model: Whisper) -> bool:
    """Whether `model` holds weights for running only, never saved: both `quantize_linear` and
    `fp32_logits` give it an output projection of its own, apart from the embedding."""
    return model.decoder.output_projection is not None


def quantize_linear(model: Whisper, kind: str = "int8") -> Whisper:
    """`model` (float32, on the CPU, in eval mode) with `kind` ("int8" or "fp16") linear layers,
    in place; returned.

    Raises ValueError for a model that is not float32 on the CPU: the kernels take float32
    activations, and exist for x86 and ARM CPUs only."""
    if kind not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {kind!r}; use one of {', '.join(QUANTIZATIONS)}")
    if model.device.type != "cpu":
        raise ValueError(f"{kind} weights run on the CPU only; the model is on {model.device} (on a GPU, fp16 is "
                         "the fast precision: leave --quantize out)")
    if model.dtype != torch.float32:
        raise ValueError(f"{kind} layers take float32 activations; load the model in fp32, not "
                         f"{str(model.dtype).removeprefix('torch.')}")
    if model.training:
        raise ValueError(f"{kind} weights are for inference: call model.eval() first (training needs float weights)")
    # The output projection reads the embedding matrix (n_vocab x n_state), the largest weight of
    # every decoding step; as a Linear of its own it is quantized with the rest. The embedding
    # itself stays float32 for the token lookup.
    model.decoder.output_projection = _embedding_projection(model)
    _quantize_dynamic(model, kind)
    return model


def fp32_logits(model: Whisper) -> Whisper:
    """`model` (bf16, in eval mode) computing its logits from float32 activations into float32, in
    place; returned. The rest of the model stays bf16. On an x86 CPU the output projection holds
    fp16 weights (fbgemm's kernel: as many bytes per step as bf16's, float32 sums and output);
    elsewhere a float32 copy of the embedding. The model then only runs, as a quantized one does
    (`is_quantized`).

    Raises ValueError for a model that is not bf16 or not in eval mode."""
    if model.dtype != torch.bfloat16:
        raise ValueError(f"fp32_logits is for a bf16 model, not {str(model.dtype).removeprefix('torch.')}")
    if model.training:
        raise ValueError("fp32_logits is for inference: call model.eval() first")
    projection = _embedding_projection(model)
    projection.weight = nn.Parameter(projection.weight.detach().float(), requires_grad=False)
    if has_fp16_linear(model.device):
        projection = _quantize_dynamic(nn.Sequential(projection), "fp16")[0]
    model.decoder.output_projection = projection
    return model


def has_fp16_linear(device: torch.device) -> bool:
    """Whether torch's fp16-weight linear (fbgemm's kernel, x86 CPUs) runs on `device`."""
    return device.type == "cpu" and bool({"x86", "fbgemm"} & set(torch.backends.quantized.supported_engines))


def _embedding_projection(model: Whisper) -> nn.Linear:
    """A Linear (n_state -> n_vocab, no bias) over the decoder's tied embedding matrix."""
    embedding = model.decoder.token_embedding
    projection = nn.Linear(embedding.embedding_dim, embedding.num_embeddings, bias=False, device="meta")
    projection.weight = embedding.weight
    return projection


def _quantize_dynamic(module: nn.Module, kind: str) -> nn.Module:
    """Every nn.Linear of `module` as torch's dynamically quantized `kind` linear, in place."""
    with warnings.catch_warnings():
        # torch.ao.quantization and its quantized tensors warn of their future move to torchao;
        # in this torch they are what runs (see the module's docstring).
        warnings.filterwarnings("ignore", message=r".*deprecated and will be removed")
        qconfig = (torch.ao.quantization.per_channel_dynamic_qconfig if kind == "int8"
                   else torch.ao.quantization.float16_dynamic_qconfig)
        return torch.ao.quantization.quantize_dynamic(module, {nn.Linear: qconfig}, dtype=QUANTIZATIONS[kind],
                                                      inplace=True)
