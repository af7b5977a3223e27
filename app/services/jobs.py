"""Reading jobs and their results."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, joinedload

from app.db.tables import Job, JobItem, JobStatus, ModelVersion, Prediction, Structure
from app.schemas import (
    JobAccepted,
    JobPublic,
    PredictionResult,
    PredictionValue,
    Progress,
    ResultsPage,
    StructureInfo,
    Timings,
)
from app.services import progress
from app.services.errors import ConflictError, NotFoundError
from app.services.keys import LOCAL, Caller
from app.services.outputs import VALUE, Outputs, unit_factor
from app.storage import ObjectStore
from models.units import CM3_STP_PER_CM3


def get_job(session: Session, job_id: str, caller: Caller = LOCAL) -> Job:
    """The job row or 404 (also when it belongs to another key: its existence is not disclosed)."""
    job = session.get(Job, job_id)
    if job is None or not caller.can_see(job.owner):
        raise NotFoundError(f"no job with id '{job_id}'")
    return job


def list_jobs(session: Session, caller: Caller, *, status: str | None = None, kind: str | None = None,
              limit: int = 50, offset: int = 0) -> tuple[list[Job], int]:
    """The caller's jobs (an admin's: everyone's), newest first, with the total before pagination."""
    query = select(Job)
    if not caller.admin:
        query = query.where(Job.owner == caller.name)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)))
    return rows, total


def delete_job(session: Session, store: ObjectStore, job_id: str, caller: Caller) -> None:
    """Remove a job with its items, predictions and the uploads no other job still uses.

    A queued or running job is cancelled first (its tasks then find nothing to do). Cached voxel grids stay:
    they are keyed by structure, shared by every job, and removed by retention (``retnet purge``).
    """
    with session.begin():
        job = get_job(session, job_id, caller)
        progress.cancel_job(session, job_id)
        keys = set(session.scalars(select(JobItem.raw_key).where(JobItem.job_id == job_id)))
        if job.input_key:
            keys.add(job.input_key)
        labels_key = (job.params or {}).get("labels_key")
        if labels_key:
            keys.add(str(labels_key))
        session.execute(delete(Prediction).where(Prediction.item_id.in_(select(JobItem.id)
                                                                        .where(JobItem.job_id == job_id))))
        session.execute(delete(JobItem).where(JobItem.job_id == job_id))
        session.execute(delete(Job).where(Job.id == job_id))
        still_used = set(session.scalars(select(JobItem.raw_key).where(JobItem.raw_key.in_(keys))))
        still_used |= set(session.scalars(select(Job.input_key).where(Job.input_key.in_(keys))))
    for key in sorted(keys - still_used):
        store.delete(key)


def job_public(job: Job) -> JobPublic:
    """ORM → API."""
    return JobPublic(
        id=job.id, kind=job.kind, status=job.status,
        progress=Progress(done=job.progress_done, failed=job.progress_failed, total=job.progress_total),
        created_at=job.created_at, updated_at=job.updated_at, started_at=job.started_at,
        finished_at=job.finished_at, error=job.error, name=job.name,
        model=job.model_ref, details=job.details or {}, result=job.result,
    )


def cancel(session: Session, job_id: str, caller: Caller = LOCAL) -> Job:
    """Cancel a queued or running job and its unfinished items (one transaction); 409 when already final."""
    with session.begin():
        job = get_job(session, job_id, caller)
        moved = progress.cancel_job(session, job_id)
        session.refresh(job)
        if not moved:
            raise ConflictError(f"job '{job_id}' is already {job.status}; only queued or running jobs can be "
                                "cancelled")
        return job


def job_accepted(job: Job) -> JobAccepted:
    """202 body."""
    return JobAccepted(job_id=job.id, status=job.status, job=job_public(job))


def accepted(session: Session, job_id: str) -> JobAccepted:
    """The 202 body of a job just submitted (reads it in its own transaction)."""
    with session.begin():
        return job_accepted(get_job(session, job_id))


