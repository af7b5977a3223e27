"""Submitting predictions, screenings and training jobs: validate, store, commit, then enqueue."""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.core import queue
from app.core.config import Settings
from app.db.tables import Job, JobItem, JobKind, JobStatus, Structure
from app.services.errors import UnprocessableError
from app.services.registry import resolve_model
from app.services.uploads import read_zip, stem
from app.storage import ObjectStore, raw_key, voxel_key


@dataclass(frozen=True)
class Upload:
    """A file received by the API."""

    filename: str
    data: bytes


def store_raw(store: ObjectStore, upload: Upload) -> str:
    """Keep the raw upload (content-addressed) and return its key."""
    key = raw_key(hashlib.sha256(upload.data).hexdigest(), upload.filename)
    if not store.exists(key):
        store.put(key, upload.data)
    return key


def upsert_structure(session: Session, *, sha256: str, name: str, formula: str, n_atoms: int, raw: str) -> None:
    """Insert the structure row unless it exists (safe under concurrent workers)."""
    values = {"sha256": sha256, "name": name, "formula": formula, "n_atoms": n_atoms, "raw_key": raw}
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    session.execute(insert(Structure).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))


def submit_prediction(session: Session, settings: Settings, store: ObjectStore, upload: Upload,
                      model_ref: str | None) -> str:
    """Parse the CIF (422 on structure errors), create the job, enqueue voxelization or, on a cache hit, inference."""
    from models.structure import parse_cif

    with session.begin():
        model = resolve_model(session, model_ref, settings.default_model)
        model_ref_resolved, params_hash = model.ref, model.params_hash
    key = raw_key(hashlib.sha256(upload.data).hexdigest(), upload.filename)
    with session.begin():  # the very same bytes were parsed before: reuse the structure hash
        known = session.scalars(select(Structure.sha256).where(Structure.raw_key == key)).first()
    t0 = time.perf_counter()
    crystal = None if known else parse_cif(upload.data, name=stem(upload.filename))
    parse_ms = (time.perf_counter() - t0) * 1e3
    sha = known or crystal.sha256  # type: ignore[union-attr]
    if not store.exists(key):
        store.put(key, upload.data)
    cache_hit = store.exists(voxel_key(sha, params_hash))
    with session.begin():
        if crystal is not None:
            upsert_structure(session, sha256=crystal.sha256, name=crystal.name, formula=crystal.formula,
                             n_atoms=crystal.n_atoms, raw=key)
        job = Job(kind=JobKind.predict, status=JobStatus.queued, model_ref=model_ref_resolved, progress_total=1,
                  input_key=key, params={})
        session.add(job)
        session.flush()
        item = JobItem(job_id=job.id, position=0, name=upload.filename, raw_key=key, structure_sha256=sha,
                       parse_ms=parse_ms, cache_hit=True if cache_hit else None,
                       voxelize_ms=0.0 if cache_hit else None)
        session.add(item)
        session.flush()
        job_id, item_id = job.id, item.id
    if cache_hit:
        queue.enqueue_predict([item_id], settings)
    else:
        queue.enqueue_voxelize([item_id], settings)
    return job_id


def submit_screening(session: Session, settings: Settings, store: ObjectStore, uploads: list[Upload],
                     model_ref: str | None, name: str | None) -> str:
    """One job, one item per CIF; every item is parsed and voxelized by the workers (a bad CIF fails its item)."""
    with session.begin():
        model = resolve_model(session, model_ref, settings.default_model)
        model_ref_resolved = model.ref
    keys = [store_raw(store, u) for u in uploads]
    with session.begin():
        job = Job(kind=JobKind.screening, status=JobStatus.queued, model_ref=model_ref_resolved, name=name,
                  progress_total=len(uploads), params={"files": len(uploads)})
        session.add(job)
        session.flush()
        items = [JobItem(job_id=job.id, position=i, name=u.filename, raw_key=k)
                 for i, (u, k) in enumerate(zip(uploads, keys, strict=True))]
        session.add_all(items)
        session.flush()
        job_id, item_ids = job.id, [i.id for i in items]
    queue.enqueue_voxelize(item_ids, settings)
    return job_id


