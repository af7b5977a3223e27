"""Celery task registration: thin wrappers over ``worker.pipeline`` and ``worker.training``.

Every task runs under a lease named after its Celery task id (a retry keeps the id, so it keeps its items).
Transient infrastructure errors are retried with exponential backoff; once out of retries the task releases
its work to the sweeper instead of failing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from app.core.config import Settings
from app.core.queue import INFERENCE, TASK_DESIGN, TASK_PREDICT, TASK_TRAIN, TASK_VOXELIZE, TRAINING, VOXELS
from app.db.session import session_scope
from app.services import leases
from models.forward_pool import process_threads
from worker.runtime import WorkerContext

log = logging.getLogger(__name__)


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth retrying: the database, the broker or storage is (briefly) unreachable.

    ``OSError`` covers the local store (a permission error, an unmounted volume, a full disk) and socket errors;
    botocore's client errors cover S3 throttling and 5xx answers.
    """
    import botocore.exceptions
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
            redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
            botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError)


def fail_job_unless_transient(ctx: WorkerContext, job_id: str, exc: Exception, what: str) -> None:
    """A whole job's error: re-raise a transient one (the task retries), else fail the job with the reason."""
    if isinstance(exc, transient_errors()):
        raise exc
    log.exception("%s job %s failed", what, job_id)
    from app.services import progress

    with session_scope(ctx.db_url) as session:
        progress.fail_job(session, job_id, f"{type(exc).__name__}: {exc}")


_CTX: WorkerContext | None = None


def current_context() -> WorkerContext:
    """The worker context of this process (set by :func:`register`)."""
    if _CTX is None:
        raise RuntimeError("worker tasks used before worker.tasks.register()")
    return _CTX


def _retry_or_release(task: Any, exc: BaseException, release: Callable[[str], None]) -> None:
    """Retry ``task`` after a transient error; out of retries, hand its work back to the sweeper."""
    p = current_context().settings.pipeline
    retries = task.request.retries
    if retries < p.max_retries:
        countdown = min(p.retry_backoff_max_s, 0.5 * 2 ** retries)
        log.warning("%s: transient error (%s: %s); retry %d/%d in %.1f s", task.name, type(exc).__name__, exc,
                    retries + 1, p.max_retries, countdown)
        raise task.retry(exc=exc, countdown=countdown, max_retries=p.max_retries)
    log.error("%s: still failing after %d retries (%s); its work goes back to the sweeper", task.name, retries, exc)
    release(f"{type(exc).__name__}: {exc}")


def register(app: Celery, settings: Settings, ctx: WorkerContext | None = None) -> WorkerContext:
    """Register the tasks on ``app``; they share one :class:`WorkerContext` per process."""
    global _CTX
    ctx = ctx or WorkerContext(settings)
    # Celery shares task definitions between the apps of a process (embedded servers created one after the other
    # in tests): the task bodies read the latest context instead of closing over their own.
    _CTX = ctx
    # Compile (or load from numba's cache) the voxel kernel now rather than on the first structure (~1 s of JIT).
    # Synchronously: prefork children are forked from this process, and a thread compiling at fork time would
    # leave them a held compiler lock.
    from models.voxels import warm_up

    warm_up()
    transient = transient_errors()
    p = settings.pipeline
    common: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True, "bind": True,
                              "soft_time_limit": p.task_soft_time_limit_s, "time_limit": p.task_time_limit_s}

    def run_chunk(task: Any, body: Callable[..., Any], item_ids: list[str]) -> None:
        owner = f"task-{task.request.id or leases.new_owner_suffix()}"
        c = current_context()
        try:
            body(c, item_ids, owner)
        except transient as exc:
            _retry_or_release(task, exc, lambda why: leases.release_items_quietly(c.db_url, item_ids, owner=owner,
                                                                                  error=why))
        except SoftTimeLimitExceeded:
            log.error("%s: over the soft time limit (%d s); releasing its items", task.name, p.task_soft_time_limit_s)
            leases.release_items_quietly(c.db_url, item_ids, owner=owner,
                                         error=f"the task ran over its time limit ({p.task_soft_time_limit_s} s)")
        except Exception as exc:
            # A bug or an error nobody anticipated: the items go back to the sweeper with the reason; after
            # pipeline.max_attempts deliveries they fail with it (never retried forever, never lost).
            leases.release_items_quietly(c.db_url, item_ids, owner=owner, error=f"{type(exc).__name__}: {exc}")
            raise

    @app.task(name=TASK_VOXELIZE, queue=VOXELS, **common)
    def voxelize(self: Any, item_ids: list[str] | str) -> None:
        """Parse and voxelize a chunk of items (cache-aware), then enqueue their inference."""
        from worker.pipeline import voxelize_chunk

        run_chunk(self, voxelize_chunk, [item_ids] if isinstance(item_ids, str) else list(item_ids))

    @app.task(name=TASK_PREDICT, queue=INFERENCE, **common)
    def predict(self: Any, item_ids: list[str] | str) -> None:
        """Run inference over a chunk of items: one forward pass per model."""
        from worker.pipeline import predict_chunk

        run_chunk(self, predict_chunk, [item_ids] if isinstance(item_ids, str) else list(item_ids))

    def run_whole_job(task: Any, job_id: str, body: Callable[[WorkerContext, str], None], what: str) -> None:
        """Run a job that is one task (training, design) under a job lease renewed by a heartbeat."""
        c = current_context()
        owner = f"task-{task.request.id or leases.new_owner_suffix()}"
        lease_s = c.settings.pipeline.lease_s
        try:
            with session_scope(c.db_url) as session:
                if not leases.claim_job(session, job_id, owner=owner, lease_s=lease_s):
                    log.info("%s job %s is final or held by a live task; nothing to do", what, job_id)
                    return
            beat = leases.Heartbeat(c.db_url, lease_s,
                                    lambda s: leases.renew_job(s, job_id, owner=owner, lease_s=lease_s))
            with beat, process_threads():  # the process's torch threads, even beside single-threaded streams
                body(c, job_id)
            with session_scope(c.db_url) as session:
                leases.release_job(session, job_id, owner=owner)
        except transient as exc:
            _retry_or_release(task, exc, lambda why: _release_job_quietly(c, job_id, owner))

    @app.task(name=TASK_TRAIN, queue=TRAINING, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
              bind=True)
    def train(self: Any, job_id: str) -> None:
        """Train, evaluate, save and register a model (under a job lease renewed by a heartbeat)."""
        from worker.training import run_training

        run_whole_job(self, job_id, run_training, "training")

    @app.task(name=TASK_DESIGN, queue=INFERENCE, **common)
    def design(self: Any, job_id: str) -> None:
        """Rank known structures against a design target (under a job lease)."""
        from worker.design import run_design

        run_whole_job(self, job_id, run_design, "design")

    return ctx


def _release_job_quietly(ctx: WorkerContext, job_id: str, owner: str) -> None:
    try:
        with session_scope(ctx.db_url) as session:
            leases.release_job(session, job_id, owner=owner)
    except Exception:  # noqa: BLE001  (the lease then expires)
        log.warning("could not release job %s; its lease will expire", job_id)
