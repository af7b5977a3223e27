#!/usr/bin/env bash
# Create .venv in the repo root and install the project with its dev extras (idempotent).
# PyTorch is installed first as the CPU build so pip never pulls multi-GB CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${RETNET_TORCH_SPEC:-torch==2.13.0}
stamp=".venv/.retnet-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install --quiet "$TORCH_SPEC"
python -m pip install --quiet -e ".[dev]"
touch "$stamp"
