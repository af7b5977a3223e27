"""POST /jobs/{id}/cancel, workers skipping cancelled work, and the sweeper of lost task messages."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update


def _screen(client, cif_dir: Path, n: int = 3) -> str:  # type: ignore[no-untyped-def]
    files = [("files", (p.name, p.read_bytes())) for p in sorted(cif_dir.glob("*.cif"))[:n]]
    r = client.post("/screenings", files=files)
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def _items(settings, job_id: str) -> list[Any]:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.db.tables import JobItem

    with session_scope(settings.db_url) as session:
        return list(session.scalars(select(JobItem).where(JobItem.job_id == job_id).order_by(JobItem.position)))


def _age(settings, job_id: str, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Make a job and its items look untouched for ``seconds``."""
    from app.db.session import session_scope
    from app.db.tables import Job, JobItem, utcnow

    old = utcnow() - timedelta(seconds=seconds)
    with session_scope(settings.db_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=old))
        session.execute(update(JobItem).where(JobItem.job_id == job_id).values(updated_at=old))


# --- cancel --------------------------------------------------------------------------------------


def test_cancel_a_queued_screening(client, settings, model_row, sent, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    job_id = _screen(client, cif_dir)
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["id"] == job_id
    assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"
    assert {i.status for i in _items(settings, job_id)} == {"cancelled"}
    results = client.get(f"/jobs/{job_id}/results").json()
    assert results["status"] == "cancelled" and {i["status"] for i in results["items"]} == {"cancelled"}
    assert client.get("/jobs").json()["data"][0]["status"] == "cancelled"


def test_cancel_keeps_finished_items(client, settings, model_row, sent, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.services import progress

    job_id = _screen(client, cif_dir)
    first = _items(settings, job_id)[0]
    with session_scope(settings.db_url) as session:
        progress.start_job(session, job_id)
        progress.finish_item(session, first.id, job_id, ok=False, error="bad", error_code="structure")
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    statuses = [i.status for i in _items(settings, job_id)]
    assert statuses == ["failed", "cancelled", "cancelled"]
    # a worker finishing an item afterwards changes nothing (guarded updates)
    with session_scope(settings.db_url) as session:
        assert not progress.finish_item(session, _items(settings, job_id)[1].id, job_id, ok=True)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["progress"] == {"done": 0, "failed": 1, "total": 3}


def test_cancel_a_final_job_is_409_and_unknown_is_404(client, settings, model_row, sent,  # type: ignore[no-untyped-def]
                                                      cif_dir: Path) -> None:
    job_id = _screen(client, cif_dir, n=1)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 409 and "already cancelled" in r.json()["detail"]
    r = client.post("/jobs/no-such-job/cancel")
    assert r.status_code == 404 and "no-such-job" in r.json()["detail"]
    assert "/jobs/{job_id}/cancel" in client.get("/openapi.json").json()["paths"]


def test_workers_skip_cancelled_items(client, settings, model_row, sent, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.db.tables import Prediction
    from worker.pipeline import predict_chunk, voxelize_chunk
    from worker.runtime import WorkerContext

    job_id = _screen(client, cif_dir, n=2)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 200
    ctx = WorkerContext(settings)
    ids = [i.id for i in _items(settings, job_id)]
    for item_id in ids:
        voxelize_chunk(ctx, [item_id])  # no parse, no grid, no inference enqueued
    predict_chunk(ctx, ids)  # never loads the model (it has no files): nothing to do
    assert sent["predict"] == []
    assert [i.status for i in _items(settings, job_id)] == ["cancelled", "cancelled"]
    assert all(i.structure_sha256 is None and i.attempts == 0 for i in _items(settings, job_id))
    with session_scope(settings.db_url) as session:
        assert session.scalars(select(Prediction)).first() is None
    assert client.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_cancelled_training_stops_at_the_next_epoch(settings) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.db.tables import Job, JobKind, JobStatus
    from app.services import progress
    from worker.runtime import WorkerContext
    from worker.training import JobNoLongerActiveError, _details, run_training

    with session_scope(settings.db_url) as session:
        job = Job(kind=JobKind.training, status=JobStatus.running, params={}, progress_total=5)
        session.add(job)
        session.flush()
        job_id = job.id
    ctx = WorkerContext(settings)
    _details(ctx, job_id, {"phase": "training", "epoch": 1}, progress_done=1)  # active: fine
    with session_scope(settings.db_url) as session:
        assert progress.cancel_job(session, job_id)
    with pytest.raises(JobNoLongerActiveError):
        _details(ctx, job_id, {"phase": "training", "epoch": 2}, progress_done=2)
    run_training(ctx, job_id)  # a re-delivered task of a cancelled job does nothing
    with session_scope(settings.db_url) as session:
        row = session.get(Job, job_id)
        assert row is not None and row.status == "cancelled" and row.details["epoch"] == 1


# --- sweeper -------------------------------------------------------------------------------------


def test_sweep_reenqueues_items_stuck_in_queued_once(client, settings, model_row, sent,  # type: ignore[no-untyped-def]
                                                     cif_dir: Path) -> None:
    from app.services.sweeper import sweep

    job_id = _screen(client, cif_dir, n=2)
    ids = [i.id for i in _items(settings, job_id)]
    assert sent["voxelize"] == ids  # the original send
    sent["voxelize"].clear()
    assert sweep(settings, older_than_s=600).total == 0  # fresh: not stuck
    _age(settings, job_id, 601)
    report = sweep(settings, older_than_s=600)
    assert report.items == ids and sent["voxelize"] == ids
    assert sweep(settings, older_than_s=600).total == 0  # claimed: its clock restarted
    assert [i.status for i in _items(settings, job_id)] == ["queued", "queued"]


def test_sweep_leaves_progressing_leased_and_cancelled_work(client, settings, model_row, sent,  # type: ignore[no-untyped-def]
                                                            cif_dir: Path) -> None:
    from app.db.session import session_scope
    from app.db.tables import Job, utcnow
    from app.services import leases
    from app.services.sweeper import sweep

    busy = _screen(client, cif_dir, n=2)
    leased = _screen(client, cif_dir, n=1)
    cancelled = _screen(client, cif_dir, n=1)
    assert client.post(f"/jobs/{cancelled}/cancel").status_code == 200
    with session_scope(settings.db_url) as session:
        assert leases.claim_items(session, [_items(settings, leased)[0].id], stage="voxels", owner="w1",
                                  lease_s=60, max_attempts=5)
    for job_id in (busy, leased, cancelled):
        _age(settings, job_id, 3600)
    with session_scope(settings.db_url) as session:  # the busy job just finished an item: it is progressing
        session.execute(update(Job).where(Job.id == busy).values(updated_at=utcnow()))
    sent["voxelize"].clear()
    assert sweep(settings, older_than_s=600).total == 0  # a live lease is a live worker, however old the job
    # at embedded start-up leased items are orphans too (the process that held them is gone)
    report = sweep(settings, older_than_s=0, include_running=True)
    assert _items(settings, leased)[0].id in report.items
    assert not set(report.items) & {i.id for i in _items(settings, cancelled)}


def test_sweep_resends_items_whose_lease_expired_at_once(client, settings, model_row, sent,  # type: ignore[no-untyped-def]
                                                         cif_dir: Path) -> None:
    """A worker that died stops renewing its lease: its items go out again, to the stage they were at."""
    from app.db.session import session_scope
    from app.db.tables import JobItem, utcnow
    from app.services import leases
    from app.services.sweeper import sweep

    job_id = _screen(client, cif_dir, n=3)
    ids = [i.id for i in _items(settings, job_id)]
    with session_scope(settings.db_url) as session:
        assert leases.claim_items(session, ids[:2], stage="voxels", owner="dead", lease_s=60, max_attempts=5)
        leases.release_items(session, ids[1:2], owner="dead", stage="inference")  # handed on to inference
        assert leases.claim_items(session, ids[1:2], stage="inference", owner="dead", lease_s=60, max_attempts=5)
        session.execute(update(JobItem).where(JobItem.id.in_(ids[:2]))
                        .values(lease_until=utcnow() - timedelta(seconds=1)))
    sent["voxelize"].clear()
    report = sweep(settings, older_than_s=600)  # the job is fresh: only the expired leases count
    assert report.items == ids[:1] and report.inference_items == ids[1:2]
    assert sent["voxelize"] == ids[:1] and sent["predict"] == ids[1:2]
    assert sweep(settings, older_than_s=600).total == 0  # released: no longer expired
    # the next delivery takes them over; a late duplicate of the dead owner's message finds nothing to do
    with session_scope(settings.db_url) as session:
        assert leases.claim_items(session, ids[:1], stage="voxels", owner="w2", lease_s=60, max_attempts=5) == ids[:1]
        assert leases.claim_items(session, ids[:1], stage="voxels", owner="dead", lease_s=60, max_attempts=5) == []
    assert [i.attempts for i in _items(settings, job_id)][:2] == [2, 2]


def test_an_item_whose_workers_keep_dying_fails_with_the_reason(client, settings, model_row, sent,  # type: ignore[no-untyped-def]
                                                                cif_dir: Path) -> None:
    from app.db.session import session_scope
    from app.db.tables import JobItem, utcnow
    from app.services import leases

    job_id = _screen(client, cif_dir, n=1)
    item_id = _items(settings, job_id)[0].id
    for attempt in range(3):
        with session_scope(settings.db_url) as session:
            taken = leases.claim_items(session, [item_id], stage="voxels", owner=f"w{attempt}", lease_s=60,
                                       max_attempts=3)
            assert taken == [item_id]
            # a retry of the same task keeps its lease and does not count as a new attempt
            assert leases.claim_items(session, [item_id], stage="voxels", owner=f"w{attempt}", lease_s=60,
                                      max_attempts=3) == [item_id]
            session.execute(update(JobItem).where(JobItem.id == item_id)
                            .values(lease_until=utcnow() - timedelta(seconds=1)))
    with session_scope(settings.db_url) as session:
        assert leases.claim_items(session, [item_id], stage="voxels", owner="w3", lease_s=60, max_attempts=3) == []
    item = _items(settings, job_id)[0]
    assert item.status == "failed" and "gave up after 3 attempts" in item.error and item.attempts == 3
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["progress"] == {"done": 0, "failed": 1, "total": 1}


def test_sweep_reenqueues_a_stuck_training_job(settings, sent) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.db.tables import Job, JobKind, JobStatus, utcnow
    from app.services.sweeper import sweep

    with session_scope(settings.db_url) as session:
        job = Job(kind=JobKind.training, status=JobStatus.queued, params={}, progress_total=2,
                  updated_at=utcnow() - timedelta(hours=1))
        session.add(job)
        session.flush()
        job_id = job.id
    assert sweep(settings, older_than_s=600).training_jobs == [job_id]
    assert sent["training"] == [job_id]
    assert sweep(settings, older_than_s=600).total == 0


def test_sweep_reenqueues_a_design_job_whose_task_died_and_never_closes_it_as_itemless(settings, sent) -> None:  # type: ignore[no-untyped-def]
    """A design job has no items: the 'all items final' safety net must leave it alone; its expired lease (a dead
    task) sends it again, a live lease does not."""
    from app.db.session import session_scope
    from app.db.tables import Job, JobKind, JobStatus, utcnow
    from app.services.sweeper import sweep

    with session_scope(settings.db_url) as session:
        dead = Job(kind=JobKind.design, status=JobStatus.running, params={}, progress_total=1, lease_owner="task-x",
                   lease_until=utcnow() - timedelta(seconds=5), updated_at=utcnow() - timedelta(hours=1))
        alive = Job(kind=JobKind.design, status=JobStatus.running, params={}, progress_total=1, lease_owner="task-y",
                    lease_until=utcnow() + timedelta(minutes=5), updated_at=utcnow() - timedelta(hours=1))
        session.add_all([dead, alive])
        session.flush()
        dead_id, alive_id = dead.id, alive.id
    report = sweep(settings, older_than_s=600)
    assert report.design_jobs == [dead_id] and report.training_jobs == []
    assert sent["design"] == [dead_id]
    with session_scope(settings.db_url) as session:
        assert session.get(Job, alive_id).status == "running" and session.get(Job, dead_id).status == "running"


def test_periodic_sweeper_runs_and_stops(settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from app.services import sweeper

    calls: list[float] = []
    monkeypatch.setattr(sweeper, "sweep", lambda s, *, older_than_s, include_running=False: calls.append(older_than_s))
    runner = sweeper.PeriodicSweeper(settings.model_copy(update={"sweep_interval_s": 0.05, "sweep_after_s": 42}))
    runner.start()
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.stop()
    assert len(calls) >= 2 and calls[0] == 42
    n = len(calls)
    time.sleep(0.2)
    assert len(calls) == n  # stopped
    off = sweeper.PeriodicSweeper(settings.model_copy(update={"sweep_interval_s": 0}))
    off.start()
    assert off._thread is None


def test_embedded_start_resends_orphaned_work(settings, model_row, sent, cif_dir: Path,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A restarted embedded server lost its in-memory queue: queued and running items are sent again at once."""
    from fastapi.testclient import TestClient

    from app import embedded
    from app.main import create_app

    with TestClient(create_app(settings)) as client:  # workers off: the items stay queued
        job_id = _screen(client, cif_dir, n=2)
    ids = [i.id for i in _items(settings, job_id)]
    sent["voxelize"].clear()
    monkeypatch.setattr(embedded.EmbeddedWorker, "start", lambda self: None)
    monkeypatch.setattr(embedded.EmbeddedWorker, "stop", lambda self, timeout=30.0: None)
    restarted = settings.model_copy(update={"embedded_workers": True})
    with TestClient(create_app(restarted)):
        pass
    assert sent["voxelize"] == ids


def test_sweep_closes_a_job_whose_items_are_all_final(client, settings, model_row, sent,  # type: ignore[no-untyped-def]
                                                      cif_dir: Path) -> None:
    """A job left 'running' with stale counts (a missed recount) is recounted and closed by the sweeper."""
    from app.db.session import session_scope
    from app.db.tables import Job, JobItem
    from app.services.sweeper import sweep

    job_id = _screen(client, cif_dir, n=2)
    with session_scope(settings.db_url) as session:
        session.execute(update(JobItem).where(JobItem.job_id == job_id).values(status="succeeded"))
        session.execute(update(Job).where(Job.id == job_id).values(status="running", progress_done=1))
    _age(settings, job_id, 601)
    sweep(settings, older_than_s=600)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["progress"] == {"done": 2, "failed": 0, "total": 2}
