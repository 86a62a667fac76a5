#!/usr/bin/env bash
# 6 GB GPU: base, batch 8 x 2 accumulation, mixed precision. Usage: ./run_6gb.sh DATA_DIR [train.py flags…]
exec "$(dirname "$0")/scripts/preset.sh" configs/6gb.args "$@"
