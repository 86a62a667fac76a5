#!/usr/bin/env bash
# 6 GB GPU, bigger model: small with mixed precision, gradient checkpointing, batch 4 x 4 accumulation.
# Add --optimizer adamw8bit (bitsandbytes) or --freeze-encoder for more headroom.
# Usage: ./run_6gb_lowmem.sh DATA_DIR [train.py flags…]
exec "$(dirname "$0")/scripts/preset.sh" configs/6gb_lowmem.args "$@"
