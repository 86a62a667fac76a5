#!/usr/bin/env bash
# Create .venv (once) with everything the project and its tests need. Usage: scripts/setup_env.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
stamp="$VENV/.installed${1:-}"
if [ -f "$stamp" ]; then exit 0; fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# The pinned CPU wheel first: an unpinned torch would pull several GB of CUDA packages.
"$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
if [ "${1:-}" = "--test" ]; then
  "$VENV/bin/python" -m pip install -q -r requirements-test.txt
  "$VENV/bin/python" -m pip install -q --no-deps openai-whisper==20250625
else
  "$VENV/bin/python" -m pip install -q -r requirements.txt
fi
# setuptools warns about every editable install of a package that sits in the working folder (which
# is the point of one here); its output is kept in a log and shown only if the install fails.
if ! "$VENV/bin/python" -m pip install -q --no-deps -e . >"$VENV/editable-install.log" 2>&1; then
  cat "$VENV/editable-install.log" >&2
  exit 1
fi
touch "$stamp"
