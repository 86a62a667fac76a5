"""The wheel of `pip wheel .` holds one top-level package, whisper_scratch (no generic `tokenizer`,
`train` or `transcribe` module that would clash with other packages); built quietly (no setuptools
warnings) and installed into a fresh virtual environment, its `whisper-scratch` command
transcribes jfk with the vocabulary files from the wheel."""
import os
import re
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.shared
def test_pip_install_is_quiet_and_the_installed_command_transcribes(tmp_path, tiny_en_dir, shared_data):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # No byte-compiling switch in the environment: setuptools would say it skips that step.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    # Our own package and its wheel build: verbose, so that every line of the build backend shows.
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path / "dist"),
                            str(REPO)], capture_output=True, text=True, env=env, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    warnings = [line for line in (build.stdout + build.stderr).splitlines() if re.search(r"warn", line, re.I)]
    assert warnings == [], "\n".join(warnings)
    (wheel,) = (tmp_path / "dist").glob("whisper_scratch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top_level = archive.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
    assert {n.split("/")[0] for n in names if ".dist-info/" not in n} == {"whisper_scratch"}
    assert top_level == ["whisper_scratch"]
    assert "whisper_scratch/tokenizer/assets/multilingual.tiktoken" in names  # the tokenizer/ folder, inside
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]

    # The dependencies (torch, ...) come from this environment, appended after the fresh one's own
    # site-packages: a plain path line, so this environment's editable install is not picked up.
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    where = subprocess.run([str(python), "-c", "import whisper_scratch, whisper_scratch.tokenizer.whisper_bpe as b; "
                            "print(whisper_scratch.__file__); print(b.ASSETS)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout.split()
    assert all(Path(p).is_relative_to(fresh_site) for p in where), where

    done = subprocess.run([str(venv / "bin" / "whisper-scratch"), "transcribe", "--model_path", str(tiny_en_dir),
                           "--audio_path", str(shared_data / "samples" / "jfk.flac"), "--threads", "1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ask not what your country can do for you" in done.stdout
