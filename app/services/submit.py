"""Submitting predictions, screenings and training jobs: validate, store, commit, then enqueue."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import queue
from app.core.config import Settings
from app.db.tables import Job, JobItem, JobKind, JobStatus, ModelVersion, Prediction, Structure, new_id, utcnow
from app.services import leases
from app.services.errors import ConflictError, TooManyRequestsError, UnprocessableError
from app.services.keys import LOCAL, Caller
from app.services.registry import registry_name, resolve_model
from app.services.uploads import FileUpload, StoredUpload, stem, store_file, training_zip_contents
from app.storage import ObjectStore, inputs_stored, raw_key
from models.descriptors import card_crystal_blocks
from models.units import CM3_STP_PER_CM3, MOL_PER_KG

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """A file received by the API."""

    filename: str
    data: bytes


def store_raw(store: ObjectStore, upload: Upload | FileUpload) -> str:
    """Keep the raw upload (content-addressed) and return its key (a spooled file is streamed)."""
    if isinstance(upload, FileUpload):
        return store_file(store, upload)
    key = raw_key(hashlib.sha256(upload.data).hexdigest(), upload.filename)
    if not store.exists(key):
        store.put(key, upload.data)
    return key


#: Characters of the ``structure.name`` and ``structure.formula`` columns.
STRUCTURE_TEXT_CHARS = 300


def upsert_structures(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert structure rows (``sha256, name, formula, n_atoms, raw_key``) unless they exist (concurrency-safe).

    Name and formula are cut to the column width (a hostile CIF can have a formula of any length).
    """
    if not rows:
        return
    unique = [{**r, "name": str(r["name"])[:STRUCTURE_TEXT_CHARS], "formula": str(r["formula"])[:STRUCTURE_TEXT_CHARS]}
              for r in {r["sha256"]: r for r in rows}.values()]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Structure).values(unique)
    if all("density_g_cm3" in r for r in unique):  # rows stored before densities were kept get theirs
        statement = statement.on_conflict_do_update(
            index_elements=["sha256"], set_={"density_g_cm3": statement.excluded.density_g_cm3},
            where=Structure.density_g_cm3.is_(None))
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["sha256"])
    session.execute(statement)


def upsert_structure(session: Session, *, sha256: str, name: str, formula: str, n_atoms: int, raw: str) -> None:
    """One structure row (see :func:`upsert_structures`)."""
    upsert_structures(session, [{"sha256": sha256, "name": name, "formula": formula, "n_atoms": n_atoms,
                                 "raw_key": raw}])


def _content_digest(upload: Upload | StoredUpload | FileUpload) -> bytes:
    """sha256 of an upload's bytes (stored and spooled uploads carry it: they are not read again)."""
    if isinstance(upload, Upload):
        return hashlib.sha256(upload.data).digest()
    return bytes.fromhex(upload.sha256)


def request_fingerprint(kind: str, uploads: list[Any], **params: Any) -> str:
    """sha256 of what a request asks for: a retry under the same ``Idempotency-Key`` must ask the same.

    File names, the sha256 of each file's bytes and the parameters; the same bytes as :class:`Upload` or as
    :class:`StoredUpload` (or :class:`FileUpload`) give the same fingerprint.
    """
    h = hashlib.sha256(kind.encode())
    for u in uploads:
        h.update(u.filename.encode(errors="replace"))
        h.update(_content_digest(u))
    h.update(json.dumps(params, sort_keys=True, default=str).encode())
    return h.hexdigest()


def scoped_key(caller: Caller, idempotency_key: str | None) -> str | None:
    """The stored form of a client's ``Idempotency-Key``: scoped to its owner (two keys never collide)."""
    return f"{caller.name or ''}/{idempotency_key}" if idempotency_key else None


