#!/usr/bin/env bash
# 6 GB GPU, bigger model: small, batch 4 x 4 accumulation, gradient checkpointing, trimmed windows.
# Add --optimizer adamw8bit (bitsandbytes) or --freeze-encoder for more headroom.
# Usage: ./run_6gb_lowmem.sh DATA_DIR [train.py flags…]   (configs/6gb_lowmem.args; docs/gpu.md)
exec "$(dirname "$0")/scripts/preset.sh" configs/6gb_lowmem.args "$@"
