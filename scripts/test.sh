#!/usr/bin/env bash
# Run the whole test suite: set up .venv, start Postgres/Redis if down, then pytest (extra args pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
RETNET_WITH_GCMC=${RETNET_WITH_GCMC:-1} bash scripts/setup.sh
bash scripts/services.sh
. .venv/bin/activate
exec python -m pytest "$@"