def job_units(job: Job) -> str:
    """The unit a job's results are given in (``units`` of the request; the model's mol/kg by default)."""
    return str((job.params or {}).get("units") or "mol/kg")


def item_result(item: JobItem, units: str = "mol/kg") -> PredictionResult:
    """One item with its prediction (the ``POST /predict`` body), its values and σ in ``units``.

    ``cm3(STP)/cm3`` converts the model's mol/kg with the structure's density (:mod:`models.units`); the
    neighbours' labels stay in the model's unit. Curve points and the deliverable capacity: :mod:`app.services.outputs`.
    """
    prediction = None
    pred: Prediction | None = item.prediction
    if pred is not None:
        card = pred.model.card or {}
        outputs = Outputs.of(card)
        targets = card.get("targets") or [{}]
        main = targets[outputs.primary] if outputs.primary < len(targets) else targets[0]
        unit = str(main.get("unit", ""))
        density = item.structure.density_g_cm3 if item.structure is not None else None
        factor = unit_factor(units, density)
        if factor is None or units != CM3_STP_PER_CM3:
            factor = 1.0
        else:
            unit = CM3_STP_PER_CM3
        prediction = PredictionValue(
            value=pred.value * factor, unit=unit,
            property=str(main.get("property") or main.get("name") or ""),
            model=pred.model.ref,
            uncertainty=None if pred.uncertainty is None else pred.uncertainty * factor, in_domain=pred.in_domain,
            neighbours=pred.neighbours,
            **outputs.present(list(pred.values or []), pred.uncertainties, factor),
        )
    structure = None
    if item.structure is not None:
        s = item.structure
        structure = StructureInfo(name=item_name(item), sha256=s.sha256, formula=s.formula, n_atoms=s.n_atoms)
    return PredictionResult(
        job_id=item.job_id, status=item.status, prediction=prediction, structure=structure,
        timings=Timings(parse_ms=item.parse_ms, voxelize_ms=item.voxelize_ms, inference_ms=item.inference_ms,
                        cache_hit=item.cache_hit),
        item_id=item.id, name=item.name, error=item.error,
    )


def job_outputs(session: Session, job: Job) -> Outputs:
    """The outputs of a job's model (a plain single value when the job names no registered model)."""
    ref = job.model_ref or ""
    name, _, version = ref.partition(":")
    model = session.scalars(select(ModelVersion).where(ModelVersion.name == name,
                                                       ModelVersion.version == version)).first()
    return Outputs.of(model.card if model is not None else None)


def item_name(item: JobItem) -> str:
    """Structure name: the uploaded file's stem."""
    name = item.name.rsplit("/", 1)[-1]
    return name[:-4] if name.lower().endswith(".cif") else name


def first_item(session: Session, job_id: str) -> JobItem | None:
    """The single item of a predict job, with prediction and structure loaded."""
    return session.scalars(
        select(JobItem).where(JobItem.job_id == job_id)
        .options(joinedload(JobItem.prediction).joinedload(Prediction.model), joinedload(JobItem.structure))
        .order_by(JobItem.position)
    ).first()


