#!/usr/bin/env bash
# 6 GB GPU: base, batch 8 x 2 accumulation, trimmed windows, fp16 or bf16 as the card computes it.
# Usage: ./run_6gb.sh DATA_DIR [train.py flags…]   (configs/6gb.args; docs/gpu.md)
exec "$(dirname "$0")/scripts/preset.sh" configs/6gb.args "$@"
