"""Benchmark: the shipped model's CPU rate by how its forward passes are threaded (see models/forward_pool.py).

Each setting runs in a fresh process (libgomp reads its environment once, and keeps one team per thread that
ever called torch), on the same synthetic grids (``bench.inference.synthetic_grids``), ``--rounds`` timed rounds
of ``--grids`` grids in passes of ``--batch``; the figure is each round's grids/min:

- ``main``: torch's own threads, called from the only thread that ever ran torch (as ``bench.service`` measures
  "the model alone");
- ``thread``: the same, called from a second thread after the main thread ran torch (as a worker's task thread);
- ``passive``: ``thread`` with ``OMP_WAIT_POLICY=passive``;
- ``streams``: :class:`models.forward_pool.ForwardPool` with one stream per torch thread of the process (its
  physical cores by default), called from a second thread.

Every setting runs with ``GOMP_SPINCOUNT=10000``, as ``retnet serve`` and ``retnet worker`` set it.

Usage::

    python -m bench.forward_streams [--model models/shipped/retnet-ch4] [--json bench/results/forward_streams.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.core.cpu import DEFAULT_GOMP_SPINCOUNT  # noqa: E402

SETTINGS = ("main", "thread", "passive", "streams")


def _rates(setting: str, model_path: str, grids_n: int, batch: int, rounds: int) -> list[float]:
    """Run in a fresh process: grids/min of each round for ``setting``."""
    from bench.inference import synthetic_crystal_blocks, synthetic_densities, synthetic_grids
    from models.artifacts import load_model
    from models.forward_pool import ForwardPool, process_torch_threads

    model = load_model(model_path, device="cpu")
    grids = synthetic_grids(grids_n)
    densities = synthetic_densities(grids_n) if model.needs_density else None
    blocks = synthetic_crystal_blocks(model, grids_n)
    parts = [(grids[k:k + batch], None if densities is None else densities[k:k + batch],
              {b: v[k:k + batch] for b, v in blocks.items()}) for k in range(0, grids_n, batch)]

    def one(part: tuple[Any, Any, Any]) -> Any:
        return model.predict_detailed(part[0], batch_size=batch, densities_g_cm3=part[1], crystal_blocks=part[2])

    pool = ForwardPool(process_torch_threads()) if setting == "streams" else None

    def run_all() -> float:
        t0 = time.perf_counter()
        if pool is not None:
            pool.map(one, parts)
        else:
            for part in parts:
                one(part)
        return grids_n / (time.perf_counter() - t0) * 60

    one(parts[0])  # the main thread runs torch (warm-up) in every setting
    if setting == "main":
        return [round(run_all()) for _ in range(rounds)]
    out: list[float] = []
    worker = threading.Thread(target=lambda: (run_all(), out.extend(round(run_all()) for _ in range(rounds))))
    worker.start()
    worker.join()
    if pool is not None:
        pool.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "shipped" / "retnet-ch4"))
    parser.add_argument("--grids", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)  # internal: run one setting
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_rates(args.one, args.model, args.grids, args.batch, args.rounds)))
        return 0
    results: dict[str, Any] = {"cpus": len(os.sched_getaffinity(0)), "batch": args.batch, "grids": args.grids}
    for setting in SETTINGS:
        env = {"GOMP_SPINCOUNT": DEFAULT_GOMP_SPINCOUNT, **os.environ}
        if setting == "passive":
            env["OMP_WAIT_POLICY"] = "passive"
        done = subprocess.run([sys.executable, "-m", "bench.forward_streams", "--one", setting, "--model", args.model,
                               "--grids", str(args.grids), "--batch", str(args.batch), "--rounds", str(args.rounds)],
                              cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        results[setting] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {setting} | {min(results[setting]):,.0f}–{max(results[setting]):,.0f} grids/min |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
