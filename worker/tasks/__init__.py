"""Celery task registration: thin wrappers over ``worker.pipeline`` and ``worker.training``."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery_batches import Batches

from app.core.config import Settings
from app.core.queue import INFERENCE, TASK_PREDICT, TASK_TRAIN, TASK_VOXELIZE, TRAINING, VOXELS, client
from worker.runtime import WorkerContext

log = logging.getLogger(__name__)


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth retrying (database, broker, storage connectivity)."""
    import botocore.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, redis.exceptions.ConnectionError,
            botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionClosedError, ConnectionError)


_CTX: WorkerContext | None = None


def current_context() -> WorkerContext:
    """The worker context of this process (set by :func:`register`)."""
    if _CTX is None:
        raise RuntimeError("worker tasks used before worker.tasks.register()")
    return _CTX


def register(app: Celery, settings: Settings, ctx: WorkerContext | None = None) -> WorkerContext:
    """Register the three tasks on ``app``; they share one :class:`WorkerContext` per process."""
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
    common: dict[str, Any] = {"acks_late": True, "reject_on_worker_lost": True, "ignore_result": True}

    @app.task(name=TASK_VOXELIZE, queue=VOXELS, bind=True, autoretry_for=transient, retry_backoff=True,
              retry_backoff_max=60, max_retries=8, **common)
    def voxelize(self: Any, item_id: str) -> None:
        """Parse and voxelize one job item (cache-aware), then enqueue its inference."""
        from worker.pipeline import voxelize_item

        voxelize_item(current_context(), item_id)

    @app.task(name=TASK_PREDICT, queue=INFERENCE, base=Batches, flush_every=settings.inference.batch_size,
              flush_interval=settings.inference.batch_timeout_ms / 1000.0, **common)
    def predict(requests: list[Any]) -> None:
        """Run inference over a batch of items (up to B grids or T ms)."""
        from worker.pipeline import predict_items

        item_ids = [r.args[0] for r in requests if r.args]
        try:
            predict_items(current_context(), item_ids)
        except transient as exc:
            log.warning("inference batch hit a transient error (%s); re-enqueueing %d items", exc, len(item_ids))
            c = client(current_context().settings)
            for item_id in item_ids:
                c.send_task(TASK_PREDICT, args=(item_id,), queue=INFERENCE, countdown=2)

    @app.task(name=TASK_TRAIN, queue=TRAINING, bind=True, autoretry_for=transient, retry_backoff=True,
              max_retries=3, **common)
    def train(self: Any, job_id: str) -> None:
        """Train, evaluate, save and register a model."""
        from worker.training import run_training

        run_training(current_context(), job_id)

    return ctx
