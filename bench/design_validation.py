"""Does design by screening find structures that really adsorb the target amount? GCMC on the candidates.

    python bench/design_validation.py pick                  # candidates → bench/results/design_validation_names.csv
    .venv/bin/retnet simulate --coremof-list bench/results/design_validation_list.txt \\
        --out bench/results/design_validation_gcmc.csv --resume --jobs 1      # RASPA2, DESIGN.md §6 (resumable)
    python bench/design_validation.py pick-generated        # (b): the generator's designs' nearest real structures
    .venv/bin/retnet simulate --coremof-list bench/results/design_validation_generated_list.txt \\
        --out bench/results/design_validation_generated_gcmc.csv --resume --jobs 1
    python bench/design_validation.py report                # hit rates → bench/results/design_validation.json

    # the same for the deliverable capacity (65 → 5.8 bar) with the isotherm model: two pressures per structure
    python bench/design_validation.py pick --plan deliverable
    .venv/bin/retnet simulate --coremof-list bench/results/design_validation_deliverable_list.txt --pressures 5.8,65 \
        --out bench/results/design_validation_deliverable_gcmc.csv --resume --jobs 2
    python bench/design_validation.py report --plan deliverable   # → bench/results/design_validation_deliverable.json

Protocol: five single-value targets of the CH4 uptake at 298 K and 5.8 bar, spread over the range of the labels
(1, 2.5, 4, 5.5 and 7 mol/kg: the 5th to 99th percentile of the labels; tolerance ± 0.75 mol/kg), ranked by
``retnet design`` on the shipped ``retnet-ch4`` library of CoRE MOF 2019 predictions, in the applicability domain
only, **excluding every structure that has a GCMC label** (so each candidate is unseen by the model and by us).
For each target: the top 5 candidates, and 5 structures drawn at random (seed 0) from the same pool as the
baseline. (b) The generator: one landscape designed per target (``POST /design`` with ``generate``: the VAE's
latent space searched by a particle swarm against ``retnet-ch4``, kept in its applicability domain and started,
as the service does, from the latent codes of the screening's top 10 of the same pool), and its 5 nearest real
structures of the same pool in fingerprint space. A hit is a structure whose simulated uptake lies within the
tolerance of the target. Hit rates with 95 % Wilson intervals.

The ``deliverable`` plan asks the same of the isotherm model ``retnet-ch4-isotherm`` and the US DOE storage metric:
four targets of the deliverable capacity between 65 and 5.8 bar (1, 3.5, 6.5 and 9.5 mol/kg, the 10th to 90th
percentile of the simulated isotherms; ± 1 mol/kg), its library, in domain, unlabelled structures only (no 5.8 bar
and no isotherm label). GCMC at 5.8 and 65 bar per candidate. The random baseline is one draw of 10 structures
(seed 0) of the same pool, each scored against every target: a random pick does not depend on the target, and
two pressures per structure make simulations dear.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
GENERATED = RESULTS / "design_validation_generated.csv"
GENERATED_LIST = RESULTS / "design_validation_generated_list.txt"
GENERATED_GCMC = RESULTS / "design_validation_generated_gcmc.csv"
TARGETS_MOL_KG = (1.0, 2.5, 4.0, 5.5, 7.0)
TOLERANCE = 0.75
PER_TARGET = 5


@dataclass(frozen=True)
class Plan:
    """One validation: which model's library ranks, which quantity is targeted, where its files go."""

    model: str
    quantity: str
    targets_mol_kg: tuple[float, ...]
    tolerance_mol_kg: float
    suffix: str = ""
    shared_random: int = 0  # > 0: one draw of this many random structures scored against every target

    def path(self, stem: str, ext: str) -> Path:
        """``bench/results/design_validation<suffix>_<stem>.<ext>`` (``stem`` empty: the report)."""
        return RESULTS / f"design_validation{self.suffix}{'_' + stem if stem else ''}.{ext}"


PLANS = {
    "uptake": Plan("retnet-ch4", "value", TARGETS_MOL_KG, TOLERANCE),
    "deliverable": Plan("retnet-ch4-isotherm", "deliverable_65_5.8bar", (1.0, 3.5, 6.5, 9.5), 1.0,
                        suffix="_deliverable", shared_random=10),
}


