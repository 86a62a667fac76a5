#!/usr/bin/env bash
# Shared body of run.sh, run_6gb.sh and run_6gb_lowmem.sh: preset.sh ARGS_FILE [DATA_DIR] [train.py flags…]
# DATA_DIR (or $DATA_DIR) is a Common Voice language folder (…/cv-corpus-X/<lang>); its name is the language.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=$1; shift
data=${DATA_DIR:-}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then data=$1; shift; fi
scripts/setup_env.sh
if [ -z "$data" ]; then
  echo "usage: $0 DATA_DIR [train.py flags…]   (or set DATA_DIR)" >&2
  exit 2
fi
if [ ! -d "$data" ]; then
  echo "error: data folder not found: $data (give a Common Voice language folder with train.tsv and clips/)" >&2
  exit 2
fi
out=${OUTPUT_DIR:-runs/$(basename "$data")-$(basename "$preset" .args)}
# Later flags win, so anything passed here overrides the preset.
.venv/bin/python train.py "@$preset" --local-data-dir "$data" --language "$(basename "$data")" \
  --output-dir "$out" "$@"
