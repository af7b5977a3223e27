"""``training.run``: voxelize the labelled CIFs (cache-aware), train RetNet, evaluate, save, register.

The steps themselves are pure functions of :mod:`models.training_job`; this module is their IO: the job row
(start, progress details, success or failure), the uploaded zip and labels in storage, the voxel cache and the
model registry.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from app.db.session import session_scope
from app.db.tables import FINAL, Job
from app.services import progress
from app.services.registry import register_model_dir
from app.services.uploads import read_zip, stem
from app.storage import decode_grid, encode_grid, voxel_key
from worker.runtime import WorkerContext

log = logging.getLogger(__name__)


class JobNoLongerActiveError(Exception):
    """The training job was cancelled (or finished elsewhere) while it ran: stop without registering."""


def _details(ctx: WorkerContext, job_id: str, details: dict[str, Any], **values: Any) -> None:
    with session_scope(ctx.db_url) as session:
        if not progress.set_job_details(session, job_id, details, **values):
            raise JobNoLongerActiveError(job_id)


#: Epochs of loss curve kept in a training job's live ``details.history``.
MAX_HISTORY = 1000


def run_training(ctx: WorkerContext, job_id: str) -> None:
    """Run one training job end to end; a failure marks the job failed with the reason."""
    with session_scope(ctx.db_url) as session:
        job = session.get(Job, job_id)
        if job is None or job.status in FINAL:
            return
        progress.start_job(session, job_id)
        params, zip_key = dict(job.params), job.input_key
    try:
        _run(ctx, job_id, params, zip_key or "")
    except JobNoLongerActiveError:
        log.info("training job %s is no longer active (cancelled): stopped", job_id)
    except Exception as exc:
        from worker.tasks import fail_job_unless_transient

        fail_job_unless_transient(ctx, job_id, exc, "training")


def _grid_cache(ctx: WorkerContext, voxel_params: Any) -> Any:
    """``grid_for(crystal)`` through the service's voxel cache (the store): read the grid, or compute and store it."""
    from models.voxels import compute_voxels

    store, params_hash = ctx.store, voxel_params.params_hash()

    def grid_for(crystal: Any) -> np.ndarray:
        key = voxel_key(crystal.sha256, params_hash)
        if store.exists(key):
            return decode_grid(store.get(key))
        grid = compute_voxels(crystal, voxel_params, threads=ctx.voxel_threads)
        store.put(key, encode_grid(grid))
        return grid

    return grid_for


def _run(ctx: WorkerContext, job_id: str, params: dict[str, Any], zip_key: str) -> None:
    """The IO around the pure steps of :mod:`models.training_job`: storage in, progress out, registry at the end."""
    from models.hybrid import TREE_CRYSTAL_BLOCKS
    from models.training_job import build_card, load_dataset, save_job_model, train_and_evaluate, voxel_params_for

    store = ctx.store
    targets: list[str] = list(params["targets"])
    base_ref = params.get("base_model")
    base = ctx.model(base_ref) if base_ref else None
    voxel_params = voxel_params_for(base)

    members = read_zip(store.get(zip_key), ctx.settings, suffixes=(".cif",))[".cif"]
    labels_csv = store.get(params["labels_key"])

    def on_structure(done: int, total: int, skipped: list[dict[str, str]]) -> None:
        if done % 5 == 1 or done == total:
            _details(ctx, job_id, {"phase": "voxelizing", "voxelized": done, "structures": total,
                                   "skipped": skipped[-20:]})

    t0 = time.perf_counter()
    dataset = load_dataset([(stem(m.name), m.data) for m in members], labels_csv, targets, voxel_params,
                           grid_for=_grid_cache(ctx, voxel_params), progress=on_structure,
                           vibration_copies=int(params.get("vibration_copies") or 0),
                           vibration_amplitude=params.get("vibration_amplitude"),
                           crystal_blocks=TREE_CRYSTAL_BLOCKS if params.get("trees") else ())
    skipped = dataset.skipped
    log.info("job %s: %d structures voxelized in %.1f s (%d skipped)", job_id, len(dataset),
             time.perf_counter() - t0, len(skipped))

    epochs = int(params["epochs"])

    curve: list[dict[str, Any]] = []  # the loss curves so far (the dashboard draws them live)

    def on_epoch(event: dict[str, Any]) -> None:
        curve.append({k: event.get(k) for k in ("epoch", "train_loss", "val_loss", "val_r2")})
        _details(ctx, job_id, {"phase": "training", **event, "history": curve[-MAX_HISTORY:],
                               "skipped": skipped[-20:]},
                 progress_done=int(event.get("epoch") or 0), progress_total=epochs)

    outcome = train_and_evaluate(dataset, params, base_model=base, device=ctx.device, progress=on_epoch)
    sizes = {"n_train": outcome.n_train, "n_val": outcome.n_val, "n_test": outcome.n_test}
    log.info("job %s: trained on %d, validated on %d", job_id, outcome.n_train, outcome.n_val)
    _details(ctx, job_id, {"phase": "evaluating", **outcome.last_epoch, **sizes, "history": curve[-MAX_HISTORY:],
                           "skipped": skipped[-20:]})

    version = params.get("model_version") or datetime.now(UTC).strftime("%Y%m%d%H%M%S") + f"-{job_id[:8]}"
    card = build_card(dataset, outcome, params, version=version, source=f"training job {job_id}",
                      voxel_params=voxel_params)
    with tempfile.TemporaryDirectory(prefix="retnet-train-") as tmp:
        folder = save_job_model(Path(tmp) / "model", outcome, card)
        with session_scope(ctx.db_url) as session:
            if progress.is_final(session, job_id):  # cancelled during the last epoch: register nothing
                raise JobNoLongerActiveError(job_id)
            ref = register_model_dir(session, store, folder, training_job_id=job_id, owner=params.get("owner"),
                                     exist_ok=False).ref
            progress.set_job_details(session, job_id, {"phase": "done", **outcome.last_epoch, **sizes,
                                                       "history": curve[-MAX_HISTORY:],
                                                       "skipped": skipped[-20:]})
            progress.succeed_job(session, job_id, {"model": ref, "metrics": outcome.metrics,
                                                   "evaluated_on": outcome.evaluated_on, **sizes,
                                                   "skipped": skipped, "best_epoch": int(outcome.result.best_epoch)})
    log.info("job %s: registered %s", job_id, ref)
