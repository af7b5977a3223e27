"""CH4 Henry coefficient and heat of adsorption at infinite dilution for CoRE MOF 2019 (physics pre-training targets).

Usage::

    nice python scripts/widom_targets.py --jobs 1            # every structure (resumable: appends, skips done)
    python scripts/widom_targets.py --limit 20               # a quick try
    python scripts/widom_targets.py --block --jobs 2         # the ch4_widom descriptors' table (25³), for the
                                                             # CH4 model's trees and its design library

For each CIF: a TraPPE CH4-probe raw-energy grid (:data:`models.widom.CH4_PROBE`, 32³ over the supercell,
our voxelizer), then the Widom averages of :mod:`models.widom` at 298 K with the CIF's crystal density. One row
per structure is appended to ``<cache>/widom_ch4_298K.csv``
(``name,log10_henry_mol_kg_bar,qst_kj_mol,seconds,status``); ``status`` is ``ok`` or the precise reason it failed.
No GCMC: a few hundred milliseconds per structure on one core. With ``--block`` the same for the ``ch4_widom``
descriptors that hybrid trees read (:data:`models.widom.CH4_BLOCK_PROBE`, 25³, exactly as serving computes them),
into ``<cache>/ch4_widom_block_298K.csv``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from functools import partial
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.datasets import WIDOM_COLUMNS, coremof_cif_dir, widom_table_path  # noqa: E402

COLUMNS = ["name", *WIDOM_COLUMNS, "seconds", "status"]


def _one(cif: str, block: bool = False) -> dict[str, object]:
    import torch

    from models.structure import load_crystal
    from models.widom import CH4_BLOCK_PROBE, CH4_PROBE, crystal_widom_targets

    torch.set_num_threads(1)
    name = Path(cif).stem
    start = time.perf_counter()
    try:
        probe = CH4_BLOCK_PROBE if block else CH4_PROBE
        row: dict[str, object] = {"name": name, **crystal_widom_targets(load_crystal(Path(cif)), probe, threads=1),
                                  "status": "ok"}
    except Exception as exc:  # noqa: BLE001  (recorded with its reason, never dropped)
        row = {"name": name, "log10_henry_mol_kg_bar": "", "qst_kj_mol": "",
               "status": f"{type(exc).__name__}: {exc}"[:300]}
    row["seconds"] = round(time.perf_counter() - start, 3)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--limit", type=int, default=None, help="only the first N structures not done yet")
    parser.add_argument("--block", action="store_true", help="the ch4_widom descriptors' table (25³), not the "
                                                             "pre-training targets (32³)")
    args = parser.parse_args()

    out = widom_table_path(block=args.block)
    done: set[str] = set()
    if out.exists():
        with out.open() as f:
            done = {r["name"] for r in csv.DictReader(f)}
    cifs = [str(p) for p in sorted(coremof_cif_dir().glob("*.cif")) if p.stem not in done][: args.limit]
    print(f"{len(done)} done, {len(cifs)} to go -> {out}", flush=True)
    new_file = not out.exists()
    start = time.time()
    with out.open("a", newline="") as f, get_context("spawn").Pool(args.jobs) as pool:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new_file:
            writer.writeheader()
        for i, row in enumerate(pool.imap_unordered(partial(_one, block=args.block), cifs, chunksize=4), 1):
            writer.writerow(row)
            f.flush()
            if i % 200 == 0:
                print(f"{i}/{len(cifs)} ({time.time() - start:.0f} s)", flush=True)
    print(f"done: {len(cifs)} in {time.time() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
