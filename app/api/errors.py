"""One error contract: every failure answers JSON with a string ``detail``.

A dependency that is down (database, broker, storage) is a 503 with ``Retry-After`` naming the component;
anything else unexpected is a 500 naming the error type (the traceback goes to the log, not to the client).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.services.errors import ServiceError, TooManyRequestsError

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


#: Where a validation error's ``loc[0]`` says the value came from, as the sentence names it.
_LOCATIONS = {"query": "query parameter", "path": "path parameter", "header": "header", "cookie": "cookie",
              "body": "form field"}
#: Problems named in the ``detail`` sentence of a 422 (all of them stay in ``errors``).
MAX_PROBLEMS_NAMED = 10


def _field(loc: Sequence[Any]) -> str:
    """``("query", "offset")`` → ``query parameter 'offset'``; ``("body", "file")`` → ``form field 'file'``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in _LOCATIONS:
        where, parts = _LOCATIONS[parts[0]], parts[1:]
    else:
        where = "field"
    return f"{where} '{'.'.join(parts)}'" if parts else "the request body"


def validation_sentence(errors: Sequence[dict[str, Any]]) -> str:
    """One readable sentence naming each invalid field and its problem (the 422 ``detail``)."""
    problems = []
    for error in errors[:MAX_PROBLEMS_NAMED]:
        message = str(error.get("msg") or "invalid value")
        problems.append(f"{_field(error.get('loc') or ())}: {message[:1].lower()}{message[1:]}")
    more = len(errors) - MAX_PROBLEMS_NAMED
    tail = f"; and {more} more problem(s)" if more > 0 else ""
    return "invalid request: " + "; ".join(problems or ["the request does not match the API"]) + tail


def validation_error_body(exc: RequestValidationError) -> dict[str, Any]:
    """``{"detail": "<one sentence>", "errors": [<FastAPI's original list>]}``."""
    errors = jsonable_encoder(exc.errors())
    return {"detail": validation_sentence(errors), "errors": errors}


def http_error_response(exc: StarletteHTTPException) -> Response:
    """Starlette/FastAPI HTTP errors (404 unknown route, 405, ...) with a string ``detail``."""
    headers = getattr(exc, "headers", None)
    if exc.status_code < 200 or exc.status_code in (204, 205, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=headers)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(jsonable_encoder(exc.detail))
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=headers)


#: Words of an item's error that say a dependency (database, broker, storage, the model registry) failed it,
#: not a bug: such a failed ``POST /predict`` is a 503 to retry, any other internal failure a 500.
_DEPENDENCY_MARKERS = ("OperationalError", "InterfaceError", "TimeoutError", "ConnectionError", "BotoCoreError",
                       "ClientError", "EndpointConnectionError", "StorageUnavailableError", "OSError",
                       "PermissionError", "unavailable", "is not registered", "missing from storage")


def failed_job_status(error: str | None) -> int:
    """HTTP status of a job that failed for an internal reason: 503 when a dependency is to blame, else 500."""
    text = error or ""
    return 503 if any(marker in text for marker in _DEPENDENCY_MARKERS) else 500


def failed_job_response(error: str | None, *, job_id: str, item_id: str | None = None) -> JSONResponse:
    """A job that failed inside the service (not the user's file): 5xx with the reason and the job to inspect."""
    status = failed_job_status(error)
    content = {"detail": error or "the prediction failed inside the service", "job_id": job_id, "item_id": item_id}
    return JSONResponse(status_code=status, content=content,
                        headers={"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


#: OpenAPI schema of every error body: a string ``detail`` (a 422 adds ``errors``, a failed job its ``job_id``).
ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorDetail", "type": "object", "required": ["detail"],
    "properties": {"detail": {"type": "string", "title": "Detail"}}, "additionalProperties": True,
}
#: The 422 body of a request that does not match the API (replaces FastAPI's list-valued ``detail``).
VALIDATION_SCHEMA: dict[str, Any] = {
    "title": "HTTPValidationError", "type": "object", "required": ["detail", "errors"],
    "properties": {"detail": {"type": "string", "title": "Detail"},
                   "errors": {"type": "array", "title": "Errors",
                              "items": {"$ref": "#/components/schemas/ValidationError"}}},
}


def _document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Give every 4xx/5xx response of the OpenAPI document the JSON body it really has."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorDetail"] = ERROR_SCHEMA
    if "HTTPValidationError" in components:
        components["HTTPValidationError"] = VALIDATION_SCHEMA
    ref = {"$ref": "#/components/schemas/ErrorDetail"}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in (operation.get("responses") or {}).items():
                if str(status)[:1] in ("4", "5") and not response.get("content"):
                    response["content"] = {"application/json": {"schema": ref}}
    return schema


def install_openapi_errors(app: FastAPI) -> None:
    """Patch ``app.openapi`` so the document describes the error bodies the handlers below send."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """Map domain errors, request validation, HTTP errors, structure errors, outages and bugs to JSON responses
    (every body has a string ``detail``), and document those bodies in the OpenAPI schema."""
    from models.errors import StructureError

    install_openapi_errors(app)

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        headers: dict[str, str] = {}
        if exc.status_code == 503:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        elif exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        elif isinstance(exc, TooManyRequestsError):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=headers or None)

    @app.exception_handler(StructureError)
    async def structure_error(_request: Request, exc: StructureError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    @app.exception_handler(RequestValidationError)
    async def request_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content=validation_error_body(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return http_error_response(exc)

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
