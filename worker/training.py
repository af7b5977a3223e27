"""``training.run``: voxelize the labelled CIFs (cache-aware), train RetNet, evaluate, save, register."""

from __future__ import annotations

import io
import logging
import math
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
        from worker.tasks import transient_errors

        if isinstance(exc, transient_errors()):
            raise
        log.exception("training job %s failed", job_id)
        with session_scope(ctx.db_url) as session:
            progress.fail_job(session, job_id, f"{type(exc).__name__}: {exc}")


def _run(ctx: WorkerContext, job_id: str, params: dict[str, Any], zip_key: str) -> None:
    import pandas as pd

    from models.errors import StructureError
    from models.params import VoxelParams
    from models.structure import parse_cif
    from models.voxels import compute_voxels

    store = ctx.store
    targets: list[str] = list(params["targets"])
    base_ref = params.get("base_model")
    base = ctx.model(base_ref) if base_ref else None
    if base is not None:
        voxel_params = VoxelParams(**base.card.voxel_params.model_dump()) if hasattr(base.card, "voxel_params") \
            else VoxelParams()
    else:
        voxel_params = VoxelParams()
    ph = voxel_params.params_hash()

    members = read_zip(store.get(zip_key), ctx.settings, suffixes=(".cif",))[".cif"]
    table = pd.read_csv(io.BytesIO(store.get(params["labels_key"])))
    table["name"] = table["name"].astype(str)
    labels = table.drop_duplicates("name").set_index("name")
    todo = [m for m in members if stem(m.name) in labels.index]
    grids, ys, names, skipped = [], [], [], []
    t0 = time.perf_counter()
    for i, m in enumerate(todo):
        name = stem(m.name)
        y = labels.loc[name, targets].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(y)):
            skipped.append({"name": name, "error": "missing label"})
            continue
        try:
            crystal = parse_cif(m.data, name=name)
            key = voxel_key(crystal.sha256, ph)
            if store.exists(key):
                grid = decode_grid(store.get(key))
            else:
                grid = compute_voxels(crystal, voxel_params, threads=ctx.voxel_threads)
                store.put(key, encode_grid(grid))
        except StructureError as exc:
            skipped.append({"name": name, "error": str(exc)})
            continue
        grids.append(grid)
        ys.append(y)
        names.append(name)
        if i % 5 == 0 or i == len(todo) - 1:
            _details(ctx, job_id, {"phase": "voxelizing", "voxelized": i + 1, "structures": len(todo),
                                   "skipped": skipped[-20:]})
    if len(grids) < 2:
        raise ValueError(f"only {len(grids)} usable labelled structures; skipped: {skipped[:10]}")
    x = np.stack(grids).astype(np.float32)
    y = np.stack(ys)
    n = len(x)
    val_fraction = float(params.get("val_fraction") or 0.0)
    seed = int(params.get("seed") or 0)
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, math.ceil(val_fraction * n))) if val_fraction > 0 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    log.info("job %s: %d structures (%d train, %d val), voxelized in %.1f s", job_id, n, len(train_idx), n_val,
             time.perf_counter() - t0)

    from models.training import TrainConfig, train_retnet

    epochs = int(params["epochs"])
    config = TrainConfig(
        epochs=epochs, batch_size=int(params["batch_size"]), learning_rate=float(params["learning_rate"]),
        augment=bool(params["augment"]), translate=bool(params.get("translate", False)), seed=seed,
        device=ctx.device, freeze=params.get("freeze"), threads=None,
    )
    history: list[dict[str, Any]] = []

    def on_epoch(event: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in dict(event).items()}
        history.append(clean)
        _details(ctx, job_id, {"phase": "training", **clean, "n_train": int(len(train_idx)), "n_val": int(n_val),
                               "skipped": skipped[-20:]},
                 progress_done=int(clean.get("epoch", len(history))), progress_total=epochs)

    val = (x[val_idx], y[val_idx]) if n_val else None
    result = train_retnet(x[train_idx], y[train_idx], config, val=val, base_model=base, progress=on_epoch)
    last = history[-1] if history else {}
    _details(ctx, job_id, {"phase": "evaluating", **last, "n_train": int(len(train_idx)), "n_val": int(n_val),
                           "skipped": skipped[-20:]})

    from models.artifacts import load_model

    eval_x, eval_y = (x[val_idx], y[val_idx]) if n_val else (x[train_idx], y[train_idx])
    with tempfile.TemporaryDirectory(prefix="retnet-train-") as tmp:
        version = params.get("model_version") or datetime.now(UTC).strftime("%Y%m%d%H%M%S") + f"-{job_id[:8]}"
        card_fields = {
            "name": params["model_name"], "version": version, "voxel_params": voxel_params, "targets": targets,
            "unit": params.get("unit") or "", "property": params.get("property"),
            "training": {"source": f"training job {job_id}", "size": int(len(train_idx)), "n_val": int(n_val),
                          "split_seed": seed, "label_hash": _label_hash(names, y), "structures": n,
                          "skipped": len(skipped), "epochs": epochs, "base_model": base_ref,
                          "augment": config.augment, "translate": config.translate},
        }
        folder = Path(tmp) / "model"
        _save(folder, result, card_fields, metrics={})
        loaded = load_model(folder, device="cpu")
        pred = np.asarray(loaded.predict(eval_x), dtype=np.float64).reshape(len(eval_x), -1)
        metrics = _metrics(eval_y, pred, targets)
        metrics_note = "validation split" if n_val else "training set (no validation split requested)"
        _save(folder, result, card_fields, metrics={**metrics, "evaluated_on": metrics_note,
                                                     "n_eval": int(len(eval_x))})
        _plots(folder, eval_y, pred, targets, params.get("unit") or "", history)
        with session_scope(ctx.db_url) as session:
            if progress.is_final(session, job_id):  # cancelled during the last epoch: register nothing
                raise JobNoLongerActiveError(job_id)
            row = register_model_dir(session, store, folder, training_job_id=job_id)
            ref = row.ref
            progress.set_job_details(session, job_id, {"phase": "done", **last, "n_train": int(len(train_idx)),
                                                       "n_val": int(n_val), "skipped": skipped[-20:]})
            progress.succeed_job(session, job_id, {"model": ref, "metrics": metrics, "evaluated_on": metrics_note,
                                                   "n_train": int(len(train_idx)), "n_val": int(n_val),
                                                   "skipped": skipped, "best_epoch": int(result.best_epoch)})
    log.info("job %s: registered %s", job_id, ref)