def results_page(session: Session, job: Job, *, limit: int, offset: int,
                 order: Literal["desc", "asc", "input"] = "desc", sort: str | None = None) -> ResultsPage:
    """Items with predictions, ranked by ``sort`` (default the model's value; failed items last), paginated.

    ``sort`` is one of the job's model's keys (:attr:`app.services.outputs.Outputs.sort_keys`); another is a 422.
    """
    units = job_units(job)
    sort = job_outputs(session, job).check_sort(sort) if sort and sort != VALUE else VALUE
    query = (
        select(JobItem).outerjoin(Prediction, Prediction.item_id == JobItem.id)
        .outerjoin(Structure, Structure.sha256 == JobItem.structure_sha256).where(JobItem.job_id == job.id)
        .options(joinedload(JobItem.prediction).joinedload(Prediction.model), joinedload(JobItem.structure))
    )
    if order == "input":
        query = query.order_by(JobItem.position)
    else:  # ranked in the unit shown: volumetric values are the gravimetric ones times the density
        outputs = job_outputs(session, job) if sort != VALUE else Outputs([VALUE], 0, None)
        shown = outputs.sort_expression(sort, units == CM3_STP_PER_CM3)
        value = shown.desc() if order == "desc" else shown.asc()
        # a value that cannot be shown in the unit (no density) ranks after those that can, on every database
        query = query.order_by(Prediction.value.is_(None), shown.is_(None), value, JobItem.position)
    total = session.scalar(select(func.count()).select_from(JobItem).where(JobItem.job_id == job.id)) or 0
    items = [item_result(i, units) for i in session.scalars(query.limit(limit).offset(offset)).unique()]
    return ResultsPage(job_id=job.id, status=JobStatus(job.status), total=total, limit=limit, offset=offset,
                       sort=sort, items=items)


CSV_COLUMNS = ["rank", "name", "status", "value", "uncertainty", "in_domain", "unit", "property", "model", "sha256",
               "formula", "n_atoms", "cache_hit", "parse_ms", "voxelize_ms", "inference_ms", "error"]


#: Rows read per query while streaming a CSV export.
CSV_BATCH = 1000


def results_csv(page: ResultsPage, *, header: bool = True, outputs: Outputs | None = None) -> str:
    """CSV rendering of a results page (``header=False``: the rows alone, for the batches of a stream).

    A curve model's results have one more column per pressure and the deliverable capacity (``outputs``).
    """
    extra = outputs.csv_columns if outputs is not None else []
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS[:5] + extra + CSV_COLUMNS[5:])
    for rank, r in enumerate(page.items, start=page.offset + 1):
        p, s, t = r.prediction, r.structure, r.timings
        cells: list[object] = [""] * len(extra)
        if p is not None and extra and isinstance(p.values, list):
            cells = [pt.value for pt in p.values] + ([] if p.deliverable_capacity is None
                                                     else [p.deliverable_capacity])
            cells = (cells + [""] * len(extra))[: len(extra)]
        writer.writerow([
            rank, r.name, r.status.value, p.value if p else "", _opt(p.uncertainty) if p else "", *cells,
            _opt(p.in_domain) if p else "", p.unit if p else "", p.property if p else "",
            p.model if p else "", s.sha256 if s else "", s.formula if s else "", s.n_atoms if s else "",
            "" if t.cache_hit is None else t.cache_hit, _fmt(t.parse_ms), _fmt(t.voxelize_ms),
            _fmt(t.inference_ms), r.error or "",
        ])
    return out.getvalue()


def _opt(x: object) -> object:
    return "" if x is None else x


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def iter_results_csv(db_url: str, job: Job, *, order: Literal["desc", "asc", "input"] = "desc", offset: int = 0,
                     limit: int | None = None, batch: int = CSV_BATCH, sort: str | None = None,
                     outputs: Outputs | None = None) -> Iterator[str]:
    """The job's results as CSV text chunks: the header, then every row (or ``limit`` rows from ``offset``) in the
    order of the JSON results, read ``batch`` rows per query, each query in its own short transaction.

    ``outputs`` (:func:`job_outputs`, read by the caller so that a bad ``sort`` is refused before streaming)
    adds a curve model's columns."""
    from app.db.session import session_scope

    yield results_csv(ResultsPage(job_id=job.id, status=JobStatus(job.status), total=0, limit=0, offset=0,
                                  items=[]), outputs=outputs)
    position, end = offset, None if limit is None else offset + limit
    while end is None or position < end:
        size = batch if end is None else min(batch, end - position)
        with session_scope(db_url) as session:
            page = results_page(session, job, limit=size, offset=position, order=order, sort=sort)
        if page.items:
            yield results_csv(page, header=False, outputs=outputs)
        position += len(page.items)
        if len(page.items) < size:
            return