def check_units(card: dict[str, Any], units: str) -> None:
    """422 unless ``units`` can express this model's output (cm³(STP)/cm³ needs a model in mol/kg)."""
    if units == MOL_PER_KG:
        return
    model_units = sorted({str(t.get("unit")) for t in card.get("targets") or [{}]})
    if units != CM3_STP_PER_CM3 or model_units != [MOL_PER_KG]:
        raise UnprocessableError(f"units={units!r}: this model predicts {', '.join(map(repr, model_units))}; "
                                 f"{CM3_STP_PER_CM3} is available for models whose every output is in {MOL_PER_KG}")


def check_quota(session: Session, settings: Settings, caller: Caller) -> None:
    """429 when a key already has ``auth.max_active_jobs`` jobs queued or running (the local user has no quota)."""
    if caller.name is None:
        return
    limit = settings.auth.max_active_jobs
    with session.begin():
        active = session.scalar(select(func.count()).select_from(Job).where(
            Job.owner == caller.name, Job.status.in_((JobStatus.queued, JobStatus.running)))) or 0
    if active >= limit:
        raise TooManyRequestsError(f"key '{caller.name}' has {active} jobs queued or running; the limit is {limit}: "
                                 "wait for one to finish or cancel one", retry_after=10)


def existing_job(session: Session, idempotency_key: str | None, fingerprint: str) -> str | None:
    """The job an earlier request with this ``Idempotency-Key`` created (422 when it asked something else)."""
    if not idempotency_key:
        return None
    with session.begin():
        row = session.execute(select(Job.id, Job.params).where(Job.idempotency_key == idempotency_key)).first()
    if row is None:
        return None
    if (row.params or {}).get("request_sha256") != fingerprint:
        raise UnprocessableError(f"Idempotency-Key '{idempotency_key.split('/', 1)[-1]}' was already used for a "
                                 "different request "
                                 f"(job {row.id}); use a new key for a new request")
    return str(row.id)


def _commit_job(session: Session, idempotency_key: str | None, fingerprint: str, build: Any) -> tuple[str, bool]:
    """Run ``build(session) -> job_id`` in a transaction; on an ``Idempotency-Key`` race return the winner's job.

    Returns (job_id, created).
    """
    try:
        with session.begin():
            return build(session), True
    except IntegrityError:
        found = existing_job(session, idempotency_key, fingerprint)
        if found is None:
            raise
        return found, False


def _dispatch(send: Any, *args: Any) -> None:
    """Send the first task of committed work. A broker that stays down is not the client's problem: the rows are
    committed and the sweeper sends them once it is back (exactly once: tasks lease their items)."""
    try:
        send(*args)
    except queue.broker_errors() as exc:
        log.warning("broker unreachable after retries (%s); the sweeper will send this work", exc)


def _cached_prediction(session: Session, sha: str, model: Any) -> Prediction | None:
    return session.scalars(select(Prediction).where(Prediction.structure_sha256 == sha,
                                                    Prediction.model_id == model.id,
                                                    Prediction.params_hash == model.params_hash)
                           .order_by(Prediction.created_at).limit(1)).first()


