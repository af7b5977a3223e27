"""Task bodies: voxelize one item, predict a batch of items, with guarded status updates.

Idempotent: an item already final is skipped, a grid already cached is not recomputed, a prediction row is
inserted once per item, and progress counts each item once (``app.services.progress``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.core import queue
from app.db.session import session_scope
from app.db.tables import FINAL, Job, JobItem, ModelVersion, Prediction, Structure, new_id
from app.services import progress
from app.services.submit import upsert_structure
from app.services.uploads import stem
from app.storage import ObjectNotFoundError, decode_grid, encode_grid, voxel_key
from worker.runtime import WorkerContext

log = logging.getLogger(__name__)


def _params(card: dict[str, Any]):  # type: ignore[no-untyped-def]
    from models.params import VoxelParams

    return VoxelParams(**(card.get("voxel_params") or {}))


def _grid_for(ctx: WorkerContext, raw_key: str, name: str, sha: str | None, card: dict[str, Any],
              params_hash: str) -> tuple[str, dict[str, Any]]:
    """Make sure the voxel grid is cached; return (structure sha, timings/structure fields)."""
    from models.structure import parse_cif
    from models.voxels import compute_voxels

    store = ctx.store
    info: dict[str, Any] = {}
    if sha is not None and store.exists(voxel_key(sha, params_hash)):
        info.update(cache_hit=True, voxelize_ms=0.0)
        return sha, info
    t0 = time.perf_counter()
    crystal = parse_cif(store.get(raw_key), name=stem(name))
    info.update(parse_ms=(time.perf_counter() - t0) * 1e3, crystal=crystal)
    key = voxel_key(crystal.sha256, params_hash)
    if store.exists(key):
        info.update(cache_hit=True, voxelize_ms=0.0)
        return crystal.sha256, info
    t0 = time.perf_counter()
    grid = compute_voxels(crystal, _params(card), threads=ctx.voxel_threads)
    store.put(key, encode_grid(grid))
    info.update(cache_hit=False, voxelize_ms=(time.perf_counter() - t0) * 1e3)
    return crystal.sha256, info


def voxelize_item(ctx: WorkerContext, item_id: str) -> None:
    """``voxels.compute``: parse the raw CIF, compute (or reuse) the grid, then enqueue inference."""
    from models.errors import StructureError

    with session_scope(ctx.db_url) as session:
        item = session.get(JobItem, item_id)
        if item is None:
            log.warning("voxels.compute: no item %s", item_id)
            return
        if item.status in FINAL:
            return
        job = session.get(Job, item.job_id)
        assert job is not None
        model = session.scalar(select(ModelVersion).where(ModelVersion.ref == job.model_ref))
        progress.start_job(session, job.id)
        progress.start_item(session, item_id)
        job_id, raw, name, sha = job.id, item.raw_key, item.name, item.structure_sha256
        if sha is None:  # these exact bytes were parsed before: reuse their structure hash (skips pymatgen)
            sha = session.scalars(select(Structure.sha256).where(Structure.raw_key == raw)).first()
        if model is None:
            progress.finish_item(session, item_id, job_id, ok=False, error=f"model {job.model_ref} is not registered",
                                 error_code="internal")
            return
        card, params_hash = model.card, model.params_hash
    try:
        sha, info = _grid_for(ctx, raw, name, sha, card, params_hash)
    except StructureError as exc:
        with session_scope(ctx.db_url) as session:
            progress.finish_item(session, item_id, job_id, ok=False, error=str(exc), error_code="structure")
        return
    except ObjectNotFoundError as exc:
        with session_scope(ctx.db_url) as session:
            progress.finish_item(session, item_id, job_id, ok=False, error=f"raw upload missing from storage: {exc}",
                                 error_code="internal")
        return
    crystal = info.pop("crystal", None)
    with session_scope(ctx.db_url) as session:
        if crystal is not None:
            upsert_structure(session, sha256=crystal.sha256, name=crystal.name, formula=crystal.formula,
                             n_atoms=crystal.n_atoms, raw=raw)
        progress.update_item(session, item_id, structure_sha256=sha, **info)
    queue.enqueue_predict([item_id], ctx.settings)


def predict_items(ctx: WorkerContext, item_ids: list[str]) -> None:
    """``inference.predict`` (batched): one forward pass per model over the cached grids of the items."""
    ids = list(dict.fromkeys(item_ids))
    with session_scope(ctx.db_url) as session:
        rows = session.execute(
            select(JobItem.id, JobItem.job_id, JobItem.structure_sha256, JobItem.raw_key, JobItem.name, Job.model_ref)
            .join(Job, Job.id == JobItem.job_id).where(JobItem.id.in_(ids), JobItem.status.not_in(FINAL))
        ).all()
        for r in rows:
            progress.start_job(session, r.job_id)
            progress.start_item(session, r.id)
    groups: dict[str, list[Any]] = {}
    for r in rows:
        groups.setdefault(r.model_ref, []).append(r)
    for ref, items in groups.items():
        _predict_group(ctx, ref, items)


def _fail_all(ctx: WorkerContext, items: list[Any], error: str, code: str = "internal") -> None:
    with session_scope(ctx.db_url) as session:
        for r in items:
            progress.finish_item(session, r.id, r.job_id, ok=False, error=error, error_code=code)


def _predict_group(ctx: WorkerContext, ref: str, items: list[Any]) -> None:
    from models.errors import StructureError

    try:
        row = ctx.model_row(ref)
        loaded = ctx.model(ref)
        params = _params(row["card"])
        check = getattr(loaded, "check_voxel_params", None)
        if check is not None:
            check(params)
    except Exception as exc:  # noqa: BLE001  (a broken model fails its items with the reason)
        log.exception("cannot load model %s", ref)
        _fail_all(ctx, items, f"cannot load model {ref}: {exc}")
        return
    ph = row["params_hash"]
    grids, ready = [], []
    for r in items:
        try:
            sha = r.structure_sha256
            try:
                if sha is None:
                    raise ObjectNotFoundError("no structure yet")
                grid = decode_grid(ctx.store.get(voxel_key(sha, ph)))
            except ObjectNotFoundError:  # evicted or never computed: compute it here
                sha, _info = _grid_for(ctx, r.raw_key, r.name, sha, row["card"], ph)
                grid = decode_grid(ctx.store.get(voxel_key(sha, ph)))
            grids.append(grid)
            ready.append((r, sha))
        except StructureError as exc:
            _fail_all(ctx, [r], str(exc), "structure")
        except Exception as exc:  # noqa: BLE001
            log.exception("item %s: cannot load its grid", r.id)
            _fail_all(ctx, [r], f"cannot load the voxel grid: {exc}")
    if not ready:
        return
    t0 = time.perf_counter()
    try:
        out = np.asarray(loaded.predict(np.stack(grids).astype(np.float32)), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        log.exception("inference failed for %s", ref)
        _fail_all(ctx, [r for r, _ in ready], f"inference failed: {exc}")
        return
    dt_ms = (time.perf_counter() - t0) * 1e3
    if out.ndim == 1:
        out = out[:, None]
    with session_scope(ctx.db_url) as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        for (r, sha), values in zip(ready, out, strict=True):
            vals = [float(v) for v in values]
            if not progress.finish_item(session, r.id, r.job_id, ok=True, structure_sha256=sha, inference_ms=dt_ms,
                                        batch_size=len(ready)):
                continue  # cancelled (or finished by a duplicate delivery) meanwhile: no prediction row
            session.execute(insert(Prediction).values(
                id=new_id(), item_id=r.id, structure_sha256=sha, model_id=row["id"],
                params_hash=ph, value=vals[0], values=vals,
            ).on_conflict_do_nothing(index_elements=["item_id"]))
