"""Celery configuration shared by the API (client) and the workers, and send helpers by task name.

The API never imports ``worker`` (no torch in the API process): it sends tasks by name.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from app.core.config import Settings, get_settings

VOXELS, INFERENCE, TRAINING = "voxels", "inference", "training"
QUEUES = (VOXELS, INFERENCE, TRAINING)

TASK_VOXELIZE = "voxels.compute"
TASK_PREDICT = "inference.predict"
TASK_TRAIN = "training.run"
TASK_DESIGN = "inference.design"

ROUTES = {TASK_VOXELIZE: {"queue": VOXELS}, TASK_PREDICT: {"queue": INFERENCE}, TASK_TRAIN: {"queue": TRAINING},
          TASK_DESIGN: {"queue": INFERENCE}}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings built from the service settings (same in both modes but the broker)."""
    broker = settings.broker
    transport_options: dict[str, Any] = {}
    if broker.startswith("memory://"):
        transport_options = {"polling_interval": 0.005}
    elif broker.startswith(("redis://", "rediss://")):
        transport_options = {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
            # A worker killed while it holds kombu's restore mutex blocks every other worker's restore of
            # unacknowledged messages until the mutex expires (kombu's default: 300 s); bound that wait by
            # the visibility timeout. A longer restore than this only risks a duplicate, which tasks absorb.
            "unacked_mutex_expire": max(5, min(300, settings.visibility_timeout_s)),
        }
    return {
        "broker_url": broker,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,  # the database holds the state
        "task_queues": [Queue(q, Exchange(q), routing_key=q) for q in QUEUES],
        "task_default_queue": VOXELS,
        "task_create_missing_queues": False,
        "task_routes": ROUTES,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
    }


def make_celery(settings: Settings, main: str = "retnet") -> Celery:
    """A configured Celery app (tasks are registered by ``worker.celery_app``)."""
    app = Celery(main)
    app.conf.update(celery_config(settings))
    return app


_clients: dict[tuple[str, int], Celery] = {}
_clients_lock = threading.Lock()


def client(settings: Settings | None = None) -> Celery:
    """Process-wide Celery client for sending tasks (one per broker configuration)."""
    settings = settings or get_settings()
    key = (settings.broker, settings.visibility_timeout_s)
    with _clients_lock:
        app = _clients.get(key)
        if app is None:
            app = _clients[key] = make_celery(settings, main="retnet-client")
        return app


#: kombu's publish retry: a broker that is briefly unreachable (a restart) costs a short wait, not a lost message.
PUBLISH_RETRY = {"max_retries": 4, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def chunks(item_ids: list[str], settings: Settings, largest: int | None = None, smallest: int | None = None
           ) -> list[list[str]]:
    """Cut ``item_ids`` into tasks of clamp(ceil(n / 8), smallest, largest) items (order kept); ``largest``
    defaults to ``pipeline.chunk_max``, ``smallest`` to ``pipeline.chunk_min`` (never above ``largest``)."""
    p = settings.pipeline
    largest = largest or p.chunk_max
    smallest = min(largest, smallest or p.chunk_min)
    size = max(smallest, min(largest, -(-len(item_ids) // 8)))
    return [item_ids[i:i + size] for i in range(0, len(item_ids), size)]


def send(task: str, *args: Any, settings: Settings | None = None, countdown: float | None = None) -> None:
    """Enqueue ``task`` by name on its queue (call after the transaction committed); retries the publish.

    Raises kombu's ``OperationalError`` when the broker stays unreachable: the caller's rows are committed, so
    the sweeper sends the work once the broker is back.
    """
    client(settings).send_task(task, args=args, queue=ROUTES[task]["queue"], retry=True,
                               retry_policy=PUBLISH_RETRY, countdown=countdown)


def _send_chunks(task: str, item_ids: list[str], settings: Settings | None, whole: bool = False) -> None:
    settings = settings or get_settings()
    app = client(settings)
    ids = list(item_ids)
    p = settings.pipeline
    if task == TASK_PREDICT:  # an inference task holds at least one full forward pass
        size, smallest = p.inference_chunk_max, max(p.chunk_min, settings.inference.batch_size)
    else:
        size, smallest = p.chunk_max, p.chunk_min
    parts = [ids[i:i + size] for i in range(0, len(ids), size)] if whole else chunks(ids, settings, size, smallest)
    with app.producer_or_acquire() as producer:
        for chunk in parts:
            app.send_task(task, args=(chunk,), queue=ROUTES[task]["queue"], producer=producer, retry=True,
                          retry_policy=PUBLISH_RETRY)


def enqueue_voxelize(item_ids: list[str], settings: Settings | None = None) -> None:
    """Send ``voxels.compute`` tasks, one per chunk of items (parse + grid, then on to inference)."""
    _send_chunks(TASK_VOXELIZE, item_ids, settings)


def enqueue_predict(item_ids: list[str], settings: Settings | None = None, *, whole: bool = False) -> None:
    """Send ``inference.predict`` tasks, one per chunk of items whose grids are cached.

    Chunks are cut like the voxels stage's, capped by ``pipeline.inference_chunk_max``. ``whole``: the items are
    one chunk already (a voxels task handing its chunk on): one task, one forward pass (cut only above that cap),
    instead of being cut again into eight.
    """
    _send_chunks(TASK_PREDICT, item_ids, settings, whole)


def enqueue_training(job_id: str, settings: Settings | None = None) -> None:
    """Send ``training.run``."""
    send(TASK_TRAIN, job_id, settings=settings)


def enqueue_design(job_id: str, settings: Settings | None = None) -> None:
    """Send ``inference.design`` (a design job: ranking known structures against a target)."""
    send(TASK_DESIGN, job_id, settings=settings)


def broker_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the broker cannot be reached (after kombu's own retries)."""
    import kombu.exceptions
    import redis.exceptions

    return (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            ConnectionError)


def queue_depths(settings: Settings | None = None) -> dict[str, int]:
    """Messages waiting per queue (Redis: list lengths; memory: in-process queues)."""
    settings = settings or get_settings()
    depths: dict[str, int] = {}
    broker = settings.broker
    if broker.startswith(("redis://", "rediss://")):
        import redis

        r = redis.Redis.from_url(broker, socket_timeout=2)
        for q in QUEUES:
            depths[q] = int(r.llen(q))
    elif broker.startswith("memory://"):
        from kombu.transport.memory import Channel

        for q in QUEUES:
            queue = Channel.queues.get(q)
            depths[q] = queue.qsize() if queue is not None else 0
    return depths


def ping_broker(settings: Settings | None = None) -> None:
    """Raise when the broker cannot be reached."""
    settings = settings or get_settings()
    if settings.broker.startswith(("redis://", "rediss://")):
        import redis

        redis.Redis.from_url(settings.broker, socket_timeout=2).ping()
        return
    with client(settings).connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
