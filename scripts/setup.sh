#!/usr/bin/env bash
# Create .venv in the repo root and install the project with its dev extras (idempotent).
# PyTorch is installed first as the CPU build so pip never pulls multi-GB CUDA wheels.
# RETNET_WITH_GCMC=1 also tries the optional RASPA2 extra (compiles from source once, ~5 min; non-fatal).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${RETNET_TORCH_SPEC:-torch==2.13.0}
stamp=".venv/.retnet-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install --quiet "$TORCH_SPEC"
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch "$stamp"
fi
if [ "${RETNET_WITH_GCMC:-0}" = "1" ] && [ ! -f "$stamp.gcmc" ]; then
  if .venv/bin/python -m pip install --quiet -e ".[dev,gcmc]"; then
    touch "$stamp.gcmc"
  else
    echo "setup: RASPA2 could not be built; the GCMC simulation tests will be skipped" >&2
  fi
fi
