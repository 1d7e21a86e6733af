#!/usr/bin/env bash
# The project's test command (CI runs exactly this through .ci/run): lint, then the whole test suite.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh tests/merging/test_merge_lora.py -k exact     # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check --quiet . || { echo "ruff format: run '.venv/bin/ruff format .'"; exit 1; }
exec .venv/bin/python -m pytest -q "$@"
