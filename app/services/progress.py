"""Guarded status transitions of jobs and items (shared by the API and the workers).

Every transition is an ``UPDATE ... WHERE status IN (...)``: re-running a task after a crash (or a duplicate
delivery) never counts an item twice, and a finished job never moves back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from app.db.tables import FINAL, Job, JobItem, JobStatus, utcnow

ACTIVE = (JobStatus.queued, JobStatus.running)


def start_job(session: Session, job_id: str) -> bool:
    """queued → running; True when this call moved it."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.running, started_at=utcnow(), updated_at=utcnow())
    )
    return bool(result.rowcount)


def start_item(session: Session, item_id: str) -> bool:
    """Item queued|running → running (a re-delivered item may restart); False when it is already final."""
    result = session.execute(
        update(JobItem).where(JobItem.id == item_id, JobItem.status.in_(ACTIVE))
        .values(status=JobStatus.running, attempts=JobItem.attempts + 1, updated_at=utcnow())
    )
    return bool(result.rowcount)


def update_item(session: Session, item_id: str, **values: Any) -> None:
    """Set fields of a not-yet-final item."""
    session.execute(
        update(JobItem).where(JobItem.id == item_id, JobItem.status.in_(ACTIVE)).values(updated_at=utcnow(), **values)
    )


def finish_item(session: Session, item_id: str, job_id: str, *, ok: bool, error: str | None = None,
                **values: Any) -> bool:
    """Move an item to succeeded/failed once, recount the job's progress, close the job when all are done."""
    status = JobStatus.succeeded if ok else JobStatus.failed
    result = session.execute(
        update(JobItem).where(JobItem.id == item_id, JobItem.status.in_(ACTIVE))
        .values(status=status, error=error, lease_owner=None, lease_until=None, updated_at=utcnow(), **values)
    )
    if not result.rowcount:
        return False
    refresh_progress(session, [job_id])
    return True


def succeed_items(session: Session, item_ids: Sequence[str], *, owner: str, **values: Any) -> list[str]:
    """Held, active items of ``owner`` → succeeded in one statement; the ids that moved (the others were
    cancelled or taken over meanwhile and get no prediction)."""
    if not item_ids:
        return []
    return list(session.execute(
        update(JobItem).where(JobItem.id.in_(list(item_ids)), JobItem.status.in_(ACTIVE),
                              JobItem.lease_owner == owner)
        .values(status=JobStatus.succeeded, error=None, error_code=None, lease_owner=None, lease_until=None,
                updated_at=utcnow(), **values)
        .returning(JobItem.id)
    ).scalars())


def fail_items(session: Session, failures: Iterable[tuple[str, str, str]], *, owner: str) -> None:
    """``(item_id, error, error_code)`` → failed, for the active items ``owner`` holds (one executemany)."""
    rows = [{"b_id": i, "b_error": e[:4000], "b_code": c} for i, e, c in failures]
    if not rows:
        return
    table = JobItem.__table__
    session.connection().execute(
        update(table).where(table.c.id == bindparam("b_id"), _active(table), table.c.lease_owner == owner)
        .values(status=JobStatus.failed, error=bindparam("b_error"), error_code=bindparam("b_code"),
                lease_owner=None, lease_until=None, updated_at=utcnow()),
        rows,
    )


def _active(table: Any) -> Any:
    # Not ``status IN (...)``: an expanding IN cannot be used in an executemany.
    return or_(*(table.c.status == s for s in ACTIVE))


def set_item_fields(session: Session, rows: list[dict[str, Any]], *, owner: str) -> None:
    """Per-item fields (``{"id": ..., "parse_ms": ...}``; every dict with the same keys) on held items.

    A None value keeps the column as it is. Items given the same values (a chunk of cache hits) are updated by one
    ``UPDATE ... WHERE id IN (...)``, the rest by one executemany.
    """
    if not rows:
        return
    table = JobItem.__table__
    keys = [k for k in rows[0] if k != "id"]
    alike: dict[tuple[Any, ...], list[str]] = {}
    for r in rows:
        alike.setdefault(tuple(r[k] for k in keys), []).append(r["id"])
    singles = []
    for values, ids in alike.items():
        if len(ids) == 1:
            singles.append({"b_id": ids[0], **{f"b_{k}": v for k, v in zip(keys, values, strict=True)}})
            continue
        changed = {k: v for k, v in zip(keys, values, strict=True) if v is not None}
        if changed:
            session.execute(update(table).where(table.c.id.in_(ids), _active(table), table.c.lease_owner == owner)
                            .values(changed))
    if singles:
        session.connection().execute(
            update(table).where(table.c.id == bindparam("b_id"), _active(table), table.c.lease_owner == owner)
            .values({k: func.coalesce(bindparam(f"b_{k}"), table.c[k]) for k in keys}),
            singles,
        )


