#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment at .venv with pinned dependencies.
#
#   scripts/setup.sh            # idempotent; ~30 s on a fresh machine with a warm PyPI, ~2 s when up to date
#
# torch is pinned to the CPU wheel in requirements.lock: an unpinned torch pulls a multi-GB CUDA build.
# Bytecode is compiled at install time because this machine never writes it at run time
# (PYTHONDONTWRITEBYTECODE=1), and imports are ~3x slower without it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if ! command -v uv >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q uv
fi
find_links=()
[ -d /opt/wheels ] && find_links=(--find-links /opt/wheels)

uv venv -q --allow-existing --python "$PYTHON" .venv
uv pip install -q --python .venv/bin/python --compile-bytecode "${find_links[@]}" \
  -r requirements.lock -e ".[dev]"
# the editable project itself is not covered by --compile-bytecode
.venv/bin/python -m compileall -q -j 0 adamergex_pl callbacks data_modules >/dev/null
echo "environment ready: $(.venv/bin/python -c 'import logging; logging.disable(logging.WARNING); import torch, lightning, transformers, peft; print(f"torch {torch.__version__}, lightning {lightning.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")')"
