#!/usr/bin/env bash
# Run the test suite in .venv (created on first use). WHISPER_SCRATCH_SHARED=1 adds the tests that
# need ../shared (real weights, reference implementations, real speech). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh --test
exec .venv/bin/python -m pytest "$@"
