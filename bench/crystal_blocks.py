"""Benchmark: what a model reading the crystal's ``ch4_widom`` numbers adds to the voxels stage.

For a fixed, seeded sample of labelled CoRE MOF 2019 structures it times, on one thread, each structure's CIF
parse (``models.structure.parse_cif``), its model grid (``compute_voxels`` with the shipped parameters, 25³) and
its ``ch4_widom`` block (:func:`models.widom.ch4_widom_descriptors`: a TraPPE CH4 raw-energy grid of 32³ and its
Widom averages), after one warm-up of each, and reports the medians and the ratio of the voxels stage with the
block to the stage without it, (parse + grid + block) / (parse + grid), summed over the sample. Results go to
``bench/results/crystal_blocks.json``.

Usage::

    python bench/crystal_blocks.py [--n 100] [--seed 0] [--out bench/results/crystal_blocks.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.voxels import sample_names  # noqa: E402
from models.datasets import coremof_cif_dir  # noqa: E402
from models.params import VoxelParams  # noqa: E402
from models.structure import parse_cif  # noqa: E402
from models.voxels import compute_voxels  # noqa: E402
from models.widom import ch4_widom_descriptors  # noqa: E402


def run(n: int, seed: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    params = VoxelParams()
    cif_dir = coremof_cif_dir()
    names = sample_names(n, seed)
    first = parse_cif((cif_dir / f"{names[0]}.cif").read_bytes(), names[0])
    compute_voxels(first, params, threads=1)  # warm-up: kernels compiled
    ch4_widom_descriptors(first, threads=1)
    rows = []
    for name in names:
        data = (cif_dir / f"{name}.cif").read_bytes()
        t0 = time.perf_counter()
        crystal = parse_cif(data, name)
        t1 = time.perf_counter()
        compute_voxels(crystal, params, threads=1)
        t2 = time.perf_counter()
        ch4_widom_descriptors(crystal, threads=1)
        t3 = time.perf_counter()
        rows.append({"name": name, "parse_s": t1 - t0, "grid_s": t2 - t1, "block_s": t3 - t2})
    total = {k: sum(r[k] for r in rows) for k in ("parse_s", "grid_s", "block_s")}
    return {
        "meta": {"n": len(rows), "seed": seed, "threads": 1, "python": platform.python_version(),
                 "platform": platform.platform(), "torch": torch.__version__},
        "median_s": {k: statistics.median(r[k] for r in rows) for k in ("parse_s", "grid_s", "block_s")},
        "total_s": total,
        "stage_ratio_with_block": (total["parse_s"] + total["grid_s"] + total["block_s"])
        / (total["parse_s"] + total["grid_s"]),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="structures in the sample (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "crystal_blocks.json")
    args = parser.parse_args(argv)
    result = run(args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    m = result["median_s"]
    print(f"{result['meta']['n']} structures, medians: parse {m['parse_s'] * 1e3:.1f} ms, grid "  # type: ignore[index]
          f"{m['grid_s'] * 1e3:.1f} ms, ch4_widom {m['block_s'] * 1e3:.1f} ms; voxels stage with the block: "  # type: ignore[index]
          f"{result['stage_ratio_with_block']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
