"""/metrics reads the job tables at most once per cache interval, however often it is scraped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import event

from app.core import metrics
from app.core.metrics import METRICS_CACHE_S, ServiceCollector, metrics_cache_s


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def job_item_queries(settings) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """SQL statements that read the job_item table, as they are run."""
    from app.db.session import get_engine

    engine = get_engine(settings.db_url)
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if "job_item" in statement and statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _add_item(settings, cache_hit: bool) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.db.tables import Job, JobItem

    with session_scope(settings.db_url) as session:
        job = Job(kind="predict", status="succeeded", params={})
        session.add(job)
        session.flush()
        session.add(JobItem(job_id=job.id, position=0, name="x.cif", raw_key="uploads/x", status="succeeded",
                            cache_hit=cache_hit, batch_size=1))


def _scrape(registry: CollectorRegistry) -> dict[str, float]:
    values = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(("retnet_voxel_cache_hits_total", "retnet_voxel_cache_misses_total")):
            name, value = line.split()
            values[name] = float(value)
    return values


def test_two_scrapes_within_the_interval_query_the_database_once(settings, job_item_queries) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    collector = ServiceCollector(settings, cache_s=15.0, clock=clock)
    registry = CollectorRegistry()
    registry.register(collector)
    assert job_item_queries == []  # registering queries nothing

    _add_item(settings, cache_hit=True)
    first = _scrape(registry)
    per_scrape = len(job_item_queries)
    assert per_scrape > 0 and first["retnet_voxel_cache_hits_total"] == 1.0

    _add_item(settings, cache_hit=True)
    clock.now += 14.0
    assert _scrape(registry) == first  # within the interval: the cached figures, no query
    assert len(job_item_queries) == per_scrape

    clock.now += 1.5
    again = _scrape(registry)  # the interval has passed: queried again, the new row counted
    assert len(job_item_queries) == 2 * per_scrape
    assert again["retnet_voxel_cache_hits_total"] == 2.0 and again["retnet_voxel_cache_misses_total"] == 0.0

    collector.invalidate()
    _scrape(registry)
    assert len(job_item_queries) == 3 * per_scrape


def test_zero_interval_queries_on_every_scrape(settings, job_item_queries) -> None:  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    registry.register(ServiceCollector(settings, cache_s=0, clock=Clock()))
    _scrape(registry)
    per_scrape = len(job_item_queries)
    _scrape(registry)
    assert per_scrape > 0 and len(job_item_queries) == 2 * per_scrape


def test_a_failed_query_is_not_cached(settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    collector = ServiceCollector(settings, cache_s=60.0, clock=Clock())
    calls: list[int] = []
    original = ServiceCollector._from_db

    def flaky(self: ServiceCollector) -> Iterator[object]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database down")
        yield from original(self)

    monkeypatch.setattr(ServiceCollector, "_from_db", flaky)
    registry = CollectorRegistry()
    registry.register(collector)
    assert "retnet_voxel_cache_hits_total" not in _scrape(registry)  # the scrape itself still answers
    assert "retnet_voxel_cache_hits_total" in _scrape(registry)  # tried again at once
    _scrape(registry)
    assert len(calls) == 2


def test_interval_default_and_environment(monkeypatch: pytest.MonkeyPatch, settings) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RETNET_METRICS_CACHE_S", raising=False)
    assert METRICS_CACHE_S == 15.0 and metrics_cache_s() == 15.0
    assert ServiceCollector(settings).cache_s == 15.0
    monkeypatch.setenv("RETNET_METRICS_CACHE_S", "0")
    assert ServiceCollector(settings).cache_s == 0.0
    monkeypatch.setenv("RETNET_METRICS_CACHE_S", "2.5")
    assert metrics.metrics_cache_s() == 2.5
    monkeypatch.setenv("RETNET_METRICS_CACHE_S", "soon")
    assert metrics_cache_s() == 15.0
    assert ServiceCollector(settings, cache_s=3).cache_s == 3.0
