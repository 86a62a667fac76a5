"""The web demo (whisper_scratch/demo/page.py, whisper-scratch demo): what the button does, the command line's errors, and the
page itself driven in headless Chromium (Debian's chromium + chromium-driver) with selenium:
upload jfk, press Transcribe, read the transcript, the segments and the .srt, and check that
neither the server nor the browser talked to anything but this machine.

WHISPER_SCRATCH_SCREENSHOT=docs/demo.png also keeps the browser test's screenshot there."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from whisper_scratch import cli
from whisper_scratch.cli.demo import main
from whisper_scratch.demo.page import AUTO, Demo, DemoError, build_page, load_demo
from whisper_scratch.model.checkpoint import save_model
from whisper_scratch.model.loaded import LoadedModel
from whisper_scratch.model.whisper import ModelDimensions, Whisper

REPO = Path(__file__).resolve().parents[1]
JFK_TEXT = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def tiny_random(multilingual: bool) -> Whisper:
    """A random model small enough to build in a blink (only its vocabulary matters here)."""
    dims = ModelDimensions(n_mels=80, n_audio_ctx=16, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865 if multilingual else 51864, n_text_ctx=16, n_text_state=32,
                           n_text_head=2, n_text_layer=1)
    return Whisper(dims)


def test_languages_and_tasks_follow_the_model():
    english = Demo(LoadedModel.wrap(tiny_random(False)), name="en-only")
    assert english.language_choices() == [("English", "en")] and english.tasks() == ["transcribe"]
    multi = Demo(LoadedModel.wrap(tiny_random(True)))
    choices = multi.language_choices()
    assert choices[0] == ("Detect the language", AUTO) and ("Czech", "cs") in choices and len(choices) == 100
    assert multi.tasks() == ["transcribe", "translate"]


@pytest.mark.parametrize("audio, language, task, needle", [
    (None, AUTO, "transcribe", "no audio yet: upload a file or record"),
    ("clip.wav", AUTO, "translate", "en-only is an English-only model: it cannot translate"),
    ("clip.wav", AUTO, "summarise", "unknown task 'summarise'"),
])
def test_what_the_person_can_fix_is_one_line(audio, language, task, needle):
    with pytest.raises(DemoError, match=needle):
        Demo(LoadedModel.wrap(tiny_random(False)), name="en-only").transcribe(audio, language, task)


def test_unknown_language_and_unreadable_audio(tmp_path):
    multi = Demo(LoadedModel.wrap(tiny_random(True)), name="multi")
    with pytest.raises(DemoError, match="multi does not know the language 'klingon'"):
        multi.transcribe("clip.wav", "klingon")
    (tmp_path / "broken.wav").write_bytes(b"not audio at all" * 10)
    with pytest.raises(DemoError, match=r"cannot decode .*broken.wav"):
        multi.transcribe(tmp_path / "broken.wav", "cs")


@pytest.mark.parametrize("run", [main, lambda argv: cli.main(["demo", *argv])], ids=["module", "whisper-scratch"])
def test_main_without_a_model_is_one_line(capsys, tmp_path, run):
    assert run(["--model_path", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot load model {tmp_path / 'missing'}") and len(err.strip().splitlines()) == 1


def test_command_line_serves_the_page(tmp_path):
    """whisper-scratch demo on a checkpoint of ours: the page is served, then Ctrl-C ends it."""
    save_model(tiny_random(False), tmp_path / "model.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # Ctrl-C as in a terminal, even where this process ignores SIGINT (a background job, a test worker).
    proc = subprocess.Popen([sys.executable, "-m", "whisper_scratch", "demo", "--model_path", str(tmp_path / "model.pt")],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    config = None
    try:
        deadline = time.monotonic() + 600  # only against a hang: a busy machine starts Gradio slowly
        while config is None and proc.poll() is None and time.monotonic() < deadline:
            url = next((line.split()[-1] for line in list(lines) if "Running on local URL" in line), None)
            if url is None:
                time.sleep(1)
                continue
            with urllib.request.urlopen(f"{url}/config", timeout=60) as response:
                config = json.loads(response.read())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    output = "".join(lines)
    assert config is not None, output
    assert config["title"] == "Whisper-From-Scratch demo"
    assert proc.returncode == 0 and "Traceback" not in output, output


def test_page_builds_without_phoning_home():
    page = build_page(Demo(LoadedModel.wrap(tiny_random(True))))
    assert page.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    ids = {block.elem_id for block in page.blocks.values()}
    assert {"audio", "language", "task", "transcribe", "transcript", "detected", "segments", "srt"} <= ids


# ================================================================ real weights, real speech, real browser

@pytest.fixture(scope="module")
def one_thread():
    """The demo's server thread and the browser share the 2 cores; later tests get all threads back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_en_demo(tiny_en_dir, one_thread) -> Demo:
    return replace(load_demo(str(tiny_en_dir)), name="tiny.en")  # its packaged path is long to show


