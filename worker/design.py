"""``inference.design``: run a design job (rank known structures against a target, optionally generate energy
landscapes for it) and store its result; designed grids go to storage as ``designs/<job>/<i>.npy``."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.db.session import session_scope
from app.db.tables import FINAL, Job
from app.schemas import DesignRequest
from app.services import progress
from app.services.design import design_candidates, design_request, quantity_keys
from app.services.outputs import Outputs
from models.units import CM3_STP_PER_CM3
from worker.runtime import WorkerContext

log = logging.getLogger(__name__)

#: The shipped generator (trained by scripts/generator_model.py).
GENERATOR_PATH = Path(__file__).resolve().parents[1] / "models" / "generator" / "grid_vae.pt"
#: Nearest real structures reported per designed landscape.
NEAREST = 5
#: Swarm of each design: particles × iterations decoder + predictor evaluations (≈ 8 s per design on 2 CPU cores
#: with the 5-member ensemble).
PARTICLES, ITERATIONS = 16, 20


def run_design(ctx: WorkerContext, job_id: str) -> None:
    """Rank (and generate), then mark the job succeeded with its result; a non-transient error fails it."""
    with session_scope(ctx.db_url) as session:
        job = session.get(Job, job_id)
        if job is None or job.status in FINAL:
            return
        progress.start_job(session, job_id)
    try:
        with session_scope(ctx.db_url) as session:
            job = session.get(Job, job_id)
            if job is None or job.status in FINAL:
                return
            result = design_candidates(session, ctx.store, job)
            request, model_ref = design_request(job), str(job.model_ref)
        if request.generate:
            # the swarms start from the best-ranked library candidates, those in the domain first
            library_names = [c["name"] for c in sorted(result["candidates"], key=lambda c: c["in_domain"] is not True)
                             if c["source"] == "library"]
            result["designed"], result["designed_note"] = generate(ctx, job_id, request, model_ref, library_names)
        with session_scope(ctx.db_url) as session:
            progress.set_job_details(session, job_id, {"phase": "done", "ranked": result["ranked"]},
                                     progress_done=1)
            progress.succeed_job(session, job_id, result)
    except Exception as exc:
        from worker.tasks import fail_job_unless_transient

        fail_job_unless_transient(ctx, job_id, exc, "design")


def generate(ctx: WorkerContext, job_id: str, request: DesignRequest, model_ref: str,
             start_names: Sequence[str] = ()) -> tuple[list[dict[str, Any]], str]:
    """Design ``request.generate`` landscapes with the shipped generator; (designs, a note on their meaning).

    ``start_names``: the best-ranked library structures; the swarms start from their latent codes (where the
    generator has them), so each search begins at real landscapes near the target and inside the domain."""
    from app.storage import ObjectNotFoundError
    from models.design import LIBRARY_FINGERPRINTS, design_grid_key, target_arrays
    from models.generator import LIBRARY_CODES_FILE, LatentCodes, density_head, load_generator
    from models.inverse_design import design_and_match

    if not GENERATOR_PATH.is_file():
        return [], "no generator is installed (scripts/generator_model.py trains one)"
    vae, info = load_generator(str(GENERATOR_PATH))
    head = density_head(info)
    loaded = ctx.model(model_ref)
    if loaded.needs_density and head is None:
        return [], (f"{model_ref} reads the crystal density, and this generator has no density head "
                    "(scripts/generator_model.py --density-head fits one)")
    if info.get("voxel_params_hash") != loaded.card.voxel_params.params_hash():
        return [], f"the generator learnt grids of other voxel parameters than {model_ref}'s"
    row = ctx.model_row(model_ref)
    outputs = Outputs.of(row["card"])
    _, target, tolerance = target_arrays(request.target, request.tolerance)
    names = fingerprints = None
    try:
        data = np.load(io.BytesIO(ctx.store.get(row["prefix"] + LIBRARY_FINGERPRINTS)))
        names, fingerprints = [str(n) for n in data["names"]], data["fingerprints"]
    except ObjectNotFoundError:
        pass  # no library fingerprints: the designs come without nearest real structures
    codes_file = GENERATOR_PATH.parent / LIBRARY_CODES_FILE
    codes = LatentCodes.load(str(codes_file)) if codes_file.is_file() and start_names else None
    start = None
    if codes is not None and codes.codes.shape[1] == vae.latent_dim:  # codes of another generator: no start
        start = codes.start(list(start_names), head if loaded.needs_density else None)
    matched = design_and_match(vae, loaded, outputs.quantity_matrix(quantity_keys(outputs, request.target)),
                               target, tolerance, names, fingerprints,
                               designs=request.generate, particles=PARTICLES, iterations=ITERATIONS,
                               seed=request.seed, clip=float(info.get("clip") or 100.0), nearest=NEAREST,
                               density=head, volumetric=request.units == CM3_STP_PER_CM3, start=start)
    out = []
    for i, m in enumerate(matched):
        buffer = io.BytesIO()
        np.save(buffer, m.design.grid)
        ctx.store.put(design_grid_key(job_id, i), buffer.getvalue())
        out.append({"index": i, "predicted": {q: float(m.predicted[j]) for j, q in enumerate(request.target)},
                    "uncertainty": None if np.isnan(m.sigma).any() else {q: float(m.sigma[j])
                                                                           for j, q in enumerate(request.target)},
                    "in_domain": m.in_domain, "cost": m.design.cost, "density_g_cm3": m.design.density_g_cm3,
                    "nearest": [{"name": n, "distance": d} for n, d in m.nearest],
                    "grid": f"/jobs/{job_id}/designs/{i}.npy", "picture": f"/jobs/{job_id}/designs/{i}.png"})
    density_note = ("each with a crystal density drawn from the generator's p(density | landscape) and searched "
                    "with it (density_g_cm3)" if loaded.needs_density else "a landscape has no crystal density")
    note = ("energy landscapes decoded from the generator's latent space, searched by particle swarms against the "
            "predictor, started from the latent codes of the best-ranked library structures and pulled into its "
            "applicability domain (in_domain says whether the swarm got there); "
            f"values in {request.units} ({density_note}){_scorer_note(loaded)}; not crystals: their nearest real "
            "structures (RetNet fingerprint distance, standardized as the applicability domain) are the ones to "
            "simulate")
    return out, note


def _scorer_note(loaded: Any) -> str:
    """What scores a design when it is not the model as served (a hybrid whose trees read the crystal itself)."""
    from models.inverse_design import landscape_trees

    if loaded.trees is None or landscape_trees(loaded) is not None:
        return ""
    return (f"; scored by {loaded.ref}'s network alone, without σ (it is calibrated on the blend): its trees read "
            f"{', '.join(loaded.trees.crystal_blocks)} of the crystal, which a landscape does not have")
