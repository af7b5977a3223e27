"""Fixtures for API tests on an embedded SQLite database, without workers (tasks go to the memory broker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture()
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Embedded settings in a temporary data dir, migrated, workers off, no shipped model."""
    from app.core.config import Settings
    from app.db.migrate import upgrade

    s = Settings(data_dir=tmp_path, embedded_workers=False, register_shipped_model=False,
                 upload={"max_cif_bytes": 50_000, "max_zip_bytes": 200_000, "max_unzipped_bytes": 400_000})
    upgrade(s.db_url)
    return s


@pytest.fixture()
def client(settings) -> Iterator:  # type: ignore[no-untyped-def]
    """TestClient over the app (lifespan run)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Record what is enqueued instead of sending it."""
    from app.core import queue

    calls: dict[str, list[str]] = {"voxelize": [], "predict": [], "training": [], "design": []}
    monkeypatch.setattr(queue, "enqueue_voxelize", lambda ids, settings=None: calls["voxelize"].extend(ids))
    monkeypatch.setattr(queue, "enqueue_predict", lambda ids, settings=None, **_: calls["predict"].extend(ids))
    monkeypatch.setattr(queue, "enqueue_training", lambda job_id, settings=None: calls["training"].append(job_id))
    monkeypatch.setattr(queue, "enqueue_design", lambda job_id, settings=None: calls["design"].append(job_id))
    return calls


@pytest.fixture()
def model_row(settings) -> str:  # type: ignore[no-untyped-def]
    """A registry row (no files: nothing here loads the model)."""
    from app.db.session import session_scope
    from app.db.tables import ModelVersion
    from app.services.registry import params_hash_of

    card: dict[str, Any] = {"name": "m", "version": "1", "voxel_params": {},
                            "targets": [{"name": "ch4", "unit": "mol/kg", "property": "CH4 uptake"}]}
    with session_scope(settings.db_url) as session:
        session.add(ModelVersion(name="m", version="1", ref="m:1", params_hash=params_hash_of(card), card=card,
                                 storage_prefix="models/m/1/"))
    return "m:1"


@pytest.fixture()
def inline_worker(monkeypatch: pytest.MonkeyPatch, settings):  # type: ignore[no-untyped-def]
    """Run the voxel and inference tasks synchronously, in the calling thread, where they would be enqueued."""
    from app.core import queue
    from worker.pipeline import predict_chunk, voxelize_chunk
    from worker.runtime import WorkerContext

    ctx = WorkerContext(settings)
    monkeypatch.setattr(queue, "enqueue_voxelize", lambda ids, settings=None: voxelize_chunk(ctx, list(ids)))
    monkeypatch.setattr(queue, "enqueue_predict", lambda ids, settings=None, **_: predict_chunk(ctx, list(ids)))
    return ctx
