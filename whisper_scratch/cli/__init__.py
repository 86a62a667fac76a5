"""`whisper-scratch COMMAND [flags]` (or `python -m whisper_scratch COMMAND`): one installed command
for the project's tools. Each command line here keeps argparse, the checks that need nothing
loaded, printing and exit codes; what it runs is library code.

  whisper-scratch transcribe ...   transcribe files, folders, listings; evaluate WER/CER (transcribe.py)
  whisper-scratch train ...        fine-tune or train from scratch (train.py)
  whisper-scratch export ...       write a model for faster-whisper, transformers, whisper.cpp, openai-whisper
  whisper-scratch tokenizer ...    train a SentencePiece vocabulary for a new language
  whisper-scratch lm ...           build an n-gram language model from text, for beam search (lm/command.py)
  whisper-scratch demo ...         the web page to try a model (needs the [demo] extra)
"""
from __future__ import annotations

import importlib
import sys

# command -> module whose main(argv) -> int runs it
COMMANDS = {"transcribe": "whisper_scratch.cli.transcribe", "train": "whisper_scratch.cli.train",
            "export": "whisper_scratch.cli.export", "tokenizer": "whisper_scratch.cli.tokenizer",
            "demo": "whisper_scratch.cli.demo", "lm": "whisper_scratch.lm.command"}


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command's main; returns its exit status (2 for a bad command)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        print(f"usage: whisper-scratch {{{','.join(COMMANDS)}}} [flags]  (got {argv[0] if argv else 'nothing'}; "
              "whisper-scratch COMMAND --help for a command's flags)", file=sys.stderr)
        return 2
    name = COMMANDS[argv[0]]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        print(f"error: '{argv[0]}' is not in this install ({name} is missing); update whisper-scratch",
              file=sys.stderr)
        return 2
    return module.main(argv[1:])