def refresh_progress(session: Session, job_ids: Iterable[str]) -> None:
    """Recount done/failed of screening and predict jobs from their items' statuses, then close finished ones.

    Counting instead of incrementing makes progress exactly right whatever ran twice or crashed in between.
    """
    for job_id in sorted(set(job_ids)):  # sorted: concurrent refreshes lock jobs in the same order
        # Lock the job row first: a chunk finishing at the same time in another worker then waits for this
        # transaction, and its count (a new statement, hence a new snapshot) sees these items as committed.
        # Without the lock both counts can miss the other's items and the job stays 'running' for ever.
        session.execute(select(Job.id).where(Job.id == job_id).with_for_update())
        done = (select(func.count()).select_from(JobItem)
                .where(JobItem.job_id == job_id, JobItem.status == JobStatus.succeeded).scalar_subquery())
        failed = (select(func.count()).select_from(JobItem)
                  .where(JobItem.job_id == job_id, JobItem.status == JobStatus.failed).scalar_subquery())
        session.execute(update(Job).where(Job.id == job_id, Job.kind != "training")
                        .values(progress_done=done, progress_failed=failed, updated_at=utcnow()))
        maybe_finish_job(session, job_id)


def maybe_finish_job(session: Session, job_id: str) -> None:
    """running → succeeded (or failed when every item failed) once all items are counted."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(ACTIVE), Job.kind != "training",
               Job.progress_done + Job.progress_failed >= Job.progress_total)
        .values(
            status=case((Job.progress_done > 0, JobStatus.succeeded), else_=JobStatus.failed),
            error=case((Job.progress_done > 0, None), else_=_all_failed_message()),
            finished_at=now, updated_at=now,
        )
    )


def _all_failed_message() -> str:
    return "every item failed; see the per-item errors in GET /jobs/{id}/results"


def fail_job(session: Session, job_id: str, error: str) -> bool:
    """Any active status → failed with ``error``."""
    now = utcnow()
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
        .values(status=JobStatus.failed, error=error, finished_at=now, updated_at=now)
    )
    return bool(result.rowcount)


def succeed_job(session: Session, job_id: str, result: dict[str, Any] | None = None) -> bool:
    """running → succeeded with an optional result document."""
    now = utcnow()
    values: dict[str, Any] = {"status": JobStatus.succeeded, "finished_at": now, "updated_at": now}
    if result is not None:
        values["result"] = result
    res = session.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE)).values(**values))
    return bool(res.rowcount)


def set_job_details(session: Session, job_id: str, details: dict[str, Any], **values: Any) -> bool:
    """Replace the live details (training epoch, losses) of an active job; False when it is no longer active."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE)).values(details=details, updated_at=utcnow(),
                                                                            **values)
    )
    return bool(result.rowcount)


def cancel_job(session: Session, job_id: str) -> bool:
    """queued|running → cancelled, with every unfinished item; True when this call moved the job.

    Guarded like every transition: a job that finished meanwhile stays finished (False), and workers skip
    cancelled items (their updates only touch active rows).
    """
    now = utcnow()
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
        .values(status=JobStatus.cancelled, error="cancelled by the user", finished_at=now, updated_at=now)
    )
    if not result.rowcount:
        return False
    session.execute(
        update(JobItem).where(JobItem.job_id == job_id, JobItem.status.in_(ACTIVE))
        .values(status=JobStatus.cancelled, error="cancelled", updated_at=now)
    )
    return True


def is_final(session: Session, job_id: str) -> bool:
    """True when the job reached a final status."""
    status = session.scalar(select(Job.status).where(Job.id == job_id))
    return status in FINAL
