"""`pip install .` into a fresh virtual environment: a quiet build (no setuptools warnings), and the
installed `whisper-scratch` command transcribes jfk with the vocabulary files from the wheel."""
import os
import re
import site
import subprocess
import sys
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
    build = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-v",
                            str(REPO)], capture_output=True, text=True, env=env, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    warnings = [line for line in (build.stdout + build.stderr).splitlines() if re.search(r"warn", line, re.I)]
    assert warnings == [], "\n".join(warnings)

    # The dependencies (torch, ...) come from this environment, appended after the fresh one's own
    # site-packages: a plain path line, so this environment's editable install is not picked up.
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    where = subprocess.run([str(python), "-c", "import whisper_scratch, tokenizer.whisper_bpe as b; "
                            "print(whisper_scratch.__file__); print(b.ASSETS)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, check=True).stdout.split()
    assert all(Path(p).is_relative_to(fresh_site) for p in where), where

    done = subprocess.run([str(venv / "bin" / "whisper-scratch"), "transcribe", "--model_path", str(tiny_en_dir),
                           "--audio_path", str(shared_data / "samples" / "jfk.flac"), "--threads", "1"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ask not what your country can do for you" in done.stdout
