"""bench/gpu_check.sh: its reduced CPU form (`--dry-run`) runs every step of the GPU check to its
figures in at most 8 result files, and `--prepare` stages what the GPU machine lacks in under
48 MiB. CI has no GPU; the check itself runs on one (docs/gpu.md)."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS = ("train_step_tiny_fp32", "presets_6gb_tiny", "decode_tiny", "cuda_tests", "preset_run")


def test_the_dry_run_runs_every_step_into_at_most_8_files(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(REPO / "bench/gpu_check.sh"), "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(out)})
    summary = (out / "summary.md").read_text()
    assert done.returncode == 0, summary + done.stderr[-3000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and {p.name for p in files} == {"summary.md", "log.txt", "env.txt"}
    for step in STEPS:
        assert f"## {step} (" in summary, step
    assert summary.rstrip().endswith("Failed steps: none.")
    sections = dict(part.split("\n", 1) for part in summary.split("\n## ")[1:])
    section = {name.split(" (")[0]: text for name, text in sections.items()}
    assert "| ours |" in section["train_step_tiny_fp32"] and "| transformers |" in section["train_step_tiny_fp32"]
    assert "estimated peak" in section["presets_6gb_tiny"]
    assert "| ours |" in section["decode_tiny"] and "| transformers generate |" in section["decode_tiny"]
    assert "skipped" in section["cuda_tests"]  # collected and skipped: this machine has no GPU
    assert "done:" in section["preset_run"]  # train.py ran the preset to its end


@pytest.mark.shared
def test_prepare_stages_the_missing_wheels_and_the_czech_subset(tmp_path, shared_data):
    stage = tmp_path / "stage"
    done = subprocess.run([sys.executable, str(REPO / "bench/gpu_stage.py"), str(stage), "--data", str(shared_data)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    size = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
    assert size < 48 * 2**20
    wheels = list((stage / "wheels").glob("*.whl"))
    tops = set()
    for wheel in wheels:
        assert "cp312" in wheel.name or "py3-none" in wheel.name or "abi3" in wheel.name, wheel.name
        tops |= {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {"soundfile.py", "soxr", "jiwer", "matplotlib", "rapidfuzz", "PIL"} <= tops
    assert not any(w.name.startswith(("numpy-", "torch-")) for w in wheels)  # the machine's own
    for split, count in (("train", 64), ("dev", 32)):
        rows = (stage / "cs" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        assert len(rows) == count
        assert all((stage / "cs" / "clips" / row.split("\t")[1]).is_file() for row in rows)


def test_transcribe_bench_defaults_to_the_systems_the_device_runs():
    """`bench/transcribe_cpu.py --rounds 2`, as the docs give it, must start on a CPU-only machine:
    with no --systems it leaves out the GPU-only ones there, and the CPU-only ones (torch's
    quantized layers) on CUDA."""
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import transcribe_cpu
    finally:
        sys.path.remove(str(REPO / "bench"))
    on_cpu = transcribe_cpu.default_systems(torch.device("cpu"))
    assert on_cpu == [s for s in transcribe_cpu.SYSTEMS if s not in transcribe_cpu.GPU_ONLY]
    assert "faster-whisper-fp16" not in on_cpu and "ours-fast" in on_cpu
    on_gpu = transcribe_cpu.default_systems(torch.device("cuda"))
    assert on_gpu == [s for s in transcribe_cpu.SYSTEMS if s not in transcribe_cpu.CPU_ONLY]
    assert "faster-whisper-fp16" in on_gpu and "ours-fast-int8" in on_cpu and "ours-fast-int8" not in on_gpu
