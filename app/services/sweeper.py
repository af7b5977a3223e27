"""Find work that lost its worker or its task message, and send it again.

Two kinds of lost work:

- **a dead owner**: an item (or training job) whose lease expired; the task that held it stopped renewing it
  (a killed worker, a lost node). Sent again at once, whatever its job's progress.
- **a lost message**: an item waiting for a task (no lease) whose job made no progress for ``older_than_s``
  while its stage's queue is empty: a restarted broker lost the message, or a send failed. Sent again.

Each row is claimed with a guarded ``UPDATE ... RETURNING`` (which also resets its clock), so concurrent
sweepers never send the same row twice; a message that was only slow costs a duplicate that the lease check of
the task turns into a no-op.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select, update

from app.core import queue
from app.core.config import Settings
from app.db.session import session_scope
from app.db.tables import Job, JobItem, JobKind, JobStatus, utcnow
from app.services.leases import INFERENCE_STAGE, VOXELS_STAGE

#: Jobs that run as one task under a job lease (no items): recovered as a whole.
WHOLE_JOB_KINDS = (JobKind.training, JobKind.design)

if TYPE_CHECKING:
    from app.services.retention import PurgeReport

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.queued, JobStatus.running)


@dataclass
class SweepReport:
    """What one sweep re-enqueued."""

    items: list[str] = field(default_factory=list)
    inference_items: list[str] = field(default_factory=list)
    training_jobs: list[str] = field(default_factory=list)
    design_jobs: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Rows sent."""
        return len(self.items) + len(self.inference_items) + len(self.training_jobs) + len(self.design_jobs)


def _idle_stages(settings: Settings) -> list[str]:
    """Stages whose queue holds no message (all of them when the broker cannot say)."""
    stages = {VOXELS_STAGE: queue.VOXELS, INFERENCE_STAGE: queue.INFERENCE}
    try:
        depths = queue.queue_depths(settings)
    except Exception:  # noqa: BLE001  (an unreachable broker: the sends will fail and be tried again anyway)
        return list(stages)
    return [stage for stage, q in stages.items() if depths.get(q, 0) == 0]


def sweep(settings: Settings, *, older_than_s: float, include_running: bool = False) -> SweepReport:
    """Re-enqueue items and training jobs whose lease expired, or that waited ``older_than_s`` s in a queue
    while their job made no progress.

    ``include_running`` takes every active row regardless of leases and age: only safe when no worker can be
    running them (the embedded worker at start-up, after the process that ran them died).
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    report = SweepReport()
    with session_scope(settings.db_url) as session:
        stalled_jobs = select(Job.id).where(Job.status.in_(ACTIVE), Job.updated_at <= cutoff)
        if include_running:
            lost = JobItem.status.in_(ACTIVE)
        else:
            expired = and_(JobItem.lease_until.is_not(None), JobItem.lease_until < now)
            # Waiting items are only lost when their stage's queue is empty: behind a backlog they are just late.
            idle = _idle_stages(settings)
            waiting = and_(JobItem.lease_until.is_(None), JobItem.updated_at <= cutoff, JobItem.stage.in_(idle),
                           JobItem.job_id.in_(stalled_jobs))
            lost = and_(JobItem.status.in_(ACTIVE), or_(expired, waiting))
        claimed = session.scalars(
            update(JobItem).where(lost).values(lease_owner=None, lease_until=None, updated_at=now)
            .returning(JobItem.id)
        ).all()
        if claimed:
            in_order = session.execute(select(JobItem.id, JobItem.stage).where(JobItem.id.in_(claimed))
                                       .order_by(JobItem.created_at, JobItem.job_id, JobItem.position)).all()
            for item_id, stage in in_order:
                (report.inference_items if stage == INFERENCE_STAGE else report.items).append(item_id)
        if include_running:
            lost_jobs = Job.status.in_(ACTIVE)
        else:
            lost_jobs = or_(and_(Job.lease_until.is_not(None), Job.lease_until < now),
                            and_(Job.lease_until.is_(None), Job.status == JobStatus.queued, Job.updated_at <= cutoff))
        for job_id, kind in session.execute(
            update(Job).where(Job.kind.in_(WHOLE_JOB_KINDS), Job.status.in_(ACTIVE), lost_jobs)
            .values(lease_owner=None, lease_until=None, updated_at=now).returning(Job.id, Job.kind)
        ):
            (report.design_jobs if kind == JobKind.design else report.training_jobs).append(str(job_id))
        # Safety net: an active job none of whose items is active any more only missed its final recount.
        settled = session.scalars(
            select(Job.id).where(Job.status.in_(ACTIVE), Job.kind.not_in(WHOLE_JOB_KINDS), Job.updated_at <= cutoff,
                                 ~select(JobItem.id).where(JobItem.job_id == Job.id,
                                                           JobItem.status.in_(ACTIVE)).exists())
        ).all()
        if settled:
            from app.services.progress import refresh_progress

            refresh_progress(session, settled)
            log.warning("sweeper closed %d job(s) whose items were all final", len(settled))
    # Sent after the commit (in creation order within each stage).
    if report.items:
        queue.enqueue_voxelize(report.items, settings)
    if report.inference_items:
        queue.enqueue_predict(report.inference_items, settings)
    for job_id in report.training_jobs:
        queue.enqueue_training(job_id, settings)
    for job_id in report.design_jobs:
        queue.enqueue_design(job_id, settings)
    if report.total:
        why = "left unfinished by the previous process" if include_running else "lost their worker or message"
        log.warning("sweeper re-enqueued %d item(s) for voxels, %d for inference, %d training and %d design job(s) "
                    "that %s", len(report.items), len(report.inference_items), len(report.training_jobs),
                    len(report.design_jobs), why)
    return report


class PeriodicSweeper:
    """Runs :func:`sweep` every ``settings.sweep_interval_s`` seconds in a daemon thread of the API process, and
    retention (:func:`app.services.retention.purge`) at most every :attr:`retention_interval_s` when
    ``settings.retention_days`` is set."""

    #: Seconds between two retention purges of the thread.
    retention_interval_s: float = 3600.0

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_purge: float | None = None

    def maybe_purge(self, now: float | None = None) -> PurgeReport | None:
        """Run retention when it is configured and an hour has passed since the last run; the report or None."""
        days = self.settings.retention_days
        now = time.monotonic() if now is None else now
        if days is None or (self._last_purge is not None and now - self._last_purge < self.retention_interval_s):
            return None
        self._last_purge = now
        from app.services.retention import purge
        from app.storage import cached_store

        s = self.settings
        return purge(s, cached_store(s.store_uri, s.s3.endpoint_url, s.s3.region), older_than_days=days)

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
            try:
                self.maybe_purge()
            except Exception:  # noqa: BLE001  (a failed purge is retried an hour later)
                log.exception("retention purge failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None
