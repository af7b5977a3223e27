"""Retention: delete what is older than N days (``retnet purge --older-than DAYS``, or the API's sweeper with
``RETNET_RETENTION_DAYS``).

What goes, in this order:

1. **finished jobs** (succeeded, failed, cancelled) whose last change (``finished_at``, else ``updated_at``) is
   older than the cut-off, with their items and predictions. Queued and running jobs are never deleted;
   registered models are never deleted (a model trained by a deleted job keeps its files and row; only its
   ``training_job_id`` link is cleared).
2. **structures** that no remaining job item or prediction uses, created before the cut-off.
3. **raw uploads** (``uploads/``) written before the cut-off that no remaining job item, structure or job
   (training zip, labels CSV) references. Younger uploads always stay: a request may be storing one right now.
4. **cached voxel grids** (``voxels/``) and **crystal blocks** (``crystal-blocks/``, the numbers of a crystal that
   hybrid trees read) written before the cut-off (local store: file mtime; S3: ``LastModified``) whose structure
   no remaining job item uses.

``models/`` is never listed. ``dry_run`` computes the same report and deletes nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.db.session import get_sessionmaker
from app.db.tables import FINAL, Job, JobItem, JobKind, ModelVersion, Prediction, Structure, utcnow
from app.storage import ObjectStore

log = logging.getLogger(__name__)

#: Rows deleted per statement (keeps ``IN (...)`` lists within every database's parameter limit).
BATCH = 500
UPLOADS_PREFIX, VOXELS_PREFIX, BLOCKS_PREFIX = "uploads/", "voxels/", "crystal-blocks/"
_GRID_SHA = re.compile(r"^(?:voxels|crystal-blocks)/[^/]+/[0-9a-f]{2}/([0-9a-f]{64})_")


@dataclass
class PurgeReport:
    """What a purge deleted (or, with ``dry_run``, would delete)."""

    cutoff: datetime
    dry_run: bool
    jobs: list[str] = field(default_factory=list)
    items: int = 0
    predictions: int = 0
    structures: int = 0
    uploads: list[str] = field(default_factory=list)
    grids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs and the CLI."""
        verb = "would delete" if self.dry_run else "deleted"
        return (f"{verb} {len(self.jobs)} job(s) ({self.items} item(s), {self.predictions} prediction(s)), "
                f"{self.structures} structure(s), {len(self.uploads)} upload(s) and {len(self.grids)} cached "
                f"grid(s) or crystal block(s) older than {self.cutoff:%Y-%m-%d %H:%M:%S} UTC")


