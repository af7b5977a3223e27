"""FastAPI application factory: routers, lifespan (migration check, model registration, embedded workers)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool

from app import __version__
from app.api.auth import RateLimiter
from app.api.errors import install_error_handlers
from app.api.limits import BodyLimitMiddleware
from app.api.routes import dashboard, design, health, images, jobs, models, predict, screenings, training
from app.core.config import Settings, get_settings
from app.core.metrics import LATENCY, REQUESTS, install_collector
from app.db.migrate import check_migrated
from app.db.session import session_scope
from app.storage import cached_store

log = logging.getLogger(__name__)


def startup(settings: Settings) -> None:
    """Refuse an unmigrated database, register the shipped model, install the metrics collector."""
    check_migrated(settings.db_url)
    store = cached_store(settings.store_uri, settings.s3.endpoint_url, settings.s3.region)
    if settings.register_shipped_model:
        from app.services.registry import register_shipped_model

        with session_scope(settings.db_url) as session:
            row = register_shipped_model(session, store)
            if row is not None:
                log.info("shipped model %s registered", row.ref)
    install_collector(settings)
    if not settings.auth_required:
        log.warning("API keys are NOT required (embedded default): anyone who can reach this server can use it "
                    "and sees every job; set RETNET_AUTH__REQUIRED=true and create keys with `retnet keys create`")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; embedded mode starts the Celery worker threads in the lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(startup, settings)
        embedded = None
        if settings.embedded:
            from app.embedded import EmbeddedWorker

            embedded = EmbeddedWorker(settings)
            await run_in_threadpool(embedded.start)
        app.state.embedded_worker = embedded
        from app.services.sweeper import PeriodicSweeper, sweep

        if settings.embedded and settings.broker.startswith("memory://"):
            # The in-memory queue died with the previous process: its unfinished work is orphaned, send it again.
            await run_in_threadpool(lambda: sweep(settings, older_than_s=0, include_running=True))
        sweeper = PeriodicSweeper(settings)
        sweeper.start()
        try:
            yield
        finally:
            await run_in_threadpool(sweeper.stop)
            if embedded is not None:
                await run_in_threadpool(embedded.stop)

    app = FastAPI(
        title="RetNet Service",
        version=__version__,
        description="Predicts gas adsorption of metal-organic frameworks from CIF files (energy voxels + RetNet).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.rate_limiter = RateLimiter()

    install_error_handlers(app)
    # inside the metrics middleware (refusals are counted); the body is bounded before any route parses it
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.upload.request_limit)

    @app.middleware("http")
    async def prometheus_middleware(request: Request, call_next):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUESTS.labels(request.method, path, str(status)).inc()
            LATENCY.labels(request.method, path).observe(time.perf_counter() - start)

    # images before models: GET /models/{name:path} would otherwise also match /models/{ref}/images/...
    for module in (predict, screenings, jobs, training, design, images, models, health, dashboard):
        app.include_router(module.router)
    app.mount("/static", dashboard.static_files(), name="static")
    return app
