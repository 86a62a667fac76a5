"""Tests for whisper_scratch.download against a local HTTP server: checksum from the URL, cache,
atomic placement, corrupted downloads and the offline message."""
import hashlib
import re
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from whisper_scratch.model.checkpoint import load_checkpoint
from whisper_scratch.model.download import MODEL_URLS, DownloadError, _source, download

CONTENT = b"not really a checkpoint, but bytes with a known sha256\n" * 2000
SHA = hashlib.sha256(CONTENT).hexdigest()
# Same shape as the real table; the host is replaced by the test server's base URL.
URLS = {"tiny": f"https://openaipublic.example/main/whisper/models/{SHA}/tiny.pt"}


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """(base URL, the folder behind it, list of requested paths)."""
    root = tmp_path / "served"
    served = root / "models"
    (served / SHA).mkdir(parents=True)
    (served / SHA / "tiny.pt").write_bytes(CONTENT)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    httpd.requests = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/models", served, httpd.requests
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_and_caches(server, tmp_path):
    base, _, requests = server
    cache = tmp_path / "cache"
    path = download("tiny", root=cache, base_url=base, urls=URLS)
    assert path == cache / "tiny.pt" and path.read_bytes() == CONTENT
    assert requests == [f"/models/{SHA}/tiny.pt"]  # the sha path component of the table's URL
    assert [p.name for p in cache.iterdir()] == ["tiny.pt"]  # the temp file was renamed, nothing left over
    assert download("tiny", root=cache, base_url=base, urls=URLS) == path
    assert len(requests) == 1  # the verified cache file needs no request


def test_environment_variables_choose_cache_and_server(server, tmp_path, monkeypatch):
    base, _, requests = server
    monkeypatch.setenv("WHISPER_SCRATCH_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("WHISPER_SCRATCH_BASE_URL", base)
    assert download("tiny", urls=URLS) == tmp_path / "env-cache" / "tiny.pt"
    assert len(requests) == 1


def test_a_corrupt_cache_file_is_replaced(server, tmp_path):
    base, _, requests = server
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny.pt").write_bytes(b"truncated")
    assert download("tiny", root=cache, base_url=base, urls=URLS).read_bytes() == CONTENT
    assert len(requests) == 1


def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    base, served, _ = server
    (served / SHA / "tiny.pt").write_bytes(CONTENT[:-1] + b"!")
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=r"checksum mismatch for tiny\.pt: .*\(delete and retry\)"):
        download("tiny", root=cache, base_url=base, urls=URLS)
    assert list(cache.iterdir()) == []


def test_offline_is_one_clear_line(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as err:
        download("tiny", root=cache, base_url=f"http://127.0.0.1:{port}", urls=URLS)
    message = str(err.value)
    assert "\n" not in message and err.value.__cause__ is None
    assert re.fullmatch(r"cannot download 'tiny' \(.+\): you seem to be offline; pass a local checkpoint with "
                        r"--model_path /path/to/tiny\.pt \(OpenAI \.pt, Hugging Face folder or CTranslate2 folder\)",
                        message), message
    assert list(cache.iterdir()) == []
    # The same message reaches callers of load_checkpoint("tiny").
    monkeypatch.setenv("WHISPER_SCRATCH_CACHE", str(cache))
    monkeypatch.setenv("WHISPER_SCRATCH_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError, match="you seem to be offline"):
        load_checkpoint("tiny")


def test_missing_file_on_the_server_is_an_http_error(server, tmp_path):
    base, _, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("tiny", root=tmp_path / "cache", base_url=base,
                 urls={"tiny": f"https://x.example/{'0' * 64}/tiny.pt"})


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown model 'tiniest'; available: tiny\.en, tiny, base\.en"):
        download("tiniest")


def test_the_real_table_carries_sha256_path_components():
    for name, url in MODEL_URLS.items():
        sha, filename = url.rsplit("/", 2)[-2:]
        assert re.fullmatch(r"[0-9a-f]{64}", sha), name
        assert filename == {"large": "large-v3.pt", "turbo": "large-v3-turbo.pt"}.get(name, f"{name}.pt")
    url, sha, filename = _source("tiny", MODEL_URLS, "http://mirror.example/whisper/")
    assert (url, filename) == (f"http://mirror.example/whisper/{sha}/tiny.pt", "tiny.pt")
    assert sha == "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9"
