"""Device and precision choice (whisper_scratch/common/device.py), with the CUDA queries faked: the
cards people own (capability 6.1, 7.5) get fp16 with the scaler, Ampere and later bf16; a CUDA
device that cannot be used stops a run with the reason and the way to train on the CPU."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from whisper_scratch.common.device import (
    DeviceError,
    cuda_problem,
    describe,
    limit_memory,
    pick_device,
    pick_precision,
    precision_warning,
)

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30


@pytest.fixture
def fake_card(monkeypatch):
    """A working CUDA with one card of the given capability; is_bf16_supported says yes, as torch's
    does by default where bf16 is only emulated."""
    def install(capability, name="NVIDIA GeForce RTX 2060", total=6 * GIB, free=5.6 * GIB):
        monkeypatch.setattr(torch.version, "cuda", "12.8")
        monkeypatch.setattr(torch.cuda, "init", lambda: None)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free), int(total)))
    return install


@pytest.mark.parametrize("capability, expected", [
    ((6, 1), torch.float16),   # GTX 1060
    ((7, 5), torch.float16),   # RTX 2060, T4
    ((8, 0), torch.bfloat16),  # A100
    ((8, 6), torch.bfloat16),  # RTX 3060
    ((9, 0), torch.bfloat16),  # H100/H200
])
def test_auto_precision_follows_the_capability_not_emulated_bf16(fake_card, capability, expected):
    fake_card(capability)
    cuda = pick_device("cuda")
    assert cuda == torch.device("cuda", 0)
    assert pick_precision("auto", cuda) == expected
    assert pick_precision("fp32", cuda) == torch.float32  # an explicit choice stays
    assert (precision_warning(cuda, torch.bfloat16) is None) == (capability >= (8, 0))


def test_auto_on_the_cpu_is_fp32():
    assert pick_precision("auto", torch.device("cpu")) == torch.float32


def test_the_first_line_names_gpu_capability_precision_and_memory(fake_card):
    fake_card((7, 5))
    line = describe(torch.device("cuda", 0), torch.float16)
    assert line == ("device cuda:0 (NVIDIA GeForce RTX 2060, capability 7.5, 5.6 of 6.0 GiB free), "
                    "precision fp16 with loss scaling")
    assert describe(torch.device("cpu"), torch.float32).startswith("device cpu (")


@pytest.mark.parametrize("breakage, reason", [
    ("cpu_build", "built without CUDA"),
    ("old_driver", "driver is too old"),
    ("no_device", "no CUDA device is visible"),
])
def test_an_unusable_cuda_stops_a_gpu_run_with_the_reason(fake_card, monkeypatch, breakage, reason):
    fake_card((7, 5))
    if breakage == "cpu_build":
        monkeypatch.setattr(torch.version, "cuda", None)
    elif breakage == "old_driver":
        def init():
            raise RuntimeError("The NVIDIA driver on your system is too old (found version 11040).")
        monkeypatch.setattr(torch.cuda, "init", init)
    else:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert reason in cuda_problem()
    with pytest.raises(DeviceError) as e:
        pick_device("cuda")
    message = str(e.value)
    assert reason in message and "--device cpu" in message and "configs/cpu_finetune.args" in message
    assert "\n" not in message
    assert pick_device("auto") == torch.device("cpu")  # auto falls back, as asked


def test_a_rank_beyond_the_visible_gpus_is_named(fake_card, monkeypatch):
    fake_card((8, 0))
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(DeviceError, match="GPU 1 asked for, 1 visible"):
        pick_device("cuda")


def test_the_memory_cap_is_a_fraction_of_the_card(fake_card, monkeypatch):
    fake_card((9, 0), total=140 * GIB)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: type("P", (), {"total_memory": 140 * GIB})())
    fractions = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, device=None: fractions.append(f))
    limit_memory(torch.device("cuda", 0), 6.0)
    assert fractions == [pytest.approx(6 / 140)]
    with pytest.raises(DeviceError, match="only 140.0 GiB"):
        limit_memory(torch.device("cuda", 0), 200.0)
    with pytest.raises(DeviceError, match="on cpu"):
        limit_memory(torch.device("cpu"), 6.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA cannot be used")
@pytest.mark.parametrize("preset", ["configs/6gb.args", "configs/6gb_lowmem.args", "configs/run.args"])
def test_a_gpu_preset_without_cuda_stops_with_one_line(preset, tmp_path):
    """This machine's torch has no CUDA: the preset stops at once instead of training on the CPU."""
    done = subprocess.run([sys.executable, "train.py", f"@{preset}", "--local-data-dir", "tests/data/cv_tiny",
                           "--language", "cs", "--output-dir", str(tmp_path / "run")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: --device cuda: ") and cuda_problem() in lines[0]
    assert "--device cpu" in lines[0] and not (tmp_path / "run").exists()

