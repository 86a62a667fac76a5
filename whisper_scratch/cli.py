"""`whisper-scratch COMMAND [flags]`: one installed command for the project's tools.

  whisper-scratch transcribe ...   transcribe.py's flags (whisper-scratch transcribe --help)
  whisper-scratch train ...        train.py's flags
  whisper-scratch export ...       python -m whisper_scratch.export's flags
  whisper-scratch demo ...         the demo app (whisper_scratch.demo), where installed
"""
from __future__ import annotations

import importlib
import sys

# command -> module whose main(argv) -> int runs it; transcribe.py and train.py are installed as
# top-level modules, so the scripts in a checkout and the installed command are one code path.
COMMANDS = {"transcribe": "transcribe", "train": "train", "export": "whisper_scratch.export",
            "demo": "whisper_scratch.demo"}


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


if __name__ == "__main__":
    sys.exit(main())