@dataclass(frozen=True)
class TrainingRequest:
    """Parameters of ``POST /training-jobs``."""

    targets: list[str]
    epochs: int
    batch_size: int
    learning_rate: float
    augment: bool
    val_fraction: float
    seed: int
    base_model: str | None
    freeze: str | None
    model_name: str
    model_version: str | None
    unit: str
    property: str | None
    translate: bool = False


def _labels_table(csv_bytes: bytes, targets: list[str]) -> Any:
    import pandas as pd

    try:
        table = pd.read_csv(io.BytesIO(csv_bytes))
    except Exception as exc:  # noqa: BLE001  (pandas raises many types on bad CSV)
        raise UnprocessableError(f"the labels CSV cannot be read ({exc})") from exc
    if "name" not in table.columns:
        raise UnprocessableError(f"the labels CSV needs a 'name' column; it has {', '.join(map(str, table.columns))}")
    missing = [t for t in targets if t not in table.columns]
    if missing:
        raise UnprocessableError(
            f"target column(s) {', '.join(missing)} not in the labels CSV; columns: "
            f"{', '.join(str(c) for c in table.columns if c != 'name')}"
        )
    return table


def submit_training(session: Session, settings: Settings, store: ObjectStore, archive: Upload,
                    labels: Upload | None, request: TrainingRequest) -> str:
    """Validate the zip and labels (422 with the reason), store them, create the job, enqueue ``training.run``."""
    grouped = read_zip(archive.data, settings, suffixes=(".cif", ".csv"))
    cifs = grouped[".cif"]
    if not cifs:
        raise UnprocessableError("the training zip holds no .cif files")
    if labels is None:
        csvs = grouped[".csv"]
        if len(csvs) != 1:
            raise UnprocessableError(
                "the training zip must hold exactly one labels CSV (name,<target>...) or send it as the "
                f"'labels' field; found {len(csvs)}"
            )
        labels = Upload(csvs[0].name, csvs[0].data)
    if not request.targets:
        raise UnprocessableError("give at least one target column")
    if request.freeze and not request.base_model:
        raise UnprocessableError(f"freeze={request.freeze} keeps layers of a base model fixed: give base_model too "
                                 "(or leave freeze out to train from scratch)")
    table = _labels_table(labels.data, request.targets)
    names = {stem(c.name) for c in cifs}
    labelled = names & {str(n) for n in table["name"]}
    if len(labelled) < 2:
        raise UnprocessableError(
            f"only {len(labelled)} CIF(s) in the zip have a label in the CSV; at least 2 are needed "
            "(the 'name' column must match the CIF file names without .cif)"
        )
    with session.begin():
        base_ref = None
        if request.base_model:
            base_ref = resolve_model(session, request.base_model).ref
    zip_key = store_raw(store, archive)
    labels_key = store_raw(store, labels)
    params = {
        "targets": request.targets, "epochs": request.epochs, "batch_size": request.batch_size,
        "learning_rate": request.learning_rate, "augment": request.augment, "translate": request.translate,
        "val_fraction": request.val_fraction,
        "seed": request.seed, "base_model": base_ref, "freeze": request.freeze, "model_name": request.model_name,
        "model_version": request.model_version, "unit": request.unit, "property": request.property,
        "labels_key": labels_key, "n_cifs": len(cifs), "n_labelled": len(labelled),
    }
    with session.begin():
        job = Job(kind=JobKind.training, status=JobStatus.queued, name=request.model_name, model_ref=base_ref,
                  input_key=zip_key, params=params, progress_total=request.epochs,
                  details={"phase": "queued"})
        session.add(job)
        session.flush()
        job_id = job.id
    queue.enqueue_training(job_id, settings)
    return job_id
