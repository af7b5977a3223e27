"""One error contract: every failure answers JSON with a string ``detail``.

A dependency that is down (database, broker, storage) is a 503 with ``Retry-After`` naming the component;
anything else unexpected is a 500 naming the error type (the traceback goes to the log, not to the client).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.services.errors import ServiceError

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying a request that met a dependency outage.
RETRY_AFTER_S = 5


def dependency_down(exc: BaseException) -> str | None:
    """The component an exception says is unreachable (``database``, ``broker``, ``storage``), else None."""
    import botocore.exceptions
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc

    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError | sqlalchemy.exc.TimeoutError):
        return "database"
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return "database"
    if isinstance(exc, kombu.exceptions.OperationalError | redis.exceptions.ConnectionError
                  | redis.exceptions.TimeoutError):
        return "broker"
    if isinstance(exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError | OSError):
        return "storage"
    return None


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, structure errors, outages and bugs to JSON responses."""
    from models.errors import StructureError

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail},
                            headers={"Retry-After": str(RETRY_AFTER_S)} if exc.status_code == 503 else None)

    @app.exception_handler(StructureError)
    async def structure_error(_request: Request, exc: StructureError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        component = dependency_down(exc)
        if component is not None:
            log.warning("%s %s: %s unavailable: %s", request.method, request.url.path, component, _short(exc))
            return JSONResponse(status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)},
                                content={"detail": f"the {component} is unavailable ({type(exc).__name__}: "
                                                   f"{_short(exc)}); retry in a few seconds"})
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error ({type(exc).__name__}); the server "
                                                                "log has the details"})