def submit_prediction(session: Session, settings: Settings, store: ObjectStore, upload: Upload | FileUpload,
                      model_ref: str | None, idempotency_key: str | None = None, caller: Caller = LOCAL,
                      units: str = MOL_PER_KG) -> str:
    """Store the CIF and create the job; the CIF is never parsed here (the voxels worker parses it, under
    ``pipeline.parse_timeout_s``; a structure error fails the item, which the route answers with 422).

    The very same bytes parsed before keep their structure hash: predicted by the same model before, they are
    answered from the prediction cache (the job is final at once), with a cached grid they go straight to
    inference; anything else is sent to the voxels queue. A :class:`FileUpload` (the route's) is hashed and
    stored from its spooled file, never read whole into memory.
    """
    idempotency_key = scoped_key(caller, idempotency_key)
    key = raw_key(_content_digest(upload).hex(), upload.filename)
    with session.begin():
        model = resolve_model(session, model_ref, settings.default_model, caller)
        check_units(model.card, units)
        parsed = session.execute(parsed_uploads([key])).first()
        sha = parsed.sha256 if parsed is not None else None
        cached = _cached_prediction(session, sha, model) if sha else None
        cached_values = _copied_prediction(cached) if cached is not None else None
        session.expunge(model)
    fingerprint = request_fingerprint("predict", [upload], model=model.ref,
                                      **({} if units == MOL_PER_KG else {"units": units}))
    if (found := existing_job(session, idempotency_key, fingerprint)) is not None:
        return found
    store_raw(store, upload)
    grid_cached = sha is not None and (cached_values is not None
                                       or inputs_stored(store, sha, model.params_hash, card_crystal_blocks(model.card)))
    parse_ms = 0.0 if sha is not None else None  # known bytes: nothing to parse; else the worker measures it

    def build(s: Session) -> str:
        now = utcnow()
        final = cached_values is not None
        job = Job(kind=JobKind.predict, status=JobStatus.succeeded if final else JobStatus.queued,
                  model_ref=model.ref, progress_total=1, progress_done=1 if final else 0, input_key=key,
                  params={"request_sha256": fingerprint, "prediction_cache_hit": final, "units": units},
                  idempotency_key=idempotency_key, owner=caller.name, started_at=now if final else None,
                  finished_at=now if final else None)
        s.add(job)
        s.flush()
        item = JobItem(job_id=job.id, position=0, name=upload.filename, raw_key=key, structure_sha256=sha,
                       parse_ms=parse_ms, cache_hit=True if grid_cached else None,
                       voxelize_ms=0.0 if grid_cached else None,
                       stage=leases.INFERENCE_STAGE if grid_cached else leases.VOXELS_STAGE,
                       status=JobStatus.succeeded if final else JobStatus.queued,
                       inference_ms=0.0 if final else None)
        s.add(item)
        s.flush()
        if final:
            s.add(Prediction(item_id=item.id, structure_sha256=sha, model_id=model.id,
                             params_hash=model.params_hash, **cached_values))
        return str(job.id)

    if cached_values is None:  # a prediction-cache hit is final at once: it never counts against the quota
        check_quota(session, settings, caller)
    job_id, created = _commit_job(session, idempotency_key, fingerprint, build)
    if created and cached_values is None:
        with session.begin():
            item_id = session.scalars(select(JobItem.id).where(JobItem.job_id == job_id)).one()
        _dispatch(queue.enqueue_predict if grid_cached else queue.enqueue_voxelize, [item_id], settings)
    return job_id


def check_model(session: Session, settings: Settings, model_ref: str | None, caller: Caller = LOCAL,
                units: str = MOL_PER_KG) -> str:
    """The model a request would use (422 unknown or units it cannot give, 503 none registered): checked before
    its files are stored."""
    with session.begin():
        model = resolve_model(session, model_ref, settings.default_model, caller)
        check_units(model.card, units)
        return str(model.ref)


