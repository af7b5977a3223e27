"""The worker Celery app: configuration from Settings plus the registered tasks.

``celery -A worker.celery_app worker -Q voxels`` works too (the module exposes ``app`` lazily).
"""

from __future__ import annotations

from typing import Any

from billiard.process import current_process
from celery import Celery, signals

from app.core.config import Settings, get_settings
from app.core.queue import make_celery


def create_worker_app(settings: Settings) -> Celery:
    """A Celery app with the three tasks bound to ``settings``."""
    from worker.tasks import register

    app = make_celery(settings, main="retnet-worker")
    register(app, settings)
    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    global _app
    if name in ("app", "celery"):
        if _app is None:
            _app = create_worker_app(get_settings())
        return _app
    raise AttributeError(name)


@signals.worker_process_init.connect
def _child_init(**_: Any) -> None:
    """Prefork children: one torch thread each, fresh DB engines (never share sockets across fork).

    Celery's solo pool (the inference and training workers) sends this signal too, in the worker's own process:
    there the forward passes should use every core, so nothing is limited (measured: one thread halved the
    inference worker's rate, 9,800 against 21,600 grids/min on this machine's two cores).
    """
    if current_process().name == "MainProcess":  # the solo pool, in the worker's own process
        return
    from app.db.session import dispose_all
    from worker.runtime import limit_torch_threads

    limit_torch_threads(1)
    dispose_all()
