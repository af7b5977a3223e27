"""Prometheus metrics: HTTP counts/latency in-process; job, cache and batch figures read from the database.

Workers may run in other processes (scaled mode), so everything they do is counted from the rows they write
(``job_item.cache_hit``, ``job_item.batch_size``) at scrape time: the numbers agree in both modes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

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


class ServiceCollector(Collector):
    """Job counts by status, voxel cache hits/misses, inference batch sizes, queue depth."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[object]:  # type: ignore[override]
        """Query the database and the broker at scrape time."""
        try:
            yield from self._from_db()
        except Exception as exc:  # noqa: BLE001  (a scrape must not fail because the DB is down)
            log.warning("metrics: database unavailable: %s", exc)
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


def install_collector(settings: Settings) -> None:
    """Register the DB-backed collector once per database URL."""
    if settings.db_url in _collectors:
        _collectors[settings.db_url].settings = settings
        return
    for old in list(_collectors.values()):
        try:
            REGISTRY.unregister(old)
        except KeyError:
            pass
    _collectors.clear()
    collector = ServiceCollector(settings)
    REGISTRY.register(collector)
    _collectors[settings.db_url] = collector
