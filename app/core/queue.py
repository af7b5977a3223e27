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

ROUTES = {TASK_VOXELIZE: {"queue": VOXELS}, TASK_PREDICT: {"queue": INFERENCE}, TASK_TRAIN: {"queue": TRAINING}}


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


def send(task: str, *args: Any, settings: Settings | None = None) -> None:
    """Enqueue ``task`` by name on its queue (call after the transaction committed)."""
    client(settings).send_task(task, args=args, queue=ROUTES[task]["queue"])


def enqueue_voxelize(item_ids: list[str], settings: Settings | None = None) -> None:
    """Send one ``voxels.compute`` per item."""
    app = client(settings)
    with app.producer_or_acquire() as producer:
        for item_id in item_ids:
            app.send_task(TASK_VOXELIZE, args=(item_id,), queue=VOXELS, producer=producer)


def enqueue_predict(item_ids: list[str], settings: Settings | None = None) -> None:
    """Send one ``inference.predict`` per item (the inference worker batches them)."""
    app = client(settings)
    with app.producer_or_acquire() as producer:
        for item_id in item_ids:
            app.send_task(TASK_PREDICT, args=(item_id,), queue=INFERENCE, producer=producer)


def enqueue_training(job_id: str, settings: Settings | None = None) -> None:
    """Send ``training.run``."""
    send(TASK_TRAIN, job_id, settings=settings)


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
