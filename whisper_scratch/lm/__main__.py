"""`python -m whisper_scratch.lm build ...`: the `whisper-scratch lm` command without its script."""
import sys

from whisper_scratch.lm.command import main

sys.exit(main())
