"""`python transcribe.py …` in a checkout: the same command line as `whisper-scratch transcribe …`
(whisper_scratch/cli/transcribe.py; --help lists every flag)."""
import sys

from whisper_scratch.cli.transcribe import main

if __name__ == "__main__":
    sys.exit(main())
