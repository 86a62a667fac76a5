"""`python -m whisper_scratch COMMAND [flags]`: the `whisper-scratch` command without its script."""
import sys

from whisper_scratch.cli import main

sys.exit(main())
