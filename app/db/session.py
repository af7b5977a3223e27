"""Engine and session factories (one engine per process and URL), ``session_scope()`` for workers."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}
_makers: dict[tuple[int, str], sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create an engine: SQLite gets WAL, a busy timeout and cross-thread use; Postgres pre-ping."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(url: str) -> Engine:
    """Return this process's engine for ``url`` (a forked worker child gets its own)."""
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url)
            _makers[key] = sessionmaker(engine, expire_on_commit=False)
        return engine


def get_sessionmaker(url: str) -> sessionmaker[Session]:
    """Return this process's sessionmaker for ``url``."""
    get_engine(url)
    return _makers[(os.getpid(), url)]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    session = get_sessionmaker(url)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()


def dispose_all() -> None:
    """Dispose every engine of this process (tests, shutdown)."""
    with _lock:
        for (pid, url), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
            _engines.pop((pid, url), None)
            _makers.pop((pid, url), None)