def _labelled() -> set[str]:
    labelled: set[str] = set()
    for path in sorted((ROOT / "models" / "data").glob("ch4_*.csv")):
        labelled |= set(pd.read_csv(path, usecols=["name"])["name"])
    return labelled


def _pool(plan: Plan = PLANS["uptake"]) -> pd.DataFrame:
    """The plan's shipped model's library without the structures that have a GCMC label."""
    from models.design import LIBRARY_FILE, read_library

    library = read_library(ROOT / "models" / "shipped" / plan.model / LIBRARY_FILE)
    return library[~library["name"].isin(_labelled())].reset_index(drop=True)


def _screen(pool_table: pd.DataFrame, target: float, top_k: int,
            plan: Plan = PLANS["uptake"]) -> list[dict[str, object]]:
    """Design by screening (in domain only): the top ``top_k`` candidates of the pool for one target."""
    from app.schemas import DesignRequest
    from app.services.design import library_candidates, rank_pool

    pool = library_candidates(pool_table, [plan.quantity])
    assert pool is not None
    request = DesignRequest(target={plan.quantity: target}, tolerance=plan.tolerance_mol_kg, top_k=top_k,
                            in_domain_only=True, sources=["library"])
    return rank_pool(pool, request, plan.model, {"library": len(pool.names)})["candidates"]


def cmd_pick(args: argparse.Namespace) -> None:
    plan = PLANS[args.plan]
    pool_table = _pool(plan)
    rng = np.random.default_rng(0)
    shared = rng.choice(len(pool_table), plan.shared_random, replace=False) if plan.shared_random else None
    rows = []
    for target in plan.targets_mol_kg:
        for c in _screen(pool_table, target, PER_TARGET, plan):
            rows.append({"target_mol_kg": target, "group": "design", "rank": c["rank"], "name": c["name"],
                         "predicted_mol_kg": c["predicted"][plan.quantity],
                         "sigma": (c["uncertainty"] or {}).get(plan.quantity), "p_within": c["p_within"]})
        draw = shared if shared is not None else rng.choice(len(pool_table), PER_TARGET, replace=False)
        for k, i in enumerate(draw, start=1):
            rows.append({"target_mol_kg": target, "group": "random", "rank": k, "name": pool_table["name"][i],
                         "predicted_mol_kg": float(pool_table[plan.quantity][i]),
                         "sigma": float(pool_table[plan.quantity + "_sigma"][i]), "p_within": None})
    table = pd.DataFrame(rows)
    names, listing = plan.path("names", "csv"), plan.path("list", "txt")
    table.to_csv(names, index=False)
    listing.write_text("\n".join(dict.fromkeys(table["name"])) + "\n")
    print(f"{len(table)} candidates ({table['name'].nunique()} structures) from {len(pool_table)} unlabelled "
          f"library structures -> {names}, {listing}")


