"""The inference stage on single-threaded CPU streams (models.forward_pool) predicts what one thread predicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

N_FILES = 7


def _screen(tmp_path: Path, model_dir: Path, cif_dir: Path, monkeypatch: pytest.MonkeyPatch, streams: int
            ) -> tuple[dict[str, float], dict[str, int]]:
    """Screen the first CIFs with ``inference.cpu_streams = streams``; (value by name, forward-pass size by name)."""
    from fastapi.testclient import TestClient

    from app.core import queue
    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.db.tables import JobItem
    from app.main import create_app
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri
    from worker.pipeline import predict_chunk, voxelize_chunk
    from worker.runtime import WorkerContext

    settings = Settings(data_dir=tmp_path / f"streams-{streams}", embedded_workers=False, device="cpu",
                        register_shipped_model=False, inference={"batch_size": 4, "cpu_streams": streams},
                        pipeline={"chunk_min": N_FILES})
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        register_model_dir(session, store_from_uri(settings.store_uri), model_dir)
    ctx = WorkerContext(settings)
    monkeypatch.setattr(queue, "enqueue_voxelize", lambda ids, settings=None: voxelize_chunk(ctx, list(ids)))
    monkeypatch.setattr(queue, "enqueue_predict", lambda ids, settings=None, **_: predict_chunk(ctx, list(ids)))
    files = [("files", (p.name, p.read_bytes())) for p in sorted(cif_dir.glob("*.cif"))[:N_FILES]]
    with TestClient(create_app(settings)) as client:
        r = client.post("/screenings", files=files, data={"name": f"streams {streams}"})
        assert r.status_code == 202, r.text
        job = client.get(f"/jobs/{r.json()['job_id']}").json()
        assert job["status"] == "succeeded", job
        items: list[dict[str, Any]] = client.get(f"/jobs/{job['id']}/results").json()["items"]
    with session_scope(settings.db_url) as session:
        sizes = dict(session.execute(select(JobItem.name, JobItem.batch_size)).all())
    assert ctx.forward_pool() is None if streams == 1 else ctx.forward_pool().streams == streams
    return {i["name"]: i["prediction"]["value"] for i in items}, sizes


def test_streams_predict_what_one_thread_predicts(tmp_path: Path, model_dir: Path, cif_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    one, one_sizes = _screen(tmp_path, model_dir, cif_dir, monkeypatch, streams=1)
    three, three_sizes = _screen(tmp_path, model_dir, cif_dir, monkeypatch, streams=3)
    assert len(one) == N_FILES and three.keys() == one.keys()
    for name, value in one.items():
        assert three[name] == pytest.approx(value, rel=1e-5, abs=1e-6)
    # one thread: passes of the batch size (4 + 3); three streams: the chunk cut so that each stream gets a pass
    assert sorted(one_sizes.values()) == [3, 3, 3, 4, 4, 4, 4]
    assert sorted(three_sizes.values()) == [1, 3, 3, 3, 3, 3, 3]
