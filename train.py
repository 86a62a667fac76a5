"""`python train.py …` in a checkout: the same command line as `whisper-scratch train …`
(whisper_scratch/cli/train.py; --help lists every flag)."""
import sys

from whisper_scratch.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
