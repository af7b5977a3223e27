#!/usr/bin/env bash
# Set up .venv and start the service on its embedded defaults (SQLite, local storage, in-process workers).
# Extra arguments pass to `retnet serve` (e.g. --port 8000 --data-dir ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec retnet serve "$@"
