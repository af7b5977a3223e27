"""Run and check Alembic migrations programmatically (``retnet db upgrade`` calls :func:`upgrade`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.db.session import get_engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
UPGRADE_HINT = "retnet db upgrade` (or `alembic -c migrations/alembic.ini upgrade head`)"


class DatabaseNotMigratedError(RuntimeError):
    """The database schema is missing or older than the code."""


def alembic_config(url: str) -> Config:
    """Alembic config pointing at ``migrations/`` and ``url``."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logging"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the database at ``url`` to ``revision``."""
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str | None:
    """The newest revision in ``migrations/versions``."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The revision the database is at (None when never migrated)."""
    with get_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_migrated(url: str) -> None:
    """Raise :class:`DatabaseNotMigratedError` naming the command to run unless the schema is at head."""
    current, head = current_revision(url), head_revision()
    if current != head:
        safe_url = url.split("@")[-1] if "@" in url else url
        state = "has no schema" if current is None else f"is at revision {current}, the code needs {head}"
        raise DatabaseNotMigratedError(
            f"the database ({safe_url}) {state}: run `{UPGRADE_HINT} with the same RETNET_DATABASE_URL first"
        )
