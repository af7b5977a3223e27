"""Leases: which task execution works on which items (or training job), until when.

A task *claims* the items of its message with one guarded ``UPDATE ... RETURNING``: it takes only items that
are still active, at its stage, and free (no lease, an expired one, or already its own: a Celery retry keeps
its task id). While it works, a :class:`Heartbeat` renews the lease every third of its length. A worker that
dies stops renewing, the lease expires, and the sweeper (``app.services.sweeper``) sends the items again.
Two deliveries of the same message (a redelivery after a broker restart, a sweep of a slow task) never work
on the same item at once: the second one finds the items leased and does nothing.

Times are in seconds.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import and_, case, func, literal, or_, select, update
from sqlalchemy.orm import Session

from app.db.session import session_scope
from app.db.tables import Job, JobItem, JobStatus, utcnow

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.queued, JobStatus.running)
VOXELS_STAGE, INFERENCE_STAGE = "voxels", "inference"


def new_owner_suffix() -> str:
    """A unique lease-owner suffix for work run outside a Celery task."""
    return uuid.uuid4().hex


def _free_or_mine(column_until: Any, column_owner: Any, owner: str, now: Any) -> Any:
    return or_(column_until.is_(None), column_until < now, column_owner == owner)


def claim_items(session: Session, item_ids: Sequence[str], *, stage: str, owner: str, lease_s: float,
                max_attempts: int) -> list[str]:
    """Lease the free, active items of ``item_ids`` at ``stage`` to ``owner``; return the ids taken.

    ``attempts`` counts deliveries to different owners; an item already delivered ``max_attempts`` times
    (its workers kept dying) is failed with the reason instead of being taken.
    """
    if not item_ids:
        return []
    now = utcnow()
    free = and_(JobItem.id.in_(list(item_ids)), JobItem.status.in_(ACTIVE), JobItem.stage == stage,
                _free_or_mine(JobItem.lease_until, JobItem.lease_owner, owner, now))
    poisoned = session.execute(
        update(JobItem).where(free, JobItem.attempts >= max_attempts,
                              or_(JobItem.lease_owner.is_(None), JobItem.lease_owner != owner))
        .values(status=JobStatus.failed, lease_owner=None, lease_until=None, updated_at=now,
                error_code="internal",
                error=literal(f"gave up after {max_attempts} attempts; last error: ")
                + func.coalesce(JobItem.error, "the worker processing this structure stopped (killed, out of "
                                               "memory or over the task time limit)"))
        .returning(JobItem.job_id)
    ).scalars().all()
    taken = session.execute(
        update(JobItem).where(free)
        .values(status=JobStatus.running, lease_owner=owner, lease_until=now + timedelta(seconds=lease_s),
                attempts=case((JobItem.lease_owner == owner, JobItem.attempts), else_=JobItem.attempts + 1),
                updated_at=now)
        .returning(JobItem.id, JobItem.job_id)
    ).all()
    job_ids = set(poisoned) | {j for _, j in taken}
    if job_ids:
        session.execute(update(Job).where(Job.id.in_(job_ids), Job.status == JobStatus.queued)
                        .values(status=JobStatus.running, started_at=now, updated_at=now))
    if poisoned:
        from app.services.progress import refresh_progress

        refresh_progress(session, set(poisoned))
    return [i for i, _ in taken]


def renew_items(session: Session, item_ids: Sequence[str], *, owner: str, lease_s: float) -> int:
    """Extend ``owner``'s lease on its still-active items; the number renewed."""
    if not item_ids:
        return 0
    result = session.execute(
        update(JobItem).where(JobItem.id.in_(list(item_ids)), JobItem.lease_owner == owner,
                              JobItem.status.in_(ACTIVE))
        .values(lease_until=utcnow() + timedelta(seconds=lease_s))
    )
    return int(result.rowcount or 0)


def release_items(session: Session, item_ids: Sequence[str], *, owner: str, error: str | None = None,
                  stage: str | None = None) -> int:
    """Give ``owner``'s active items back (no lease: waiting for a message), optionally moving their stage.

    ``error`` records why (a transient failure) without making the item final.
    """
    if not item_ids:
        return 0
    values: dict[str, Any] = {"lease_owner": None, "lease_until": None, "updated_at": utcnow()}
    if stage is not None:
        values["stage"] = stage
    if error is not None:
        values["error"] = error[:2000]
    result = session.execute(
        update(JobItem).where(JobItem.id.in_(list(item_ids)), JobItem.lease_owner == owner,
                              JobItem.status.in_(ACTIVE)).values(**values)
    )
    return int(result.rowcount or 0)


def release_items_quietly(db_url: str, item_ids: Sequence[str], *, owner: str, error: str) -> None:
    """:func:`release_items` in its own transaction, logging instead of raising (the database may be down:
    then the leases simply expire)."""
    try:
        with session_scope(db_url) as session:
            release_items(session, item_ids, owner=owner, error=error)
    except Exception:  # noqa: BLE001
        log.warning("could not release %d item(s) of %s; their leases will expire", len(item_ids), owner)


def claim_job(session: Session, job_id: str, *, owner: str, lease_s: float) -> bool:
    """Lease an active training job to ``owner`` (False when another live execution holds it)."""
    now = utcnow()
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE),
                          _free_or_mine(Job.lease_until, Job.lease_owner, owner, now))
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=lease_s))
    )
    return bool(result.rowcount)


def renew_job(session: Session, job_id: str, *, owner: str, lease_s: float) -> int:
    """Extend ``owner``'s lease on an active job."""
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.lease_owner == owner, Job.status.in_(ACTIVE))
        .values(lease_until=utcnow() + timedelta(seconds=lease_s))
    )
    return int(result.rowcount or 0)


def release_job(session: Session, job_id: str, *, owner: str) -> None:
    """Drop ``owner``'s lease on a job (it finished, or a transient error sends it back)."""
    session.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner)
                    .values(lease_owner=None, lease_until=None))


def held_items(session: Session, item_ids: Sequence[str], owner: str) -> list[str]:
    """The items of ``item_ids`` that ``owner`` still holds (not cancelled, not taken over)."""
    return list(session.scalars(select(JobItem.id).where(JobItem.id.in_(list(item_ids)),
                                                         JobItem.lease_owner == owner,
                                                         JobItem.status.in_(ACTIVE))))


class Heartbeat:
    """Renew a lease every ``lease_s / 3`` seconds in a daemon thread while a task works.

    ``with Heartbeat(db_url, lease_s, renew=lambda s: renew_items(s, ids, owner=o, lease_s=l)):``. A failed
    renewal (the database briefly down) is logged and tried again at the next beat.
    """

    def __init__(self, db_url: str, lease_s: float, renew: Any) -> None:
        self.db_url = db_url
        self.interval = max(0.05, lease_s / 3.0)
        self.renew = renew
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retnet-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with session_scope(self.db_url) as session:
                    self.renew(session)
            except Exception as exc:  # noqa: BLE001
                log.warning("lease renewal failed (%s); retrying in %.1f s", exc, self.interval)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
