"""OpenAI's published checkpoints by size name (`--model_path tiny`), cached and checksum-verified.

Each URL carries the file's SHA-256 as the path component before the file name; that is what the
download is checked against. `base_url` (or $WHISPER_SCRATCH_BASE_URL) replaces the host and
folder in front of "<sha256>/<file>", e.g. to use a mirror or a local test server.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

from ..common.files import cache_dir

BASE_URL_ENV = "WHISPER_SCRATCH_BASE_URL"
CHUNK = 1 << 20

_ROOT = "https://openaipublic.azureedge.net/main/whisper/models"
MODEL_URLS: Mapping[str, str] = {
    "tiny.en": f"{_ROOT}/d3dd57d32accea0b295c96e26691aa14d8822fac7d9d27d5dc00b4ca2826dd03/tiny.en.pt",
    "tiny": f"{_ROOT}/65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9/tiny.pt",
    "base.en": f"{_ROOT}/25a8566e1d0c1e2231d1c762132cd20e0f96a85d16145c3a00adf5d1ac670ead/base.en.pt",
    "base": f"{_ROOT}/ed3a0b6b1c0edf879ad9b11b1af5a0e6ab5db9205f891f668f8b0e6c6326e34e/base.pt",
    "small.en": f"{_ROOT}/f953ad0fd29cacd07d5a9eda5624af0f6bcf2258be67c92b79389873d91e0872/small.en.pt",
    "small": f"{_ROOT}/9ecf779972d90ba49c06d968637d720dd632c55bbf19d441fb42bf17a411e794/small.pt",
    "medium.en": f"{_ROOT}/d7440d1dc186f76616474e0ff0b3b6b879abc9d1a4926b7adfa41db2d497ab4f/medium.en.pt",
    "medium": f"{_ROOT}/345ae4da62f9b3d59415adc60127b97c714f32e89e936602e85993674d08dcb1/medium.pt",
    "large-v1": f"{_ROOT}/e4b87e7e0bf463eb8e6956e646f1e277e901512310def2c24bf0e11bd3c28e9a/large-v1.pt",
    "large-v2": f"{_ROOT}/81f7c96c852ee8fc832187b0132e569d6c3065a3252ed18e56effd0b6a73e524/large-v2.pt",
    "large-v3": f"{_ROOT}/e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb/large-v3.pt",
    "large": f"{_ROOT}/e5b1a55b89c1367dacf97e3e19bfd829a01529dbfdeefa8caeb59b3f1b81dadb/large-v3.pt",
    "large-v3-turbo": f"{_ROOT}/aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a/large-v3-turbo.pt",
    "turbo": f"{_ROOT}/aff26ae408abcba5fbf8813c21e62b0941638c5f6eebfb145be0c9839262a19a/large-v3-turbo.pt",
}

# The (layer, head) cross-attention heads that follow the audio in each published checkpoint (for
# word timestamps). OpenAI publishes them beside the weights (whisper/__init__.py), not inside the
# .pt files.
ALIGNMENT_HEADS: Mapping[str, tuple[tuple[int, int], ...]] = {
    "tiny.en": ((1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)),
    "tiny": ((2, 2), (3, 0), (3, 2), (3, 3), (3, 4), (3, 5)),
    "base.en": ((3, 3), (4, 7), (5, 1), (5, 5), (5, 7)),
    "base": ((3, 1), (4, 2), (4, 3), (4, 7), (5, 1), (5, 2), (5, 4), (5, 6)),
    "small.en": ((6, 6), (7, 0), (7, 3), (7, 8), (8, 2), (8, 5), (8, 7), (9, 0), (9, 4), (9, 8), (9, 10), (10, 0),
                 (10, 1), (10, 2), (10, 3), (10, 6), (10, 11), (11, 2), (11, 4)),
    "small": ((5, 3), (5, 9), (8, 0), (8, 4), (8, 7), (8, 8), (9, 0), (9, 7), (9, 9), (10, 5)),
    "medium.en": ((11, 4), (14, 1), (14, 12), (14, 14), (15, 4), (16, 0), (16, 4), (16, 9), (17, 12), (17, 14),
                  (18, 7), (18, 10), (18, 15), (20, 0), (20, 3), (20, 9), (20, 14), (21, 12)),
    "medium": ((13, 15), (15, 4), (15, 15), (16, 1), (20, 0), (23, 4)),
    "large-v1": ((9, 19), (11, 2), (11, 4), (11, 17), (22, 7), (22, 11), (22, 17), (23, 2), (23, 15)),
    "large-v2": ((10, 12), (13, 17), (16, 11), (16, 12), (16, 13), (17, 15), (17, 16), (18, 4), (18, 11), (18, 19),
                 (19, 11), (21, 2), (21, 3), (22, 3), (22, 9), (22, 12), (23, 5), (23, 7), (23, 13), (25, 5),
                 (26, 1), (26, 12), (27, 15)),
    "large-v3": ((7, 0), (10, 17), (12, 18), (13, 12), (16, 1), (17, 14), (19, 11), (21, 4), (24, 1), (25, 6)),
    "large-v3-turbo": ((2, 4), (2, 11), (3, 3), (3, 6), (3, 11), (3, 14)),
}
ALIGNMENT_HEADS = {**ALIGNMENT_HEADS, "large": ALIGNMENT_HEADS["large-v3"],
                   "turbo": ALIGNMENT_HEADS["large-v3-turbo"]}


class DownloadError(RuntimeError):
    """A checkpoint could not be fetched or failed its checksum."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _source(name: str, urls: Mapping[str, str], base_url: str | None) -> tuple[str, str, str]:
    """(url, expected sha256, file name) for a size name."""
    if name not in urls:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(urls)}")
    url = urls[name]
    sha, filename = url.rsplit("/", 2)[-2:]
    base = base_url or os.environ.get(BASE_URL_ENV)
    if base:
        url = f"{base.rstrip('/')}/{sha}/{filename}"
    return url, sha, filename


def _network_error(name: str, filename: str, url: str, e: Exception) -> DownloadError:
    if isinstance(e, urllib.error.HTTPError):  # the server answered: not an offline problem
        return DownloadError(f"cannot download {name!r}: HTTP {e.code} {e.reason} from {url}")
    reason = getattr(e, "reason", None) or str(e) or type(e).__name__
    return DownloadError(
        f"cannot download {name!r} ({reason}): you seem to be offline; pass a local checkpoint with "
        f"--model_path /path/to/{filename} (OpenAI .pt, Hugging Face folder or CTranslate2 folder)")


def download(name: str, root: str | Path | None = None, base_url: str | None = None,
             urls: Mapping[str, str] = MODEL_URLS) -> Path:
    """Path of the cached OpenAI checkpoint `name` (e.g. "tiny"), downloading it if the cache has no
    file with the right SHA-256. The file appears atomically: never half-written under its name."""
    url, sha, filename = _source(name, urls, base_url)
    folder = cache_dir(root)
    target = folder / filename
    if target.is_file() and sha256_of(target) == sha:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url)
            except OSError as e:
                raise _network_error(name, filename, url, e) from None
            total = int(response.headers.get("Content-Length") or 0) or None
            with response, tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=filename,
                                disable=None) as bar:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _network_error(name, filename, url, e) from None
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha:
            raise DownloadError(f"checksum mismatch for {filename}: expected sha256 {sha}, got {got} "
                                f"from {url} (delete and retry)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