@pytest.fixture(scope="module")
def base_demo(base_dir, one_thread) -> Demo:
    """Multilingual, so the page offers language detection and translation."""
    return replace(load_demo(str(base_dir)), name="base")


@pytest.fixture(scope="module")
def jfk(shared_data) -> Path:
    return shared_data / "samples" / "jfk.flac"


@pytest.mark.shared
def test_transcribe_gives_text_segments_and_srt(tiny_en_demo, jfk):
    out = tiny_en_demo.transcribe(jfk)
    assert words(out.text) == JFK_TEXT and out.language == "en"
    assert out.segments[0][0] == "00:00.000" and out.segments[-1][1].startswith("00:1")  # ends near 11 s
    assert words(" ".join(s[2] for s in out.segments)) == JFK_TEXT
    srt = out.srt.read_text()
    assert out.srt.name == "jfk.srt" and srt.startswith("1\n00:00:00,000 --> ") and "ask not what" in srt


class NetworkLog:
    """Every address the Python process resolves or connects to while the page serves; anything
    but loopback is refused as well as recorded."""

    def __init__(self, monkeypatch):
        self.outside: list[str] = []
        connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

        def checked_connect(sock, address):
            host = address[0] if isinstance(address, tuple) else None
            if host is not None and host not in LOOPBACK:
                self.outside.append(f"connect {address}")
                raise OSError(f"test: no connection to {address} allowed")
            return connect(sock, address)

        def checked_getaddrinfo(host, *args, **kw):
            if host not in LOOPBACK and host is not None:
                self.outside.append(f"resolve {host}")
                raise socket.gaierror(f"test: {host} may not be resolved")
            return getaddrinfo(host, *args, **kw)

        monkeypatch.setattr(socket.socket, "connect", checked_connect)
        monkeypatch.setattr(socket, "getaddrinfo", checked_getaddrinfo)


def chromium(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


@pytest.mark.shared
def test_browser_uploads_jfk_and_reads_the_transcript(base_demo, jfk, tmp_path, monkeypatch):
    """Language left on detection: base finds English."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    for tool in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(tool), f"{tool} is missing: apt-get install chromium chromium-driver"
    network = NetworkLog(monkeypatch)
    page = build_page(base_demo)
    page.queue().launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                        share=False, ssr_mode=False)
    driver = chromium(tmp_path)
    try:
        driver.get(page.local_url)
        wait = WebDriverWait(driver, 120)
        upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#audio input[type=file]"))
        upload.send_keys(str(jfk))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audio audio, #audio .waveform-container, #audio wave"))
        driver.find_element(By.CSS_SELECTOR, "#transcribe").click()
        transcript = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#transcript textarea")
                                .get_attribute("value") or None)
        assert words(transcript) == JFK_TEXT
        wait.until(lambda d: "ask what you can do" in d.find_element(By.CSS_SELECTOR, "#segments").text)
        table = driver.find_element(By.CSS_SELECTOR, "#segments").text
        assert "00:00.000" in table and "And so my fellow Americans" in table
        assert driver.find_element(By.CSS_SELECTOR, "#detected textarea, #detected input").get_attribute("value") \
            == "English"
        link = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#srt a[href]"))
        assert "jfk\n.srt" in driver.find_element(By.CSS_SELECTOR, "#srt").text  # name and extension apart
        assert link.get_attribute("href").endswith("/jfk.srt")
        with urllib.request.urlopen(link.get_attribute("href")) as response:  # the download, from loopback
            srt = response.read().decode()
        assert srt.startswith("1\n00:00:00,000 --> ") and "ask not what your country" in srt
        shot = tmp_path / "demo.png"
        driver.save_screenshot(str(shot))
        if os.environ.get("WHISPER_SCRATCH_SCREENSHOT"):
            shutil.copy(shot, os.environ["WHISPER_SCRATCH_SCREENSHOT"])
        browser_urls = requested_urls(driver)
    finally:
        driver.quit()
        page.close()
    # The page's own origin, inline data, and Chromium's built-in pages (its new-tab page at start).
    local = (page.local_url.rstrip("/"), "data:", "blob:", "chrome://", "chrome-untrusted://", "about:")
    assert any(u.startswith(page.local_url) for u in browser_urls)
    assert [u for u in browser_urls if not u.startswith(local)] == []
    assert network.outside == []
