"""Which device and precision a run uses, why a GPU cannot be used when it cannot, and the line
that says what a run runs on.

Every CUDA query goes through `torch.cuda` here, so that a test can fake a card it does not have
(capability, name, memory) by patching those functions.
"""
from __future__ import annotations

import os

import torch

from .messages import one_line
from .precision import DTYPES

CPU_INSTEAD = ("to train on the CPU instead, add --device cpu after the preset's flags, or use the CPU recipe: "
               "python train.py @configs/cpu_finetune.args … (docs/train.md)")
NATIVE_BF16 = (8, 0)  # Ampere: the first capability whose tensor cores and SDPA kernels take bf16


class DeviceError(RuntimeError):
    """The device asked for cannot be used; the message says why and what to do."""


def cuda_problem() -> str | None:
    """Why CUDA is unusable in this process (torch without CUDA, a driver too old for it, no
    device visible), or None when it works."""
    if torch.version.cuda is None:
        return (f"this torch ({torch.__version__}) is built without CUDA; install a CUDA build "
                "(https://pytorch.org/get-started/locally/)")
    try:
        torch.cuda.init()
    except (RuntimeError, AssertionError) as e:
        if "driver" in str(e).lower():
            return (f"the NVIDIA driver is too old for this torch's CUDA {torch.version.cuda} ({one_line(e)}); "
                    "update the driver, or install a torch built for an older CUDA")
        return f"CUDA does not start: {one_line(e)}"
    if torch.cuda.device_count() == 0:
        return "no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    return None


def pick_device(name: str) -> torch.device:
    """`auto`: this rank's GPU (LOCAL_RANK under torchrun) when CUDA works, else the CPU. A CUDA
    device that cannot be used raises DeviceError instead of running on the CPU unasked."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        return torch.device("cuda", local_rank) if cuda_problem() is None else torch.device("cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if problem := cuda_problem():
        raise DeviceError(f"--device {name}: {problem}. {CPU_INSTEAD}")
    index = local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {name}: GPU {index} asked for, {torch.cuda.device_count()} visible "
                          "(one torchrun process per GPU: --nproc_per_node at most the GPU count)")
    return torch.device("cuda", index)


def native_bf16(device: torch.device) -> bool:
    """True where the GPU computes bf16 itself. torch.cuda.is_bf16_supported() also counts
    emulation, which would give bf16 to a capability-7.5 card: slow, and without the flash and
    memory-efficient attention kernels, so attention falls back to full matrices."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= NATIVE_BF16


def cpu_native_bf16() -> bool:
    """True where this CPU computes bf16 itself (AMX or AVX-512 BF16): there bf16 training is
    faster than fp32; elsewhere it is emulated, and slower."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence getattr
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def pick_precision(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on GPUs of capability 8.0 and up, fp16 (with a gradient scaler) on older ones,
    fp32 on the CPU."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if native_bf16(device) else torch.float16
    return torch.float32


def precision_warning(device: torch.device, dtype: torch.dtype) -> str | None:
    """A line when bf16 is asked for where it is emulated: a GPU below capability 8.0, or a CPU
    without bf16 instructions (AMX or AVX-512 BF16); either can be slower than the alternative."""
    if dtype != torch.bfloat16:
        return None
    if device.type == "cuda":
        if native_bf16(device):
            return None
        major, minor = torch.cuda.get_device_capability(device)
        return (f"warning: --precision bf16 on a GPU of capability {major}.{minor} is emulated, and attention "
                "falls back to its slow full-matrix path; --precision fp16 (or auto) is the fast one here")
    if cpu_native_bf16():
        return None
    return ("warning: --precision bf16 on a CPU without bf16 instructions (AMX or AVX-512 BF16) is emulated "
            "and can be slower than fp32; pass --precision fp32 after the preset")


def describe(device: torch.device, dtype: torch.dtype) -> str:
    """One line: device, GPU and capability, precision, memory. For example
    `device cuda:0 (NVIDIA GeForce RTX 2060, capability 7.5, 5.6 of 5.8 GiB free), precision fp16 with loss scaling`."""
    name = next(k for k, v in DTYPES.items() if v == dtype)
    precision = f"precision {name}" + (" with loss scaling" if dtype == torch.float16 else "")
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        free, total = torch.cuda.mem_get_info(device)
        return (f"device {device} ({torch.cuda.get_device_name(device)}, capability {major}.{minor}, "
                f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free), {precision}")
    return f"device {device} ({torch.get_num_threads()} threads), {precision}"


def limit_memory(device: torch.device, gib: float | None) -> None:
    """Cap this process's CUDA allocator at `gib` GiB (of the card's total), so that a large card
    behaves like a small one; nothing on the CPU or without a cap."""
    if gib is None:
        return
    if device.type != "cuda":
        raise DeviceError(f"--limit-gib {gib:g} caps a GPU's memory; this run is on {device}")
    total = torch.cuda.get_device_properties(device).total_memory
    if gib * 2**30 > total:
        raise DeviceError(f"--limit-gib {gib:g}: the GPU has only {total / 2**30:.1f} GiB")
    torch.cuda.set_per_process_memory_fraction(gib * 2**30 / total, device)
