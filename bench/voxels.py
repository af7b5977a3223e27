"""Benchmark: our energy voxels against the reference package pymoxel, on real CoRE MOF 2019 structures.

For a fixed, seeded sample of labelled structures (``status = ok`` in
``models/data/ch4_coremof2019_raspa2.csv``) it times

- CIF parsing (``models.structure.parse_cif``: the fast P1 reader, and pymatgen's full parser for comparison),
- our grid (``compute_voxels``, engine auto = numba on CPU; one warm-up call first, then the median of 3),
- pymoxel's ``voxels_from_file(cif, grid_size=25, cubic_box=None, n_jobs=os.cpu_count())`` (parse + grid),

and compares the Boltzmann factors exp(-V/298 K). Results go to ``bench/results/voxels.json``.

Usage::

    PYTHONPATH=. python bench/voxels.py [--n 20] [--seed 0] [--repeats 3] [--out bench/results/voxels.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.datasets import CH4_LABELS, coremof_cif_dir  # noqa: E402
from models.errors import StructureError  # noqa: E402
from models.params import VoxelParams  # noqa: E402
from models.structure import parse_cif  # noqa: E402
from models.voxels import compute_voxels, supercell_scale  # noqa: E402

LABELS = CH4_LABELS


def sample_names(n: int, seed: int) -> list[str]:
    """A fixed, seeded random sample of labelled (``status = ok``) structure names."""
    import pandas as pd

    table = pd.read_csv(LABELS)
    names = sorted(table.loc[table["status"] == "ok", "name"])
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(names, size=n, replace=False).tolist())


def _median_time(fn, repeats: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _boltzmann_reference(raw: np.ndarray, temperature: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(-raw.astype(np.float64) / temperature).astype(np.float32)


def _differences(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float, bool]:
    """Max |Δ|, max |Δ|/|ref| (over |ref| > 1e-6), and whether the 0 / +inf patterns agree."""
    same_pattern = bool(np.array_equal(ours == 0, reference == 0) and np.array_equal(np.isinf(ours),
                                                                                    np.isinf(reference)))
    finite = np.isfinite(ours) & np.isfinite(reference)
    diff = np.abs(ours[finite].astype(np.float64) - reference[finite].astype(np.float64))
    big = np.abs(reference[finite]) > 1e-6
    rel = diff[big] / np.abs(reference[finite][big].astype(np.float64))
    return float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), same_pattern


def run(n: int, seed: int, repeats: int, jobs: int) -> dict:  # type: ignore[type-arg]
    from moxel.utils import voxels_from_file

    params = VoxelParams()
    folder = coremof_cif_dir()
    names = sample_names(n, seed)
    # Warm-up: numba compilation / cache load and imports, outside every timing.
    compute_voxels(parse_cif((folder / f"{names[0]}.cif").read_bytes(), names[0]), params)
    parse_cif((folder / f"{names[0]}.cif").read_bytes(), names[0], fast=False)

    rows: list[dict] = []  # type: ignore[type-arg]
    failures: list[dict[str, str]] = []
    header = (f"{'structure':<34} {'atoms':>5} {'super':>6} {'parse':>8} {'pmg':>8} {'grid':>8} "
              f"{'pymoxel':>8} {'grid×':>7} {'e2e×':>6} {'max|Δ|':>9} {'max rel':>9}")
    print(header)
    print("-" * len(header))
    for name in names:
        path = folder / f"{name}.cif"
        data = path.read_bytes()
        try:
            parse_cif(data, name)
        except StructureError as exc:  # reported, never dropped silently
            failures.append({"name": name, "error": str(exc)})
            print(f"{name[:34]:<34} FAILED: {exc}", flush=True)
            continue
        parse_s, crystal = _median_time(lambda: parse_cif(data, name), repeats)  # noqa: B023
        pymatgen_s, _ = _median_time(lambda: parse_cif(data, name, fast=False), repeats)  # noqa: B023
        grid_s, ours = _median_time(lambda: compute_voxels(crystal, params), repeats)  # noqa: B023
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            raw = voxels_from_file(str(path), grid_size=params.grid_size, cubic_box=None, n_jobs=jobs)
            moxel_s = time.perf_counter() - start
        reference = _boltzmann_reference(raw, params.temperature)
        max_abs, max_rel, same_pattern = _differences(ours, reference)  # type: ignore[arg-type]
        scale = supercell_scale(crystal, params.cutoff)  # type: ignore[arg-type]
        row = {
            "name": name,
            "n_atoms": crystal.n_atoms,  # type: ignore[attr-defined]
            "supercell": [int(s) for s in scale],
            "supercell_atoms": int(crystal.n_atoms * scale.prod()),  # type: ignore[attr-defined]
            "parse_s": parse_s,
            "parse_pymatgen_s": pymatgen_s,
            "grid_s": grid_s,
            "pymoxel_s": moxel_s,
            "speedup_grid": moxel_s / grid_s,
            "speedup_end_to_end": moxel_s / (parse_s + grid_s),
            "speedup_end_to_end_pymatgen_parse": moxel_s / (pymatgen_s + grid_s),
            "max_abs_diff": max_abs,
            "max_rel_diff": max_rel,
            "same_zero_inf_pattern": same_pattern,
        }
        rows.append(row)
        print(f"{name[:34]:<34} {row['n_atoms']:>5} {row['supercell_atoms']:>6} {1e3 * parse_s:>6.1f}ms "
              f"{1e3 * pymatgen_s:>6.1f}ms {1e3 * grid_s:>6.1f}ms {moxel_s:>7.2f}s {row['speedup_grid']:>7.0f} "
              f"{row['speedup_end_to_end']:>6.0f} {max_abs:>9.2e} {max_rel:>9.2e}", flush=True)

    summary = {
        "median_speedup_grid": statistics.median(r["speedup_grid"] for r in rows),
        "median_speedup_end_to_end": statistics.median(r["speedup_end_to_end"] for r in rows),
        "median_speedup_end_to_end_pymatgen_parse": statistics.median(
            r["speedup_end_to_end_pymatgen_parse"] for r in rows),
        "median_parse_ms": 1e3 * statistics.median(r["parse_s"] for r in rows),
        "median_parse_pymatgen_ms": 1e3 * statistics.median(r["parse_pymatgen_s"] for r in rows),
        "median_grid_ms": 1e3 * statistics.median(r["grid_s"] for r in rows),
        "median_pymoxel_s": statistics.median(r["pymoxel_s"] for r in rows),
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "max_rel_diff": max(r["max_rel_diff"] for r in rows),
        "all_zero_inf_patterns_equal": all(r["same_zero_inf_pattern"] for r in rows),
    }
    return {
        "params": params.model_dump(),
        "sample": {"labels": LABELS.name, "status": "ok", "n": n, "seed": seed},
        "repeats": repeats,
        "pymoxel_n_jobs": jobs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "structures": rows,
        "failures": failures,
        "summary": summary,
    }


def markdown(result: dict) -> str:  # type: ignore[type-arg]
    """A README fragment: the summary table."""
    s = result["summary"]
    lines = [
        f"Energy voxels, {len(result['structures'])} CoRE MOF 2019 structures (seeded sample), grid 25³, "
        f"{result['machine']['cpus']} CPU cores; pymoxel with n_jobs={result['pymoxel_n_jobs']}:",
        "",
        "| | median time | median speed-up vs pymoxel |",
        "|---|---|---|",
        f"| CIF parse, fast P1 reader | {s['median_parse_ms']:.1f} ms | |",
        f"| CIF parse, pymatgen | {s['median_parse_pymatgen_ms']:.1f} ms | |",
        f"| grid (numba) | {s['median_grid_ms']:.1f} ms | {s['median_speedup_grid']:.0f}× |",
        f"| end to end (parse + grid) | {s['median_parse_ms'] + s['median_grid_ms']:.1f} ms | "
        f"{s['median_speedup_end_to_end']:.0f}× |",
        f"| pymoxel `voxels_from_file` | {1e3 * s['median_pymoxel_s']:.0f} ms | 1× |",
        "",
        f"Max difference of the Boltzmann factors: {s['max_abs_diff']:.1e} absolute, {s['max_rel_diff']:.1e} "
        f"relative; 0 and +inf at the same voxels: {'yes' if s['all_zero_inf_patterns_equal'] else 'NO'}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20, help="structures in the sample (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per structure, median kept (default 3)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="pymoxel n_jobs (default: all cores)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "voxels.json")
    args = parser.parse_args(argv)
    result = run(args.n, args.seed, args.repeats, args.jobs)
    s = result["summary"]
    print()
    print(f"median speed-up, grid alone:          {s['median_speedup_grid']:.0f}×")
    print(f"median speed-up, end to end per CIF:  {s['median_speedup_end_to_end']:.0f}× "
          f"(with pymatgen's parser: {s['median_speedup_end_to_end_pymatgen_parse']:.0f}×)")
    print(f"max |Δ| of Boltzmann factors:         {s['max_abs_diff']:.2e} (max relative {s['max_rel_diff']:.2e})")
    print(f"same 0/+inf voxels everywhere:        {s['all_zero_inf_patterns_equal']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
