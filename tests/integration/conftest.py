"""Integration fixtures: a fresh Postgres database per session, a dedicated Redis db, real worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import (
    WorkerProcess,
    create_database,
    drop_database,
    make_test_model,
    pg_admin_url,
)

# Scrape-time metrics are asserted right after the work they count: no reuse of the last scrape's figures.
os.environ.setdefault("RETNET_METRICS_CACHE_S", "0")

REDIS_DB = int(os.environ.get("RETNET_TEST_REDIS_DB", "13"))
REQUIRE = os.environ.get("RETNET_TEST_REQUIRE_SERVICES") == "1"


def _unavailable(what: str) -> None:
    if REQUIRE:
        pytest.fail(f"{what} is not reachable and RETNET_TEST_REQUIRE_SERVICES=1")
    pytest.skip(f"{what} is not reachable (start it with scripts/services.sh)")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh ``retnet_test_<random>`` database, dropped at the end of the session."""
    admin = pg_admin_url()
    if admin is None:
        _unavailable("PostgreSQL on 127.0.0.1:5432")
    assert admin is not None
    name, url = create_database(admin)
    try:
        yield url
    finally:
        from app.db.session import dispose_all

        dispose_all()
        drop_database(admin, name)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A dedicated Redis db index, flushed before and after the session."""
    import redis

    url = f"redis://127.0.0.1:6379/{REDIS_DB}"
    try:
        r = redis.Redis.from_url(url, socket_timeout=3)
        r.ping()
    except redis.exceptions.ConnectionError:
        _unavailable("Redis on 127.0.0.1:6379")
    r.flushdb()
    yield url
    r.flushdb()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small freshly initialised model saved with models.artifacts.save_model."""
    return make_test_model(tmp_path_factory.mktemp("model") / "test-retnet")


@pytest.fixture(scope="session")
def scaled_env(pg_url: str, redis_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> dict[str, str]:
    """Environment of scaled mode (Postgres + Redis + local storage); the database is migrated (tests Alembic)."""
    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri

    data = tmp_path_factory.mktemp("scaled")
    env = {
        "RETNET_DATA_DIR": str(data),
        "RETNET_DATABASE_URL": pg_url,
        "RETNET_BROKER_URL": redis_url,
        "RETNET_STORAGE_URI": (data / "store").as_uri(),
        "RETNET_VISIBILITY_TIMEOUT_S": "8",
        "RETNET_INFERENCE__BATCH_SIZE": "16",
        "RETNET_INFERENCE__BATCH_TIMEOUT_MS": "100",
        "RETNET_REGISTER_SHIPPED_MODEL": "false",
        "RETNET_DEVICE": "cpu",
    }
    settings = Settings(**{k.removeprefix("RETNET_").lower(): v for k, v in env.items() if "__" not in k})
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        register_model_dir(session, store_from_uri(settings.store_uri), model_dir)
    return env


def admin_key(settings) -> str:  # type: ignore[no-untyped-def]
    """A fresh admin API key in the settings' database."""
    import uuid

    from app.db.session import session_scope
    from app.services.keys import create_key

    with session_scope(settings.db_url) as session:
        return create_key(session, f"test-admin-{uuid.uuid4().hex[:8]}", admin=True)


def settings_from_env(env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Settings built from a RETNET_* environment dict (nested keys included)."""
    from app.core.config import settings_from_env as from_env

    return from_env(env)


@pytest.fixture(scope="module")
def worker(scaled_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A real Celery worker subprocess consuming every queue (module scope)."""
    env = {**os.environ, **scaled_env, "PYTHONUNBUFFERED": "1"}
    proc = WorkerProcess(env, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def scaled_client(scaled_env: dict[str, str]):  # type: ignore[no-untyped-def]
    """TestClient of the API in scaled mode (no in-process workers)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = settings_from_env(scaled_env)
    assert not settings.embedded and settings.auth_required  # scaled mode: API keys by default
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {admin_key(settings)}"
        yield client
