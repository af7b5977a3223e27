"""GET /: the lab dashboard renders readable numbers and only meaningful links."""

from __future__ import annotations


def test_dashboard_rounds_r2_and_links_results_of_item_jobs(client, settings) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.db.tables import Job, JobKind, JobStatus, ModelVersion

    card = {"name": "m", "version": "2", "voxel_params": {}, "targets": [{"name": "ch4_uptake"}],
            "metrics": {"r2": {"value": 0.8123456789, "ci_low": 0.7012345, "ci_high": 0.9098765}}}
    with session_scope(settings.db_url) as session:
        session.add(ModelVersion(name="m", version="2", ref="m:2", params_hash="x", card=card, storage_prefix="p/"))
        session.add(Job(id="t" * 36, kind=JobKind.training, status=JobStatus.running, progress_done=3,
                        progress_total=50, params={}))
        session.add(Job(id="s" * 36, kind=JobKind.screening, status=JobStatus.succeeded, progress_done=9,
                        progress_failed=7, progress_total=16, params={}))
        shipped = {**card, "version": "1", "metrics": {"test": {"r2": {"value": 0.75, "ci_low": 0.7, "ci_high": 0.8}}}}
        session.add(ModelVersion(name="m", version="1", ref="m:1", params_hash="x", card=shipped,
                                 storage_prefix="q/"))
    page = client.get("/").text
    assert "0.750 [0.700, 0.800]" in page  # the shipped card keeps its metrics under "test"
    assert "0.812 [0.701, 0.910]" in page and "0.8123456789" not in page
    assert "epoch 3/50" in page and "9/16 done, 7 failed" in page
    assert f"/jobs/{'s' * 36}/results?format=csv" in page
    assert f"/jobs/{'t' * 36}/results" not in page  # a training job has no result items


def test_dashboard_without_anything(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/").text
    assert "no model registered" in page and "no jobs yet" in page
