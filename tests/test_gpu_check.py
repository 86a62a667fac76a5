"""bench/gpu_check.sh in its reduced CPU form (`--cpu-smoke`): CI has no GPU, so this proves that
every part of the GPU check starts and runs to its figures, and that the doc section is replaced."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- gpu_check: begin"
END = "<!-- gpu_check: end -->"


@pytest.mark.shared
def test_gpu_check_cpu_smoke_runs_every_part(tmp_path, shared_data):
    docs = tmp_path / "benchmarks.md"
    shutil.copy(REPO / "docs/benchmarks.md", docs)
    before = docs.read_text()
    assert before.count(BEGIN) == 1 and before.count(END) == 1
    done = subprocess.run(["bash", str(REPO / "bench/gpu_check.sh"), "--cpu-smoke", "--data", str(shared_data),
                           "--work", str(tmp_path / "work"), "--docs", str(docs)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-4000:]
    after = docs.read_text()
    assert after.count(BEGIN) == 1 and after.count(END) == 1
    head, rest = before.split(BEGIN)
    assert after.startswith(head) and after.endswith(rest.split(END)[1])  # the rest of the doc is untouched
    section = after[after.index(BEGIN):after.index(END)]
    assert "Not run yet" not in section and "Failed parts: none" in section
    assert "| off | ours |" in section and "| on | transformers |" in section  # training step, both systems
    assert "6gb_lowmem.args with tiny" in section  # the preset's memory check ran the training loop
    assert "WER" in section.split("### Fine-tuning")[1].split("###")[0]  # fine-tuning reported its scores
    assert "| ours-fast |" in section and "| faster-whisper-int8 |" in section  # transcription


def test_transcribe_bench_defaults_to_the_systems_the_device_runs():
    """`bench/transcribe_cpu.py --rounds 2`, as the docs give it, must start on a CPU-only machine:
    with no --systems it leaves out the GPU-only ones there, and keeps them on CUDA."""
    import torch

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import transcribe_cpu
    finally:
        sys.path.remove(str(REPO / "bench"))
    on_cpu = transcribe_cpu.default_systems(torch.device("cpu"))
    assert on_cpu == [s for s in transcribe_cpu.SYSTEMS if s not in transcribe_cpu.GPU_ONLY]
    assert "faster-whisper-fp16" not in on_cpu and "ours-fast" in on_cpu
    assert transcribe_cpu.default_systems(torch.device("cuda")) == list(transcribe_cpu.SYSTEMS)
