#!/usr/bin/env bash
# Run the whole test suite: set up .venv, start Postgres/Redis if down, then pytest (extra args pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
. .venv/bin/activate
exec python -m pytest "$@"
