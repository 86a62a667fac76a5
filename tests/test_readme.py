"""The README is a front page: at most 250 lines, every page it links exists, and every command in
its code blocks is one our command lines accept as written (parsed, not run: the runs themselves
are the other tests)."""
import re
import shlex
from pathlib import Path

import pytest

from whisper_scratch.cli import COMMANDS, demo, export, train, transcribe

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PARSERS = {"transcribe": transcribe.parse_args, "train": train.parse_args, "export": export.parse_args,
           "demo": demo.parse_args}


def _commands() -> list[list[str]]:
    """The python/whisper-scratch command lines of the README's bash blocks, continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line) for line in lines if line.startswith(("python ", "whisper-scratch "))]


def test_the_readme_is_a_front_page():
    assert len(README.read_text().splitlines()) <= 250


def test_every_linked_page_exists():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    assert links and [link for link in links if not (REPO / link).exists()] == []


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_every_command_parses_as_written(argv, monkeypatch):
    monkeypatch.chdir(REPO)  # preset files (@configs/…) are relative to the checkout
    if argv[0] == "whisper-scratch":
        name, args = argv[1], argv[2:]
        assert name in COMMANDS
    else:
        assert argv[0] == "python" and argv[1] in ("transcribe.py", "train.py"), argv
        name, args = Path(argv[1]).stem, argv[2:]
    PARSERS[name](args)


def test_the_readme_shows_each_command():
    names = {argv[1] if argv[0] == "whisper-scratch" else Path(argv[1]).stem for argv in _commands()}
    assert {"transcribe", "train", "export", "demo"} <= names
