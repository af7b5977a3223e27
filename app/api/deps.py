"""Dependencies: settings, one DB session per request, the object store, valid job lookup."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.db.session import get_sessionmaker
from app.db.tables import Job
from app.services.jobs import get_job
from app.storage import ObjectStore, cached_store


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_db(settings: SettingsDep) -> Iterator[Session]:
    """One session per request; services open the transactions."""
    session = get_sessionmaker(settings.db_url)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


def get_store(settings: SettingsDep) -> ObjectStore:
    """The configured object store."""
    return cached_store(settings.store_uri, settings.s3.endpoint_url, settings.s3.region)


StoreDep = Annotated[ObjectStore, Depends(get_store)]


def valid_job(job_id: str, session: SessionDep) -> Job:
    """The job named in the path, or 404."""
    with session.begin():
        return get_job(session, job_id)


JobDep = Annotated[Job, Depends(valid_job)]


def idempotency_key(
    key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200,
                                      description="any unique string: a retry with the same key and the same "
                                                  "request returns the first request's job instead of a new one")]
    = None,
) -> str | None:
    """The client's ``Idempotency-Key`` header (stripped; empty means none)."""
    return (key or "").strip() or None


IdempotencyKeyDep = Annotated[str | None, Depends(idempotency_key)]
