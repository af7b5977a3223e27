"""Embedded mode: the Celery worker runs in threads of the API process, on the in-memory broker.

The tasks are the same as in scaled mode (``worker.tasks``); only the transport and the pool differ.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from app.core.config import Settings
from app.core.queue import QUEUES

if TYPE_CHECKING:
    from worker.runtime import WorkerContext

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """A Celery ``WorkController`` (threads pool) consuming every queue, started in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.concurrency = settings.embedded_concurrency or max(2, os.cpu_count() or 1)
        self._thread: threading.Thread | None = None
        self._worker = None
        self._context: WorkerContext | None = None

    def start(self) -> None:
        """Start consuming; returns once the consumer is ready."""
        from celery.worker import WorkController

        from worker.celery_app import create_worker_app
        from worker.tasks import current_context

        app = create_worker_app(self.settings)
        self._context = current_context()
        # The threads pool runs Celery's synchronous consumer loop, which fetches more messages only between
        # 2-s polls once its prefetch window is full: with 1 per thread every chunk waited ~2 s (screenings at a
        # quarter of the model's speed). 16 chunk messages per thread keep the next chunks at hand.
        app.conf.worker_prefetch_multiplier = 16
        ready = threading.Event()
        self._worker = WorkController(
            app=app, pool="threads", concurrency=self.concurrency, queues=list(QUEUES), loglevel="WARNING",
            without_heartbeat=True, without_mingle=True, without_gossip=True, hostname="embedded@retnet",
            ready_callback=lambda *_: ready.set(),
        )
        self._thread = threading.Thread(target=self._worker.start, name="retnet-embedded-worker", daemon=True)
        self._thread.start()
        if not ready.wait(60):
            log.warning("embedded worker not ready after 60 s")
        log.info("embedded worker started (%d threads)", self.concurrency)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop consuming and wait for the thread."""
        if self._worker is not None:
            self._worker.stop(in_sighandler=False, exitcode=0)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._context is not None:  # the forward pool's threads
            self._context.close()
        self._worker = None
        self._thread = None
        self._context = None
