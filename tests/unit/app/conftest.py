"""Fixtures for API tests on an embedded SQLite database, without workers (tasks go to the memory broker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
