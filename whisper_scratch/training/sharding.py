"""`--fsdp`: the weights, gradients and optimizer states sharded over the ranks with torch's own
FSDP2 (`fully_shard`), so that a model whose full training state does not fit one GPU (large-v3:
about 25 GB in fp32 with AdamW) trains on several.

Units: every residual block, then the encoder and the decoder (their convolutions, embeddings and
final norms) as the two roots; the model itself holds no weights of its own. Two roots, not one
around the model, because the trainer also runs the encoder alone (the padding window of
--trim-padding), before and outside the model's forward. Mixed precision is FSDP's policy: blocks compute in the run's precision, gradients are
reduced in fp32, and the sharded master weights stay fp32.

Everything that leaves the process goes through full (unsharded) state dicts on the CPU: the
checkpoints are ordinary `model.pt` files that transcribe.py loads, and `last/` resumes with FSDP
or without it, on any number of ranks. Evaluation runs on an unsharded copy in the run's
precision, each rank decoding its share: decoding steps differ between ranks, and a sharded model
would need every rank in every forward.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from ..model.whisper import Whisper

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(model: Whisper, dtype: torch.dtype) -> None:
    """Shard `model` in place over the default process group (see the module docstring)."""
    policy = MixedPrecisionPolicy(param_dtype=None if dtype == torch.float32 else dtype, reduce_dtype=torch.float32)
    for block in [*model.encoder.blocks, *model.decoder.blocks]:
        fully_shard(block, mp_policy=policy)
    fully_shard(model.encoder, mp_policy=policy)
    fully_shard(model.decoder, mp_policy=policy)


def set_gradient_sync(model: Whisper, enabled: bool) -> None:
    """Whether the next backward reduce-scatters the gradients: off for all but the last
    micro-batch of an optimizer step (gradient accumulation)."""
    for root in (model.encoder, model.decoder):
        root.set_requires_gradient_sync(enabled)


def full_model_state(model: Whisper) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU, by their names. Sharded: a collective that every
    rank joins, and only rank 0 receives them (the others get {})."""
    return get_model_state_dict(model, options=FULL)


def load_full_model_state(model: Whisper, state: dict[str, torch.Tensor]) -> None:
    """Load full weights (as `full_model_state` gives them) into `model`, sharded or not."""
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def full_optimizer_state(model: Whisper, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state for the whole model on the CPU, keyed by parameter names (so that it
    loads with or without sharding); like `full_model_state`, only rank 0 receives it."""
    return get_optimizer_state_dict(model, optimizer, options=FULL)


def load_full_optimizer_state(model: Whisper, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def unsharded_copy(model: Whisper, dtype: torch.dtype) -> Whisper:
    """A plain (unsharded) copy of a sharded `model` in `dtype` on its device, for decoding; a
    collective: every rank calls it."""
    # Every rank needs the weights, so they are gathered on the GPU (not offloaded to rank 0 alone).
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    copy = Whisper(model.dims, dual_attention=model.dual_attention)
    copy.load_state_dict(state)
    copy.alignment_heads = model.alignment_heads.clone()
    return copy.to(model.device, dtype).eval()
