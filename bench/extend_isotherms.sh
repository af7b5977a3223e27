#!/usr/bin/env bash
# CH4 isotherm labels (1, 5.8, 35, 65 bar at 298 K) in the background, resumably, across sessions (docs/gcmc.md).
#
#   bench/extend_isotherms.sh            start (or continue) in the background; returns at once
#   bench/extend_isotherms.sh status     progress of the isotherm file and whether a run is alive
#   bench/extend_isotherms.sh stop       stop the background run (rows written so far are kept)
#
# Structures that already have an `ok` 5.8 bar label in models/data/ch4_coremof2019_raspa2*.csv come first; their
# 5.8 bar point is copied from that label (status ok_reused: same protocol, same RASPA2), the other pressures are
# simulated. Then the rest of CoRE MOF 2019-ASR with PLD >= 4 Å, all four pressures simulated.
#
# Environment: JOBS (parallel simulations, default 1), NICE (niceness of the run and of its autogroup, default 19), OUT (default models/data/ch4_isotherms_raspa2.csv, committed so
# the next session resumes it), LIST (default data/labels/ch4_isotherm_names.txt, re-made at every start from the
# label files), PRESSURES (default 1,5.8,35,65 bar), CYCLES / INIT_CYCLES (default 700 / 300: the reference protocol;
# other values switch the reuse off), REUSE (default 1; 0: simulate the 5.8 bar point too).
# Needs RASPA2 in the venv: pip install '.[gcmc]' (see docs/gcmc.md for the build steps).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-models/data/ch4_isotherms_raspa2.csv}"
LIST="${LIST:-data/labels/ch4_isotherm_names.txt}"
LOG="${OUT%.csv}.log"
PIDFILE="${OUT%.csv}.pid"
JOBS="${JOBS:-1}"
PRESSURES="${PRESSURES:-1,5.8,35,65}"
CYCLES="${CYCLES:-700}"
INIT_CYCLES="${INIT_CYCLES:-300}"
REUSE="${REUSE:-1}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
LABELS=(models/data/ch4_coremof2019_raspa2.csv models/data/ch4_coremof2019_raspa2_extra.csv)

# shellcheck source=bench/_background.sh
. "$ROOT/bench/_background.sh"
alive() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-start}" in
  status)
    if alive; then echo "running (pid $(cat "$PIDFILE"))"; else echo "not running"; fi
    if [[ -f "$OUT" ]]; then
      "$PY" - "$OUT" "$LIST" "$PRESSURES" <<'EOF'
import csv, os, sys
from collections import Counter, defaultdict
out, names_file, pressures = sys.argv[1], sys.argv[2], [float(p) for p in sys.argv[3].split(",")]
with open(out, newline="") as handle:
    rows = [r for r in csv.DictReader(handle) if r.get("status")]
n = sum(1 for l in open(names_file) if l.strip() and not l.startswith("#")) if os.path.exists(names_file) else 0
print(f"{len(rows)}/{n * len(pressures)} (structure, pressure) rows: "
      + ", ".join(f"{k} {v}" for k, v in Counter(r["status"] for r in rows).most_common()))
points = defaultdict(set)
for r in rows:
    if r["status"] in ("ok", "ok_reused"):
        points[r["name"]].add(round(float(r["pressure_bar"]), 9))
complete = sum(1 for s in points.values() if all(round(p, 9) in s for p in pressures))
print(f"{complete} complete isotherms ({len(pressures)} labelled pressures)")
cost = defaultdict(list)
for r in rows:
    if r["status"] == "ok":
        cost[float(r["pressure_bar"])].append(float(r["seconds"]))
print("simulated, mean s per structure: "
      + ", ".join(f"{p:g} bar {sum(v) / len(v):.1f} (n={len(v)})" for p, v in sorted(cost.items())))
EOF
      tail -n 3 "$LOG" 2>/dev/null || true
    fi
    exit 0 ;;
  stop)
    # The run is its own process group (setsid below): stop the driver and the RASPA2 simulations it runs.
    # Simulations in flight are not recorded and run again on the next start.
    if alive; then kill -- "-$(cat "$PIDFILE")" && echo "stopped pid $(cat "$PIDFILE") and its simulations"
    else echo "not running"; fi
    rm -f "$PIDFILE"
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|status|stop]" >&2; exit 2 ;;
esac

if alive; then echo "already running (pid $(cat "$PIDFILE")); see $LOG" >&2; exit 1; fi
mkdir -p "$(dirname "$OUT")" "$(dirname "$LIST")"

# The work list, re-made at every start (the 5.8 bar label files grow): first the structures with an `ok` 5.8 bar
# label, then the other CoRE MOF 2019-ASR entries with PLD >= 4 Å (minus those already known to be skipped_large),
# each part ordered by sha256("isotherm:" + name). A structure's place does not depend on the other names, so the
# order is stable as the label files grow and a partial run is a random sample (independent of the model split,
# which hashes with another key).
"$PY" - "$LIST" "${LABELS[@]}" <<'EOF'
import csv, hashlib, sys
from models.datasets import coremof_properties

out, label_files = sys.argv[1], sys.argv[2:]
labelled, skipped = set(), set()
for path in label_files:
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                if row["status"] == "ok":
                    float(row["ch4_uptake_mol_kg"])
                    labelled.add(row["name"])
                elif row["status"] == "skipped_large":
                    skipped.add(row["name"])
            except (KeyError, TypeError, ValueError):
                pass  # a torn last line of a file being appended to
def order(names):
    return sorted(names, key=lambda n: hashlib.sha256(f"isotherm:{n}".encode()).hexdigest())
props = coremof_properties("2019-ASR")
rest = set(props.index[props["PLD"] >= 4.0]) - labelled - skipped
first, second = order(labelled), order(rest)
with open(out, "w") as f:
    f.write(f"# CH4 isotherm work list: {len(first)} structures with an ok 5.8 bar label, then {len(second)} other\n"
            "# CoRE MOF 2019-ASR entries with PLD >= 4 A; each part ordered by sha256('isotherm:' + name)\n")
    f.write("\n".join(first + second) + "\n")
print(f"{len(first)} labelled + {len(second)} other names -> {out}")
EOF

REUSE_ARGS=()
if [[ "$REUSE" == "1" && "$CYCLES" == "700" && "$INIT_CYCLES" == "300" ]]; then
  REUSE_ARGS=(--reuse-labels "${LABELS[@]}")
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

nohup setsid nice -n "${NICE:-19}" "${CMD[@]}" --coremof-list "$LIST" --pressures "$PRESSURES" --resume --out "$OUT" \
  --jobs "$JOBS" --cycles "$CYCLES" --init-cycles "$INIT_CYCLES" "${REUSE_ARGS[@]}" >>"$LOG" 2>&1 &
echo $! >"$PIDFILE"
# nice alone does not rank across sessions (autogroup scheduling): nice the run's session too
nice_autogroup "$!" "${NICE:-19}"
echo "started pid $! ($JOBS job(s), pressures $PRESSURES bar); progress: tail -f $LOG; status: $0 status"
