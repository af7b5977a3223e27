"""Does the generator make landscapes the predictor recognises? In-domain rates of real, reconstructed, sampled
and designed energy grids.

    python bench/generator_domain.py [--generator models/generator/grid_vae.pt] [--model retnet-ch4]
        → bench/results/generator_domain.json

Protocol. The generator's own held-out grids (:func:`models.generator.generator_split`: 5 % of the CoRE MOF 2019
grids, never trained on), scored by the predictor's applicability domain (:class:`models.uncertainty.Domain`:
``in_domain`` when the mean fingerprint distance to the 5 nearest training structures is at most the validation
95th percentile): (1) the real grids with their CIFs' densities, (2) the VAE's reconstructions of them (encoder
mean, decoded) with the same densities, (3) as many landscapes decoded from prior samples z ~ N(0, 1) with the
density head's densities. Then (4) designs: for each target of ``bench/design_validation.py`` (1, 2.5, 4, 5.5, 7
mol/kg at 5.8 bar, ± 0.75), ``--designs`` swarms of the service's size (16 particles × 20 iterations), with and
without the domain term of the swarm's cost (:mod:`models.inverse_design`), and with it and the swarms started from
the latent codes of the 10 in-domain library structures predicted nearest the target (as the service starts
them from its best-ranked candidates): how many designs are in domain and how many the predictor puts within the
tolerance of the target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS_MOL_KG = (1.0, 2.5, 4.0, 5.5, 7.0)
TOLERANCE = 0.75
#: Library structures whose codes start the swarms (the service's default top_k).
START_FROM = 10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", type=Path, default=ROOT / "models" / "generator" / "grid_vae.pt")
    parser.add_argument("--model", default="retnet-ch4")
    parser.add_argument("--grids", type=int, default=600, help="held-out grids scored (at most the held-out set)")
    parser.add_argument("--designs", type=int, default=3, help="swarms per target and setting")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "generator_domain.json")
    args = parser.parse_args()

    import torch

    from app.services.outputs import Outputs
    from models.artifacts import load_model, shipped_model_dir
    from models.datasets import default_cache_dir
    from models.design import LIBRARY_FILE, LIBRARY_FINGERPRINTS, read_library
    from models.generator import (
        LIBRARY_CODES_FILE,
        LatentCodes,
        density_head,
        from_generator_space,
        generator_split,
        load_generator,
        to_generator_space,
    )
    from models.inverse_design import design_and_match, landscape_trees
    from worker.design import ITERATIONS, PARTICLES

    folder = shipped_model_dir(args.model)
    loaded = load_model(folder, device="cpu")
    vae, info = load_generator(str(args.generator))
    head, clip = density_head(info), float(info.get("clip") or 100.0)
    densities = read_library(folder / LIBRARY_FILE).set_index("name")["density_g_cm3"]
    grids_dir = default_cache_dir() / "voxels" / str(info["voxel_params_hash"])
    names = sorted(p.stem for p in grids_dir.glob("*.npy") if not p.name.endswith(".tmp.npy"))
    held_out = [names[i] for i in generator_split(len(names))[1] if names[i] in densities.index][: args.grids]
    rho = densities.loc[held_out].to_numpy(dtype=np.float64)
    real = np.stack([np.load(grids_dir / f"{n}.npy") for n in held_out]).astype(np.float32)

    def rates(grids: np.ndarray, rho_g_cm3: np.ndarray) -> dict[str, float]:
        detailed = loaded.predict_detailed(grids, densities_g_cm3=list(rho_g_cm3),  # as designs are scored
                                           network_only=landscape_trees(loaded) is None)
        score = loaded.domain.score(detailed.fingerprints) / loaded.domain.threshold
        return {"in_domain": float(np.mean(detailed.in_domain)), "median_score_over_threshold": float(np.median(score))}

    report: dict[str, object] = {"generator": str(args.generator.relative_to(ROOT)) if args.generator.is_relative_to(
        ROOT) else str(args.generator), **vae.config(), "generator_val_mse": info.get("val_mse"),
        "model": loaded.ref, "n_grids": len(held_out)}
    with torch.no_grad():
        x = torch.as_tensor(to_generator_space(real, clip))[:, None]
        reconstructed = from_generator_space(vae.decode(vae.encode(x)[0]), clip)[:, 0].numpy()
        z = np.random.default_rng(1).standard_normal((len(held_out), vae.latent_dim)).astype(np.float32)
        sampled = from_generator_space(vae.decode(torch.as_tensor(z)), clip)[:, 0].numpy()
    sampled_rho = (np.exp(head.log_density(z, np.random.default_rng(2).standard_normal(len(z)))) if head is not None
                   else rho)
    report["real"] = rates(real, rho)
    report["reconstructed"] = rates(reconstructed, rho)
    report["sampled"] = rates(sampled, sampled_rho)
    print(json.dumps(report, indent=1), flush=True)

    library = np.load(folder / LIBRARY_FINGERPRINTS)
    table = read_library(folder / LIBRARY_FILE)
    table = table[table["in_domain"].astype(bool)]
    codes = LatentCodes.load(str(args.generator.parent / LIBRARY_CODES_FILE))
    matrix = Outputs.of(loaded.card.model_dump(mode="json")).quantity_matrix(["value"])
    settings = {"without_domain_term": (False, False), "with_domain_term": (True, False),
                "with_domain_term_started_from_library_codes": (True, True)}
    designs: dict[str, list[dict[str, object]]] = {setting: [] for setting in settings}
    for setting, (keep, seeded) in settings.items():
        for k, target in enumerate(TARGETS_MOL_KG):
            start = time.time()
            # as the service does: the swarms start from the codes of the 10 best-ranked (in-domain) library
            # structures, those predicted nearest the target
            nearest_names = table.iloc[np.argsort(np.abs(table["value"].to_numpy() - target))[:START_FROM]]["name"]
            found = design_and_match(vae, loaded, matrix, [target], [TOLERANCE], library["names"],
                                     library["fingerprints"], designs=args.designs, particles=PARTICLES,
                                     iterations=ITERATIONS, seed=10 * k, clip=clip, density=head,
                                     keep_in_domain=keep,
                                     start=codes.start(list(nearest_names), head if loaded.needs_density else None)
                                     if seeded else None)
            for m in found:
                designs[setting].append({"target": target, "predicted": float(m.predicted[0]),
                                         "sigma": float(m.sigma[0]), "in_domain": bool(m.in_domain),
                                         "density_g_cm3": m.design.density_g_cm3, "nearest": m.nearest[0][0]})
            print(f"{setting} target {target}: " + ", ".join(f"{m.predicted[0]:.2f}±{m.sigma[0]:.2f}"
                                                             f"{'' if m.in_domain else ' (out)'}" for m in found)
                  + f" ({time.time() - start:.0f} s)", flush=True)
    for setting, rows in designs.items():
        report[setting] = {
            "designs": len(rows), "in_domain": sum(r["in_domain"] for r in rows),
            "predicted_within_tolerance": sum(abs(r["predicted"] - r["target"]) <= TOLERANCE for r in rows),
            "in_domain_and_within": sum(r["in_domain"] and abs(r["predicted"] - r["target"]) <= TOLERANCE
                                        for r in rows),
            "per_target_in_domain": {str(t): sum(r["in_domain"] for r in rows if r["target"] == t)
                                     for t in TARGETS_MOL_KG},
            "rows": rows}
        print(f"{setting}: {report[setting]['in_domain']}/{len(rows)} in domain, "
              f"{report[setting]['in_domain_and_within']} in domain and predicted within ± {TOLERANCE}", flush=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