def _label_hash(names: list[str], y: np.ndarray) -> str:
    import hashlib

    payload = "\n".join(f"{n},{','.join(f'{v:.6g}' for v in row)}" for n, row in sorted(zip(names, y.tolist(),
                                                                                              strict=True)))
    return hashlib.sha256(payload.encode()).hexdigest()


def _metrics(y_true: np.ndarray, y_pred: np.ndarray, targets: list[str]) -> dict[str, Any]:
    from models.metrics import regression_metrics

    out: dict[str, Any] = {}
    for j, target in enumerate(targets):
        if len(y_true) >= 2:
            m = regression_metrics(y_true[:, j], y_pred[:, j], n_boot=1000, seed=0)
            entry = {k: _jsonable(v) for k, v in m.items()}
        else:
            entry = {}
        if len(targets) == 1:
            out.update(entry)
        else:
            out[target] = entry
    return out


def _jsonable(v: Any) -> Any:
    if hasattr(v, "model_dump"):
        v = v.model_dump()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def _save(folder: Path, result: Any, fields: dict[str, Any], metrics: dict[str, Any]) -> None:
    from models.artifacts import ModelCard, Target, save_model

    targets = [Target(name=t, unit=fields["unit"], property=fields["property"] or t) for t in fields["targets"]]
    card = ModelCard(
        name=fields["name"], version=fields["version"], targets=targets, voxel_params=fields["voxel_params"],
        training_data=fields["training"], metrics=metrics,
    )
    save_model(folder, result, card, overwrite=True)


def _plots(folder: Path, y_true: np.ndarray, y_pred: np.ndarray, targets: list[str], unit: str,
           history: list[dict[str, Any]]) -> None:
    try:
        from models.plots import history_plot, parity_plot

        parity_plot(y_true[:, 0], y_pred[:, 0], folder / "parity.png", title=f"{targets[0]} (validation)", unit=unit)
        if history:
            history_plot(history, folder / "history.png")
    except Exception:  # noqa: BLE001  (a plot is a nice-to-have; never fail the job for it)
        log.exception("plotting failed")