def cmd_pick_generated(args: argparse.Namespace) -> None:
    from app.schemas import DesignRequest
    from app.services.outputs import Outputs
    from models.artifacts import load_model
    from models.design import LIBRARY_FINGERPRINTS
    from models.generator import LIBRARY_CODES_FILE, LatentCodes, density_head, load_generator
    from models.inverse_design import design_and_match
    from worker.design import GENERATOR_PATH, ITERATIONS, NEAREST, PARTICLES

    folder = ROOT / "models" / "shipped" / "retnet-ch4"
    loaded = load_model(folder, device="cpu")
    vae, info = load_generator(str(GENERATOR_PATH))
    head = density_head(info)
    codes = LatentCodes.load(str(GENERATOR_PATH.parent / LIBRARY_CODES_FILE))
    data = np.load(folder / LIBRARY_FINGERPRINTS)
    keep = ~np.isin(data["names"], list(_labelled()))
    names, fingerprints = data["names"][keep], data["fingerprints"][keep]
    matrix = Outputs.of(loaded.card.model_dump(mode="json")).quantity_matrix(["value"])
    pool_table = _pool()
    top_k = DesignRequest.model_fields["top_k"].default  # the service's default ranking starts the swarm
    rows = []
    for k, target in enumerate(TARGETS_MOL_KG):
        start = codes.start([str(c["name"]) for c in _screen(pool_table, target, top_k)], head)
        m = design_and_match(vae, loaded, matrix, [target], [TOLERANCE], names, fingerprints, designs=1,
                             particles=PARTICLES, iterations=ITERATIONS, seed=k, nearest=NEAREST,
                             clip=float(info.get("clip") or 100.0), density=head, start=start)[0]
        for rank, (name, distance) in enumerate(m.nearest, start=1):
            rows.append({"target_mol_kg": target, "group": "generated", "rank": rank, "name": name,
                         "design_predicted_mol_kg": float(m.predicted[0]), "distance": distance,
                         "design_in_domain": m.in_domain})
        print(f"target {target}: design predicted {m.predicted[0]:.3f} ± {m.sigma[0]:.3f} "
              f"(in domain: {m.in_domain}); nearest {[n for n, _ in m.nearest]}", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(GENERATED, index=False)
    GENERATED_LIST.write_text("\n".join(dict.fromkeys(table["name"])) + "\n")


def _wilson(hits: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    z, p = 1.959964, hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _simulated(paths: list[Path], quantity: str) -> pd.Series:
    """Each simulated structure's value of ``quantity`` (mol/kg): the uptake of a one-pressure run, or the
    deliverable capacity u(65 bar) − u(5.8 bar) of rows per pressure (``retnet simulate --pressures``)."""
    sims = pd.concat([pd.read_csv(p) for p in paths if p.exists()], ignore_index=True)
    sims = sims[sims["status"] == "ok"]
    if quantity != "deliverable_65_5.8bar":
        return sims.drop_duplicates("name", keep="last").set_index("name")["ch4_uptake_mol_kg"]
    curves = sims.pivot_table(index="name", columns="pressure_bar", values="ch4_uptake_mol_kg", aggfunc="last")
    return (curves[65.0] - curves[5.8]).dropna()


def cmd_report(args: argparse.Namespace) -> None:
    plan = PLANS[args.plan]
    picks = pd.read_csv(plan.path("names", "csv"))
    sim_files = [plan.path("gcmc", "csv")]
    if args.plan == "uptake" and GENERATED.exists():
        picks = pd.concat([picks, pd.read_csv(GENERATED)], ignore_index=True)
        sim_files.append(GENERATED_GCMC)
    picks["simulated_mol_kg"] = picks["name"].map(_simulated(sim_files, plan.quantity))
    picks["hit"] = (picks["simulated_mol_kg"] - picks["target_mol_kg"]).abs() <= plan.tolerance_mol_kg
    done = picks.dropna(subset=["simulated_mol_kg"])
    out: dict[str, object] = {"model": plan.model, "quantity": plan.quantity,
                              "targets_mol_kg": list(plan.targets_mol_kg), "tolerance_mol_kg": plan.tolerance_mol_kg,
                              "per_target": PER_TARGET, "shared_random": plan.shared_random,
                              "simulated": int(len(done)), "picked": int(len(picks))}
    for group in ("design", "generated", "random"):
        g = done[done["group"] == group]
        hits = int(g["hit"].sum())
        out[group] = {"hits": hits, "n": int(len(g)), "hit_rate": hits / len(g) if len(g) else None,
                      "ci95": _wilson(hits, len(g)),
                      "mae_vs_target": float((g["simulated_mol_kg"] - g["target_mol_kg"]).abs().mean())
                      if len(g) else None,
                      "per_target": {str(t): {"hits": int(s["hit"].sum()), "n": int(len(s))}
                                     for t, s in g.groupby("target_mol_kg")}}
    d = done[done["group"] == "design"]
    out["design_prediction_mae"] = float((d["simulated_mol_kg"] - d["predicted_mol_kg"]).abs().mean()) if len(d) \
        else None
    plan.path("", "json").write_text(json.dumps(out, indent=1) + "\n")
    picks.to_csv(plan.path("table", "csv"), index=False)
    print(json.dumps(out, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    for name, func in (("pick", cmd_pick), ("report", cmd_report)):
        p = sub.add_parser(name)
        p.add_argument("--plan", choices=sorted(PLANS), default="uptake",
                       help="uptake: retnet-ch4 at 5.8 bar (default); deliverable: the isotherm model's 65 → 5.8 bar")
        p.set_defaults(func=func)
    sub.add_parser("pick-generated").set_defaults(func=cmd_pick_generated)
    args = parser.parse_args()
    args.func(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
