"""GET /health (liveness + readiness of DB, broker, storage, model) and GET /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app import __version__
from app.api.deps import SessionDep, SettingsDep, StoreDep
from app.core import queue
from app.core.metrics import REGISTRY
from app.schemas import ComponentHealth, Health
from app.services import registry
from app.services.errors import ServiceError

router = APIRouter(tags=["ops"])


def _check(fn) -> ComponentHealth:  # type: ignore[no-untyped-def]
    try:
        detail = fn()
        return ComponentHealth(status="ok", detail=detail)
    except Exception as exc:  # noqa: BLE001  (report, never crash the probe)
        return ComponentHealth(status="error", detail=f"{type(exc).__name__}: {exc}"[:500])


@router.get("/health", response_model=Health)
def health(session: SessionDep, settings: SettingsDep, store: StoreDep, response: Response) -> Health:
    """Liveness (the process answers) and readiness of each dependency; 503 when the DB is down."""

    def db() -> str:
        with session.begin():
            session.execute(text("SELECT 1"))
        return settings.db_url.split("://", 1)[0]

    def broker() -> str:
        queue.ping_broker(settings)
        return settings.broker.split("://", 1)[0]

    def storage() -> str:
        store.ping()
        return store.uri

    database = _check(db)
    model = ComponentHealth(status="missing", detail="no model registered (the shipped default model is missing)")
    if database.status == "ok":
        try:
            with session.begin():
                model = ComponentHealth(status="ok",
                                        detail=registry.resolve_model(session, None, settings.default_model).ref)
        except ServiceError as exc:
            model = ComponentHealth(status="missing", detail=exc.detail)
    result = Health(status="ok", mode="embedded" if settings.embedded else "scaled", database=database,
                    broker=_check(broker), storage=_check(storage), model=model, version=__version__)
    if any(c.status == "error" for c in (result.database, result.broker, result.storage)):
        result.status = "error"
        response.status_code = 503
    elif model.status != "ok":
        result.status = "degraded"
    return result


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics() -> Response:
    """Prometheus text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
