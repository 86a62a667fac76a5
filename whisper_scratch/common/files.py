"""Files that appear whole or not at all, with the user's permissions, and the project's cache folder."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .messages import one_line

CACHE_ENV = "WHISPER_SCRATCH_CACHE"
DEFAULT_CACHE = Path("~/.cache/whisper_scratch")

# Read once, at import: os.umask can only be read by setting it, which would race with other threads.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that appears at `path` only once completely written (a temporary file beside
    it, then rename): a crash never leaves half a file. Missing parent folders are created; the
    file gets the permissions the user's umask gives any new file (mkstemp's would be 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """`text` as UTF-8 with \\n line ends, through `atomic_open`."""
    with atomic_open(path) as f:
        f.write(text.encode("utf-8"))


def write_json(path: str | os.PathLike, value: Any) -> None:
    """`value` as indented UTF-8 JSON (a str as it is), through `atomic_open`."""
    write_text(path, value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def cache_dir(root: str | Path | None = None) -> Path:
    """`root`, else $WHISPER_SCRATCH_CACHE, else ~/.cache/whisper_scratch."""
    return Path(root or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through `atomic_open`."""
    with atomic_open(path) as f:
        torch.save(obj, f)


def unwritable(path: str | os.PathLike, folder: bool = False) -> str | None:
    """Why a file (with `folder`, a folder) cannot be written at `path`, found before any work is
    done; None when it can. Missing parent folders are fine (writing creates them) as long as the
    nearest existing one is a folder that takes new files."""
    path = Path(path)
    if path.is_dir() != folder and path.exists():
        return f"{path} is {'a file' if folder else 'a folder'}; give {'a folder' if folder else 'a file name'}"
    start = path if folder else path.parent
    nearest = next((p for p in (start, *start.parents) if p.exists()), start)
    if not nearest.is_dir():
        return f"{nearest} is a file, so no folder can be made there"
    try:
        tempfile.TemporaryFile(dir=nearest).close()  # the one sure test: root ignores permission bits
    except OSError as e:
        return f"cannot create files in {nearest} ({e.strerror or one_line(e)})"
    return None