def submit_screening(session: Session, settings: Settings, store: ObjectStore, uploads: list[StoredUpload],
                     model_ref: str | None, name: str | None, idempotency_key: str | None = None,
                     caller: Caller = LOCAL, units: str = MOL_PER_KG) -> str:
    """One job, one item per CIF; the workers parse and voxelize every item (a bad CIF fails its item), except
    the exact bytes of an earlier upload, which keep their structure hash and go straight to inference.

    ``uploads`` are already in storage (the route stores each file or zip member as soon as it is read, see
    :func:`app.services.uploads.store_zip_cifs`), so a screening never holds its CIFs in memory.
    """
    idempotency_key = scoped_key(caller, idempotency_key)
    with session.begin():
        model = resolve_model(session, model_ref, settings.default_model, caller)
        check_units(model.card, units)
        model_ref_resolved, params_hash = model.ref, model.params_hash
    fingerprint = request_fingerprint("screening", uploads, model=model_ref_resolved, name=name,
                                      **({} if units == MOL_PER_KG else {"units": units}))
    if (found := existing_job(session, idempotency_key, fingerprint)) is not None:
        return found
    keys = [u.key for u in uploads]
    item_ids = [new_id() for _ in uploads]
    # bytes parsed before whose grid for this model's voxel parameters was built: straight to inference
    known = known_structures(session, keys, params_hash)

    def build(s: Session) -> str:
        job = Job(kind=JobKind.screening, status=JobStatus.queued, model_ref=model_ref_resolved, name=name,
                  progress_total=len(uploads), params={"files": len(uploads), "request_sha256": fingerprint,
                                                       "units": units},
                  idempotency_key=idempotency_key, owner=caller.name)
        s.add(job)
        s.flush()
        now = utcnow()
        s.execute(insert(JobItem), [
            {"id": item_id, "job_id": job.id, "position": i, "name": u.filename, "raw_key": k,
             "structure_sha256": known.get(k), "parse_ms": 0.0 if k in known else None,
             "status": JobStatus.queued, "stage": leases.INFERENCE_STAGE if k in known else leases.VOXELS_STAGE,
             "attempts": 0, "created_at": now, "updated_at": now}
            for i, (item_id, u, k) in enumerate(zip(item_ids, uploads, keys, strict=True))
        ])
        return str(job.id)

    check_quota(session, settings, caller)
    job_id, created = _commit_job(session, idempotency_key, fingerprint, build)
    if created:
        to_inference = [i for i, k in zip(item_ids, keys, strict=True) if k in known]
        to_voxels = [i for i, k in zip(item_ids, keys, strict=True) if k not in known]
        if to_inference:
            _dispatch(queue.enqueue_predict, to_inference, settings)
        if to_voxels:
            _dispatch(queue.enqueue_voxelize, to_voxels, settings)
    return job_id


#: Raw keys per ``IN (…)`` query (well under SQLite's and PostgreSQL's bound-parameter limits).
KNOWN_QUERY_CHUNK = 500


def known_structures(session: Session, raw_keys: list[str], params_hash: str) -> dict[str, str]:
    """``raw_key → structure sha256`` of uploads parsed before (with their density kept) and predicted before with
    these voxel parameters (so their grid was built): they skip the voxels stage.

    Their grids are not looked up in storage here (that would be one storage call per file in the request): the
    inference task reads each one and rebuilds the rare one that was evicted since.
    """
    found: dict[str, str] = {}
    unique = list(dict.fromkeys(raw_keys))
    gridded = select(Prediction.id).where(Prediction.structure_sha256 == Structure.sha256,
                                          Prediction.params_hash == params_hash).exists()
    with session.begin():
        for first in range(0, len(unique), KNOWN_QUERY_CHUNK):
            chunk = unique[first:first + KNOWN_QUERY_CHUNK]
            found.update(session.execute(parsed_uploads(chunk).where(gridded)).all())
    return found


def parsed_uploads(raw_keys: Collection[str]) -> Select[tuple[str, str]]:
    """``SELECT raw_key, sha256`` of the uploads among ``raw_keys`` parsed before: these exact bytes keep their
    structure hash and skip the parser. A structure stored before densities were kept is parsed once more (which
    fills its density in). The one definition of "known bytes" for the API and every pipeline stage."""
    return select(Structure.raw_key, Structure.sha256).where(Structure.raw_key.in_(list(raw_keys)),
                                                             Structure.density_g_cm3.is_not(None))


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
    test_fraction: float = 0.0
    vibration_copies: int = 0
    vibration_amplitude: float | None = None
    gas: str | None = None
    temperature_k: float | None = None
    pressure_bar: float | None = None
    descriptors: tuple[str, ...] = ()
    input_clip: float | None = None
    trees: bool = False


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


