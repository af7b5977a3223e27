"""Re-enqueue work whose task message was lost (a failed send, a restarted embedded broker).

A job or item still ``queued`` long after it was last touched has no task in any queue that will run it.
The sweeper claims such rows with a guarded ``UPDATE ... WHERE status = 'queued' AND updated_at < cutoff``
(which also resets their clock, so concurrent sweepers never send the same row twice) and sends their task
again. Tasks are idempotent, so a message that was merely slow, not lost, only costs a no-op duplicate.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update

from app.core import queue
from app.core.config import Settings
from app.db.session import session_scope
from app.db.tables import Job, JobItem, JobKind, JobStatus, utcnow

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.queued, JobStatus.running)


@dataclass
class SweepReport:
    """What one sweep re-enqueued."""

    items: list[str] = field(default_factory=list)
    training_jobs: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Messages sent."""
        return len(self.items) + len(self.training_jobs)


def sweep(settings: Settings, *, older_than_s: float, include_running: bool = False) -> SweepReport:
    """Re-enqueue items and training jobs left ``queued`` for more than ``older_than_s`` seconds.

    ``include_running`` also takes ``running`` rows: only safe when no worker can be running them (the
    embedded worker at start-up, after the process that ran them died).
    """
    statuses = ACTIVE if include_running else (JobStatus.queued,)
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    report = SweepReport()
    with session_scope(settings.db_url) as session:
        candidates = session.scalars(
            select(JobItem.id).join(Job, Job.id == JobItem.job_id)
            .where(JobItem.status.in_(statuses), JobItem.updated_at <= cutoff, Job.status.in_(ACTIVE),
                   Job.updated_at <= cutoff)  # a job still making progress is only busy, not lost
            .order_by(JobItem.created_at, JobItem.position)
        ).all()
        for item_id in candidates:
            claimed = session.execute(
                update(JobItem).where(JobItem.id == item_id, JobItem.status.in_(statuses),
                                      JobItem.updated_at <= cutoff).values(updated_at=now)
            ).rowcount
            if claimed:
                report.items.append(item_id)
        jobs = session.scalars(
            select(Job.id).where(Job.kind == JobKind.training, Job.status.in_(statuses), Job.updated_at <= cutoff)
        ).all()
        for job_id in jobs:
            claimed = session.execute(
                update(Job).where(Job.id == job_id, Job.status.in_(statuses), Job.updated_at <= cutoff)
                .values(updated_at=now)
            ).rowcount
            if claimed:
                report.training_jobs.append(job_id)
    # Sent after the commit; a voxels.compute finds a cached grid and goes straight on to inference.
    if report.items:
        queue.enqueue_voxelize(report.items, settings)
    for job_id in report.training_jobs:
        queue.enqueue_training(job_id, settings)
    if report.total:
        why = "left unfinished by the previous process" if include_running else f"queued for over {older_than_s:.0f} s"
        log.warning("sweeper re-enqueued %d item(s) and %d training job(s) %s", len(report.items),
                    len(report.training_jobs), why)
    return report


class PeriodicSweeper:
    """Runs :func:`sweep` every ``settings.sweep_interval_s`` seconds in a daemon thread of the API process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (no-op when the interval is 0)."""
        if self.settings.sweep_interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="retnet-sweeper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.sweep_interval_s):
            try:
                sweep(self.settings, older_than_s=self.settings.sweep_after_s)
            except Exception:  # noqa: BLE001  (a failed sweep, e.g. the DB briefly down, is retried next time)
                log.exception("sweep failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
