"""Prometheus metrics: HTTP counts/latency in-process; job, cache and batch figures read from the database.

Workers may run in other processes (scaled mode), so everything they do is counted from the rows they write
(``job_item.cache_hit``, ``job_item.batch_size``): the numbers agree in both modes. Those counts scan the
``job_item`` table, so they are recomputed at most every :data:`METRICS_CACHE_S` = 15 seconds (environment
variable ``RETNET_METRICS_CACHE_S``; 0 recomputes on every scrape); scrapes in between get the last values.
The queue depth is read from the broker on every scrape.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.core.config import Settings
from app.db.session import session_scope
from app.db.tables import Job, JobItem

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("retnet_http_requests", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram(
    "retnet_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


#: Default seconds the database-derived metrics are reused between scrapes (``RETNET_METRICS_CACHE_S`` overrides).
METRICS_CACHE_S = 15.0


def metrics_cache_s() -> float:
    """``RETNET_METRICS_CACHE_S`` (seconds, ≥ 0) when set to a number, else :data:`METRICS_CACHE_S`."""
    raw = os.environ.get("RETNET_METRICS_CACHE_S", "").strip()
    try:
        value = float(raw) if raw else METRICS_CACHE_S
    except ValueError:
        log.warning("RETNET_METRICS_CACHE_S=%r is not a number: using %g s", raw, METRICS_CACHE_S)
        return METRICS_CACHE_S
    return max(0.0, value)


class ServiceCollector(Collector):
    """Job counts by status, voxel cache hits/misses, inference batch sizes, queue depth.

    Parameters
    ----------
    settings : Settings
    cache_s : float, optional
        Reuse the database-derived families for this many seconds (default: :func:`metrics_cache_s`, read when
        the collector is created; 0: query on every scrape).
    clock : callable, optional
        Monotonic time source in seconds (tests).
    """

    def __init__(self, settings: Settings, *, cache_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.cache_s = metrics_cache_s() if cache_s is None else max(0.0, float(cache_s))
        self._clock = clock
        self._lock = threading.Lock()
        self._db_families: list[object] | None = None
        self._db_at = 0.0

    def describe(self) -> list[object]:
        """Nothing: registering the collector must not query the database or the broker (nor fill the cache)."""
        return []

    def invalidate(self) -> None:
        """Drop the cached database figures: the next scrape queries again."""
        with self._lock:
            self._db_families = None

    def db_families(self) -> list[object]:
        """The database-derived families: cached ones when younger than ``cache_s``, else queried now.

        A failed query is not cached (the next scrape tries again) and raises.
        """
        with self._lock:  # one scrape queries at a time; concurrent scrapes wait and reuse its result
            now = self._clock()
            if self._db_families is not None and now - self._db_at < self.cache_s:
                return self._db_families
            families = list(self._from_db())
            self._db_families, self._db_at = families, self._clock()
            return families

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        """Database figures (cached, see :meth:`db_families`) and the broker's queue depths (live)."""
        try:
            families = self.db_families()
        except Exception as exc:  # noqa: BLE001  (a scrape must not fail because the DB is down)
            log.warning("metrics: database unavailable: %s", exc)
        else:
            yield from families
        try:
            from app.core.queue import queue_depths

            depth = GaugeMetricFamily("retnet_queue_depth", "Messages waiting in each Celery queue", labels=["queue"])
            for name, n in queue_depths(self.settings).items():
                depth.add_metric([name], n)
            yield depth
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: broker unavailable: %s", exc)

    def _from_db(self) -> Iterator[object]:
        with session_scope(self.settings.db_url) as session:
            jobs = GaugeMetricFamily("retnet_jobs", "Jobs by kind and status", labels=["kind", "status"])
            for kind, status, n in session.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind,
                                                                                                     Job.status)):
                jobs.add_metric([kind, status], n)
            yield jobs
            items = GaugeMetricFamily("retnet_job_items", "Job items by status", labels=["status"])
            for status, n in session.execute(select(JobItem.status, func.count()).group_by(JobItem.status)):
                items.add_metric([status], n)
            yield items
            hits = session.scalar(select(func.count()).where(JobItem.cache_hit.is_(True))) or 0
            misses = session.scalar(select(func.count()).where(JobItem.cache_hit.is_(False))) or 0
            c_hits = CounterMetricFamily("retnet_voxel_cache_hits", "Voxel grids served from the cache")
            c_hits.add_metric([], hits)
            yield c_hits
            c_miss = CounterMetricFamily("retnet_voxel_cache_misses", "Voxel grids computed")
            c_miss.add_metric([], misses)
            yield c_miss
            # batch_size is stored on every item of a batch: a batch of b items contributes b rows.
            rows = session.execute(select(JobItem.batch_size, func.count()).where(JobItem.batch_size.is_not(None))
                                   .group_by(JobItem.batch_size)).all()
            batches = {int(b): n / b for b, n in rows if b}
            buckets, cumulative = [], 0.0
            for edge in BATCH_BUCKETS:
                cumulative = sum(c for b, c in batches.items() if b <= edge)
                buckets.append((str(float(edge)), cumulative))
            buckets.append(("+Inf", sum(batches.values())))
            hist = HistogramMetricFamily("retnet_inference_batch_size", "Grids per inference forward pass")
            hist.add_metric([], buckets, sum_value=sum(b * c for b, c in batches.items()))
            yield hist


_collectors: dict[str, ServiceCollector] = {}


def install_collector(settings: Settings, *, cache_s: float | None = None) -> None:
    """Register the DB-backed collector once per database URL (``cache_s``: see :class:`ServiceCollector`)."""
    if settings.db_url in _collectors:
        existing = _collectors[settings.db_url]
        existing.settings = settings
        if cache_s is not None:
            existing.cache_s = max(0.0, float(cache_s))
        return
    for old in list(_collectors.values()):
        try:
            REGISTRY.unregister(old)
        except KeyError:
            pass
    _collectors.clear()
    collector = ServiceCollector(settings, cache_s=cache_s)
    REGISTRY.register(collector)
    _collectors[settings.db_url] = collector
