#!/usr/bin/env bash
# Run the test suite in .venv (created on first use). WHISPER_SCRATCH_SHARED=1 adds the tests that
# need ../shared (real weights, reference implementations, real speech). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_env.sh --test
# Two pytest-xdist workers, each a test file at a time (conftest.py splits torch's threads between
# them): Python-bound decoding and process start-ups overlap. TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