def submit_training(session: Session, settings: Settings, store: ObjectStore, archive: Upload | FileUpload,
                    labels: Upload | None, request: TrainingRequest, idempotency_key: str | None = None,
                    caller: Caller = LOCAL) -> str:
    """Validate the zip and labels (422 with the reason), store them, create the job, enqueue ``training.run``."""
    idempotency_key = scoped_key(caller, idempotency_key)
    fingerprint = request_fingerprint("training", [archive] + ([labels] if labels else []),
                                      **dataclasses.asdict(request))
    if (found := existing_job(session, idempotency_key, fingerprint)) is not None:
        return found
    # members read one at a time from the spooled zip; only CIF names and the CSVs are kept
    cifs, csvs = training_zip_contents(archive.data if isinstance(archive, Upload) else archive.file, settings)
    if not cifs:
        raise UnprocessableError("the training zip holds no .cif files")
    if labels is None:
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
    if request.input_clip is not None and not request.base_model:
        raise UnprocessableError(f"input_clip={request.input_clip:g} replaces a base model's clip while fine-tuning: "
                                 "give base_model too (a model trained from scratch clips at 100)")
    if request.trees and len(request.targets) != 1:
        raise UnprocessableError(f"trees=true blends the network with trees fitted to one target; this job has "
                                 f"{len(request.targets)} ({', '.join(request.targets)})")
    table = _labels_table(labels.data, request.targets)
    names = {stem(c) for c in cifs}
    labelled = names & {str(n) for n in table["name"]}
    if len(labelled) < 2:
        raise UnprocessableError(
            f"only {len(labelled)} CIF(s) in the zip have a label in the CSV; at least 2 are needed "
            "(the 'name' column must match the CIF file names without .cif)"
        )
    owner = None if caller.admin else caller.name  # a key's models live in its namespace: owner/name
    with session.begin():
        base_ref = None
        if request.base_model:
            base_ref = resolve_model(session, request.base_model, caller=caller).ref
        if request.model_version:
            ref = f"{registry_name(request.model_name, owner)}:{request.model_version}"
            if session.scalar(select(ModelVersion.id).where(ModelVersion.ref == ref)) is not None:
                raise ConflictError(f"model {ref} already exists; choose another version (or leave it out for a "
                                    "new one)")
    zip_key = store_raw(store, archive)
    labels_key = store_raw(store, labels)
    params = {
        "targets": request.targets, "epochs": request.epochs, "batch_size": request.batch_size,
        "learning_rate": request.learning_rate, "augment": request.augment, "translate": request.translate,
        "val_fraction": request.val_fraction, "test_fraction": request.test_fraction,
        "vibration_copies": request.vibration_copies, "vibration_amplitude": request.vibration_amplitude,
        "gas": request.gas, "temperature_k": request.temperature_k, "pressure_bar": request.pressure_bar,
        "descriptors": list(request.descriptors), "seed": request.seed, "base_model": base_ref,
        "freeze": request.freeze, "input_clip": request.input_clip, "trees": request.trees,
        "model_name": request.model_name,
        "model_version": request.model_version, "unit": request.unit, "property": request.property,
        "labels_key": labels_key, "n_cifs": len(cifs), "n_labelled": len(labelled), "request_sha256": fingerprint,
        "owner": owner,
    }

    job = Job(kind=JobKind.training, status=JobStatus.queued, name=request.model_name, model_ref=base_ref,
              input_key=zip_key, params=params, progress_total=request.epochs,
              details={"phase": "queued"}, idempotency_key=idempotency_key, owner=caller.name)
    return submit_whole_job(session, settings, caller, job, fingerprint, queue.enqueue_training)


def submit_whole_job(session: Session, settings: Settings, caller: Caller, job: Job, fingerprint: str,
                     enqueue: Any) -> str:
    """Commit a job that runs as one task (training, design) within the caller's quota, then send its task.

    ``job`` carries its ``idempotency_key``: a concurrent retry with the same key gets the first job's id.
    """
    def build(s: Session) -> str:
        s.add(job)
        s.flush()
        return str(job.id)

    check_quota(session, settings, caller)
    job_id, created = _commit_job(session, job.idempotency_key, fingerprint, build)
    if created:
        _dispatch(enqueue, job_id, settings)
    return job_id


def _copied_prediction(cached: Prediction) -> dict[str, Any]:
    """The fields of a cached prediction that a new item's copy carries (value, σ, domain, neighbours)."""
    return {"value": cached.value, "values": list(cached.values), "uncertainty": cached.uncertainty,
            "uncertainties": cached.uncertainties, "in_domain": cached.in_domain, "neighbours": cached.neighbours}
