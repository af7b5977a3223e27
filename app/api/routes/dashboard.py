"""The lab dashboard: HTML pages served by the API, drawn in the browser from the JSON API.

``GET /`` (upload, job list, latest job), ``GET /ui/jobs/{id}`` (one job: prediction, ranked results or training
curves, polled until final) and ``GET /ui/models`` (every model's card and figures). The pages are static shells
under ``app/static/pages``; plain ES modules in ``app/static/js`` call the API with the browser's stored API key,
so a page never needs the key itself (and never shows another key's data).
"""

from __future__ import annotations

import html
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from app import __version__

router = APIRouter(tags=["dashboard"], include_in_schema=False)

#: The dashboard's files (HTML shells, CSS, ES modules), packaged with ``app`` (``app/static/**``).
STATIC_DIR = Path(__file__).resolve().parents[2] / "static"
#: A job id in a page path (uuid4 strings; anything else is refused before it reaches the page).
JOB_ID_PATTERN = r"^[A-Za-z0-9-]{1,64}$"
#: Pages are small and change with the code: the browser revalidates them every time.
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def static_files() -> StaticFiles:
    """The ``/static`` mount: CSS, ES modules and icons of the dashboard."""
    return StaticFiles(directory=STATIC_DIR)


@lru_cache(maxsize=8)
def _shell(name: str) -> str:
    return (STATIC_DIR / "pages" / name).read_text(encoding="utf-8")


def render_page(name: str, **values: str) -> HTMLResponse:
    """A page shell with ``{{key}}`` placeholders filled (HTML-escaped) and the version for cache busting."""
    text = _shell(name).replace("{{version}}", html.escape(__version__))
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return HTMLResponse(text, headers=PAGE_HEADERS)


@router.get("/", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """Upload CIFs (one → POST /predict, many, a folder or a zip → POST /screenings), follow the jobs."""
    return render_page("index.html")


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: Annotated[str, PathParam(pattern=JOB_ID_PATTERN)]) -> HTMLResponse:
    """One job: its prediction, its ranked results or its training curves, polled until it is final."""
    return render_page("job.html", job_id=job_id)


@router.get("/ui/models", response_class=HTMLResponse)
def models_page() -> HTMLResponse:
    """Every registered model: card (targets, units, training data, metrics with CIs) and figures."""
    return render_page("models.html")