def _batches(values: Sequence[str], size: int = BATCH) -> Iterable[list[str]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


def _old_jobs(session: Session, cutoff: datetime) -> list[str]:
    """Finished jobs last changed before ``cutoff``."""
    last_change = func.coalesce(Job.finished_at, Job.updated_at)
    return list(session.scalars(select(Job.id).where(Job.status.in_(FINAL), last_change < cutoff)
                                .order_by(Job.created_at)))


def _delete_jobs(session: Session, job_ids: list[str], report: PurgeReport) -> None:
    """Predictions, items and rows of ``job_ids`` (counted in ``report``)."""
    for chunk in _batches(job_ids):
        items = select(JobItem.id).where(JobItem.job_id.in_(chunk))
        session.execute(update(ModelVersion).where(ModelVersion.training_job_id.in_(chunk))
                        .values(training_job_id=None))
        report.predictions += session.execute(delete(Prediction).where(Prediction.item_id.in_(items))).rowcount or 0
        report.items += session.execute(delete(JobItem).where(JobItem.job_id.in_(chunk))).rowcount or 0
        session.execute(delete(Job).where(Job.id.in_(chunk)))


def _delete_orphan_structures(session: Session, cutoff: datetime) -> int:
    """Structures created before ``cutoff`` that no remaining item or prediction uses; how many went."""
    used_by_items = select(JobItem.structure_sha256).where(JobItem.structure_sha256.is_not(None))
    orphans = list(session.scalars(select(Structure.sha256).where(
        Structure.created_at < cutoff, Structure.sha256.not_in(used_by_items),
        Structure.sha256.not_in(select(Prediction.structure_sha256)))))
    for chunk in _batches(orphans):
        session.execute(delete(Structure).where(Structure.sha256.in_(chunk)))
    return len(orphans)


def _referenced_keys(session: Session) -> set[str]:
    """Storage keys the remaining rows reference: items' and structures' raw uploads, jobs' inputs (training
    zips) and training labels CSVs."""
    keys = set(session.scalars(select(JobItem.raw_key).distinct()))
    keys |= set(session.scalars(select(Structure.raw_key).distinct()))
    keys |= set(session.scalars(select(Job.input_key).where(Job.input_key.is_not(None)).distinct()))
    for params in session.scalars(select(Job.params).where(Job.kind == JobKind.training)):
        labels = (params or {}).get("labels_key")
        if labels:
            keys.add(str(labels))
    return keys


def _structures_in_use(session: Session, cutoff: datetime) -> set[str]:
    """Structures whose grids stay: those of the remaining job items and those created after ``cutoff``."""
    used = set(session.scalars(select(JobItem.structure_sha256).where(JobItem.structure_sha256.is_not(None))
                               .distinct()))
    return used | set(session.scalars(select(Structure.sha256).where(Structure.created_at >= cutoff)))


def grid_structure(key: str) -> str | None:
    """The structure sha256 in a voxel-grid key (``voxels/<params>/<aa>/<sha>_<params>.npy.gz``) or a crystal-block
    key (``crystal-blocks/<tag>/<aa>/<sha>_<tag>.npy``), else None."""
    match = _GRID_SHA.match(key)
    return match.group(1) if match else None


def _old_objects(store: ObjectStore, prefix: str, cutoff: datetime) -> list[str]:
    return [key for key, modified in store.list_with_times(prefix) if modified < cutoff]


def purge(settings: object, store: ObjectStore, *, older_than_days: float, dry_run: bool = False,
          now: datetime | None = None) -> PurgeReport:
    """Delete what is older than ``older_than_days`` (see the module docstring); return what went.

    ``settings`` is the service :class:`~app.core.config.Settings` (its ``db_url``). The rows go in one
    transaction (a dry run rolls it back after counting), then the objects; an object that fails to delete
    stays for the next purge.
    """
    if not older_than_days > 0:
        raise ValueError(f"older_than_days must be positive, not {older_than_days}")
    report = PurgeReport(cutoff=(now or utcnow()) - timedelta(days=older_than_days), dry_run=dry_run)
    session = get_sessionmaker(settings.db_url)()  # type: ignore[attr-defined]
    try:
        session.begin()
        report.jobs = _old_jobs(session, report.cutoff)
        _delete_jobs(session, report.jobs, report)
        report.structures = _delete_orphan_structures(session, report.cutoff)
        referenced = _referenced_keys(session)
        in_use = _structures_in_use(session, report.cutoff)
        if dry_run:
            session.rollback()  # counted, not deleted
        else:
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    report.uploads = [k for k in _old_objects(store, UPLOADS_PREFIX, report.cutoff) if k not in referenced]
    report.grids = [k for prefix in (VOXELS_PREFIX, BLOCKS_PREFIX) for k in _old_objects(store, prefix, report.cutoff)
                    if grid_structure(k) not in in_use]
    if not dry_run:
        _delete_objects(store, report.uploads + report.grids)
    log.info("retention: %s", report.summary())
    return report


def _delete_objects(store: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            store.delete(key)
        except Exception as exc:  # noqa: BLE001  (one unreachable object never stops the purge; retried next time)
            log.warning("retention: cannot delete %s (%s: %s); the next purge tries again", key, type(exc).__name__,
                        exc)
