"""Guarded status transitions of jobs and items (shared by the API and the workers).

Every transition is an ``UPDATE ... WHERE status IN (...)``: re-running a task after a crash (or a duplicate
delivery) never counts an item twice, and a finished job never moves back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, select, update
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
    """Move an item to succeeded/failed once and count it in the job's progress; close the job when all are done."""
    status = JobStatus.succeeded if ok else JobStatus.failed
    result = session.execute(
        update(JobItem).where(JobItem.id == item_id, JobItem.status.in_(ACTIVE))
        .values(status=status, error=error, updated_at=utcnow(), **values)
    )
    if not result.rowcount:
        return False
    counter = Job.progress_done if ok else Job.progress_failed
    session.execute(
        update(Job).where(Job.id == job_id).values({counter: counter + 1, "updated_at": utcnow()})
    )
    maybe_finish_job(session, job_id)
    return True


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
