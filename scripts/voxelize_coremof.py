"""Voxelize CoRE MOF 2019 structures into a resumable on-disk cache (one ``.npy`` per structure).

Usage::

    python scripts/voxelize_coremof.py --labelled          # the structures with CH4 labels (reference + extra)
    python scripts/voxelize_coremof.py --all --jobs 2      # every structure (pre-training set)

Grids land in ``<cache>/voxels/<params_hash>/<name>.npy`` (float32, Boltzmann
factors, default VoxelParams); failures in ``<cache>/voxels/<params_hash>/failures.csv``
with the precise message. Re-running skips what is done.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.datasets import (  # noqa: E402
    CH4_EXTRA_LABELS,
    CH4_LABELS,
    coremof_cif_dir,
    default_cache_dir,
    read_labels,
)
from models.errors import StructureError  # noqa: E402
from models.params import VoxelParams  # noqa: E402

#: The reference CH4 labels and the ones extended with ``retnet simulate`` (bench/extend_labels.sh).
LABEL_FILES = [CH4_LABELS, CH4_EXTRA_LABELS]


def voxel_cache_dir(params: VoxelParams, cache_dir: Path | None = None) -> Path:
    """Folder of cached grids for one parameter set."""
    return (cache_dir or default_cache_dir()) / "voxels" / params.params_hash()


def _one(task: tuple[str, str, str]) -> tuple[str, str, float]:
    name, cif, out = task
    import torch

    from models.structure import load_crystal
    from models.voxels import compute_voxels

    torch.set_num_threads(1)
    start = time.perf_counter()
    try:
        grid = compute_voxels(load_crystal(Path(cif)), VoxelParams(), device="cpu", threads=1)
    except StructureError as exc:
        return name, str(exc), time.perf_counter() - start
    except Exception as exc:  # an unexpected failure is recorded too, never dropped
        return name, f"{type(exc).__name__}: {exc}", time.perf_counter() - start
    tmp = Path(out).with_suffix(".tmp.npy")
    np.save(tmp, grid)
    tmp.rename(out)
    return name, "", time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--labelled", action="store_true", help="structures with status ok in the CH4 label files")
    group.add_argument("--all", action="store_true", help="every CoRE MOF 2019-ASR structure")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default ~/.cache/retnet)")
    args = parser.parse_args()

    cif_dir = coremof_cif_dir(cache_dir=args.cache)
    if args.labelled:
        names = [n for f in LABEL_FILES if f.exists() for n in read_labels(f, "ch4_uptake_mol_kg")["name"]]
    else:
        names = sorted(p.stem for p in cif_dir.glob("*.cif"))
    out_dir = voxel_cache_dir(VoxelParams(), args.cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures_path = out_dir / "failures.csv"
    failed = set()
    if failures_path.exists():
        with failures_path.open() as fh:
            failed = {row["name"] for row in csv.DictReader(fh)}
    todo = [(n, str(cif_dir / f"{n}.cif"), str(out_dir / f"{n}.npy")) for n in names
            if n not in failed and not (out_dir / f"{n}.npy").exists()]
    print(f"{len(names)} structures, {len(todo)} to voxelize into {out_dir}", flush=True)
    new_file = not failures_path.exists()
    done = 0
    start = time.time()
    with failures_path.open("a", newline="") as fh, get_context("spawn").Pool(args.jobs) as pool:
        writer = csv.writer(fh)
        if new_file:
            writer.writerow(["name", "error"])
        for name, error, _seconds in pool.imap_unordered(_one, todo, chunksize=4):
            done += 1
            if error:
                writer.writerow([name, error])
                fh.flush()
            if done % 100 == 0 or done == len(todo):
                rate = done / (time.time() - start)
                print(f"{done}/{len(todo)} ({rate:.1f}/s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
