"""The precision names the command lines take, and the default precision of a device."""
from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def inference_dtype(name: str | None, device: str | torch.device) -> torch.dtype:
    """The dtype `name` names, else fp16 on a GPU and fp32 on a CPU (what inference defaults to)."""
    if name:
        return DTYPES[name]
    return torch.float16 if str(device).startswith("cuda") else torch.float32
