#!/usr/bin/env bash
# Extend the CH4 GCMC labels in the background, resumably, across sessions (docs/gcmc.md).
#
#   bench/extend_labels.sh            start (or continue) in the background; returns at once
#   bench/extend_labels.sh status     progress of the labels file and whether a run is alive
#   bench/extend_labels.sh stop       stop the background run (rows written so far are kept)
#
# Environment: JOBS (parallel simulations, default 1), NICE (niceness of the run and of its autogroup, default 19), OUT (default models/data/ch4_coremof2019_raspa2_extra.csv,
# committed so the next session resumes it), LIST (default data/labels/ch4_extra_names.txt, re-made identically
# when missing), CYCLES / INIT_CYCLES (default 700 / 300: the reference protocol).
# Needs RASPA2 in the venv: pip install '.[gcmc]' (see docs/gcmc.md for the build steps).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-models/data/ch4_coremof2019_raspa2_extra.csv}"
LIST="${LIST:-data/labels/ch4_extra_names.txt}"
LOG="${OUT%.csv}.log"
PIDFILE="${OUT%.csv}.pid"
JOBS="${JOBS:-1}"
CYCLES="${CYCLES:-700}"
INIT_CYCLES="${INIT_CYCLES:-300}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# shellcheck source=bench/_background.sh
. "$ROOT/bench/_background.sh"
alive() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-start}" in
  status)
    if alive; then echo "running (pid $(cat "$PIDFILE"))"; else echo "not running"; fi
    if [[ -f "$OUT" ]]; then
      "$PY" - "$OUT" "$LIST" <<'EOF'
import sys, pandas as pd
t = pd.read_csv(sys.argv[1]); n = sum(1 for l in open(sys.argv[2]) if l.strip() and not l.startswith("#"))
print(f"{len(t)}/{n} done: " + ", ".join(f"{k} {v}" for k, v in t.status.value_counts().items()))
EOF
      tail -n 3 "$LOG" 2>/dev/null || true
    fi
    exit 0 ;;
  stop)
    # The run is its own process group (setsid below): stop the driver and the RASPA2 simulations it runs.
    # Structures in flight are not recorded and run again on the next start.
    if alive; then kill -- "-$(cat "$PIDFILE")" && echo "stopped pid $(cat "$PIDFILE") and its simulations"
    else echo "not running"; fi
    rm -f "$PIDFILE"
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|status|stop]" >&2; exit 2 ;;
esac

if alive; then echo "already running (pid $(cat "$PIDFILE")); see $LOG" >&2; exit 1; fi
mkdir -p "$(dirname "$OUT")" "$(dirname "$LIST")"

# The work list, made once: CoRE MOF 2019-ASR entries with PLD >= 4 Å (the reference subset) not in the shipped
# reference labels, in a fixed random order so that a partial run is an unbiased sample.
if [[ ! -s "$LIST" ]]; then
  "$PY" - "$LIST" <<'EOF'
import sys
import pandas as pd
from models.datasets import coremof_properties
props = coremof_properties("2019-ASR")
done = set(pd.read_csv("models/data/ch4_coremof2019_raspa2.csv")["name"])
names = props.index[(props["PLD"] >= 4.0) & ~props.index.isin(done)].to_series().sample(frac=1.0, random_state=0)
with open(sys.argv[1], "w") as f:
    f.write("# CoRE MOF 2019-ASR, PLD >= 4 A, not in models/data/ch4_coremof2019_raspa2.csv; shuffled (seed 0)\n")
    f.write("\n".join(names) + "\n")
print(f"{len(names)} names -> {sys.argv[1]}")
EOF
fi

# `retnet simulate` when the project is installed; otherwise the same subcommand through app.cli_simulate.
if command -v retnet >/dev/null 2>&1; then
  CMD=(retnet simulate)
else
  CMD=("$PY" -c 'import argparse, sys
from app.cli_simulate import register_simulate
p = argparse.ArgumentParser(prog="retnet"); s = p.add_subparsers(required=True); register_simulate(s)
a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))' simulate)
fi

nohup setsid nice -n "${NICE:-19}" "${CMD[@]}" --coremof-list "$LIST" --resume --out "$OUT" \
  --jobs "$JOBS" --cycles "$CYCLES" --init-cycles "$INIT_CYCLES" >>"$LOG" 2>&1 &
echo $! >"$PIDFILE"
# nice alone does not rank across sessions (autogroup scheduling): nice the run's session too
nice_autogroup "$!" "${NICE:-19}"
echo "started pid $! ($JOBS job(s)); progress: tail -f $LOG; status: $0 status"
