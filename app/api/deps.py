"""Dependencies: settings, one DB session per request, the object store, valid job lookup."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import Depends, Form, Header, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.api.auth import bearer_token
from app.core.config import Settings
from app.db.session import get_sessionmaker
from app.db.tables import Job
from app.services.errors import TooManyRequestsError, UnauthorizedError
from app.services.jobs import get_job
from app.services.keys import LOCAL, Caller, caller_for
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


async def current_caller(request: Request, settings: SettingsDep, session: SessionDep) -> Caller:
    """The caller of this request: the key's owner, or the local user when keys are optional and none is sent.

    401 when keys are required and the key is missing, unknown or revoked (or a sent key is invalid); 429 when
    the key is over its request rate.
    """
    key = bearer_token(request)
    if key is None:
        if settings.auth_required:
            raise UnauthorizedError("an API key is required: send 'Authorization: Bearer <key>' (create one with "
                                    "`retnet keys create NAME`)")
        return LOCAL

    def lookup() -> Caller | None:
        with session.begin():
            return caller_for(session, key)

    caller = await run_in_threadpool(lookup)
    if caller is None:
        raise UnauthorizedError("invalid or revoked API key")
    limiter = request.app.state.rate_limiter
    wait = limiter.take(caller.name or "", settings.auth.requests_per_minute)
    if wait > 0:
        raise TooManyRequestsError(f"rate limit of {settings.auth.requests_per_minute} requests per minute for key "
                                   f"'{caller.name}' exceeded; retry in {math.ceil(wait)} s", wait)
    return caller


CallerDep = Annotated[Caller, Depends(current_caller)]


async def optional_caller(request: Request, settings: SettingsDep, session: SessionDep) -> Caller | None:
    """Like :func:`current_caller`, but None instead of 401 when no key is sent (pages that show less)."""
    if bearer_token(request) is None and settings.auth_required:
        return None
    return await current_caller(request, settings, session)


OptionalCallerDep = Annotated[Caller | None, Depends(optional_caller)]


def valid_job(job_id: str, session: SessionDep, caller: CallerDep) -> Job:
    """The job named in the path, or 404 (also when it is another key's)."""
    with session.begin():
        return get_job(session, job_id, caller)


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


#: ``units`` form field of ``POST /predict`` and ``POST /screenings``.
UnitsForm = Annotated[Literal["mol/kg", "cm3(STP)/cm3"], Form(
    description="unit of the values: mol/kg (the model's) or cm3(STP)/cm3, volumetric, converted with the crystal "
                "density from the CIF (STP = 273.15 K, 1 atm; 22,413.97 cm³/mol)")]
