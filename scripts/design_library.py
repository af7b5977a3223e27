"""Predict every CoRE MOF 2019 structure once with a model: the library that ``POST /design`` ranks.

Usage::

    python scripts/voxelize_coremof.py --all                                  # grids (cached, resumable)
    python scripts/design_library.py --model models/shipped/retnet-ch4-isotherm
    python scripts/design_library.py --model models/shipped/retnet-ch4

Writes ``<model folder>/library.csv.gz`` (and ``library_fingerprints.npz``, float16, for the nearest real
structures of designed landscapes): one row per structure with a grid (``name``, ``sha256`` of the parsed
structure as the service computes it, ``density_g_cm3`` from the CIF, ``in_domain``), then a value and a
``_sigma`` column per quantity the service ranks by (mol/kg): ``value`` for a one-output model; for a curve model
``uptake_<p>bar`` per pressure and ``deliverable_65_5.8bar``. A small table (no grids): it ships with the model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.datasets import (  # noqa: E402
    coremof_cif_dir,
    coremof_crystal_blocks,
    coremof_structures,
    default_cache_dir,
)
from models.params import VoxelParams  # noqa: E402

CHUNK = 512


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    parser.add_argument("--jobs", type=int, default=1, help="processes parsing CIFs")
    parser.add_argument("--limit", type=int, default=None, help="only the first N structures (a quick try)")
    args = parser.parse_args()

    from app.services.outputs import DELIVERABLE, VALUE, Outputs
    from models.artifacts import load_model
    from models.design import LIBRARY_FILE, LIBRARY_FINGERPRINTS, SIGMA_SUFFIX

    loaded = load_model(args.model, device="cpu")
    outputs = Outputs.of(loaded.card.model_dump(mode="json"))
    grid_dir = default_cache_dir() / "voxels" / VoxelParams().params_hash()
    cif_dir = coremof_cif_dir()
    names = sorted(p.stem for p in grid_dir.glob("*.npy") if (cif_dir / f"{p.stem}.cif").exists())[: args.limit]
    print(f"{len(names)} structures with a grid in {grid_dir}", flush=True)
    start = time.time()
    described = coremof_structures(names, jobs=args.jobs)
    print(f"parsed in {time.time() - start:.0f} s", flush=True)
    names = [n for n in names if described.at[n, "sha256"]]
    rows: list[dict[str, object]] = []
    fingerprints: list[np.ndarray] = []
    for first in range(0, len(names), CHUNK):
        chunk = names[first:first + CHUNK]
        grids = np.stack([np.load(grid_dir / f"{n}.npy") for n in chunk]).astype(np.float32)
        out = loaded.predict_detailed(grids, densities_g_cm3=[described.at[n, "density_g_cm3"] for n in chunk],
                                      crystal_blocks=coremof_crystal_blocks(chunk, loaded.crystal_blocks))
        fingerprints.append(out.fingerprints.astype(np.float16))
        for i, name in enumerate(chunk):
            row: dict[str, object] = {"name": name, "sha256": described.at[name, "sha256"],
                                      "density_g_cm3": round(described.at[name, "density_g_cm3"], 6),
                                      "in_domain": None if out.in_domain is None else bool(out.in_domain[i])}
            values = [float(v) for v in out.values[i]]
            sigma = None if out.sigma is None else [float(s) for s in out.sigma[i]]
            if outputs.pressures:
                shown = outputs.present(values, sigma, 1.0)
                quantities = {k: (p.value, p.uncertainty) for k, p in zip(outputs.csv_columns, shown["values"],
                                                                           strict=False)}
                if shown["deliverable_capacity"] is not None:
                    quantities[DELIVERABLE] = (shown["deliverable_capacity"], shown["deliverable_capacity_uncertainty"])
            else:
                p = outputs.primary
                quantities = {VALUE: (values[p], None if sigma is None else sigma[p])}
            for key, (value, s) in quantities.items():
                row[key] = round(value, 5)
                row[key + SIGMA_SUFFIX] = None if s is None else round(s, 5)
            rows.append(row)
        print(f"{min(first + CHUNK, len(names))}/{len(names)} predicted ({time.time() - start:.0f} s)", flush=True)
    out_path = args.model / LIBRARY_FILE
    pd.DataFrame(rows).to_csv(out_path, index=False, compression={"method": "gzip", "mtime": 0})
    # the library's fingerprints (float16): the nearest real structures of a generator's designs (POST /design)
    np.savez_compressed(args.model / LIBRARY_FINGERPRINTS, names=np.array(names, dtype=str),
                        fingerprints=np.concatenate(fingerprints))
    print(f"{len(rows)} rows -> {out_path} ({out_path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
