"""GET /: a small lab dashboard (recent jobs, models, upload forms)."""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from app.api.deps import OptionalCallerDep, SessionDep
from app.db.tables import Job
from app.services import jobs as jobs_service
from app.services import registry
from app.services.keys import Caller

router = APIRouter(tags=["dashboard"])

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>RetNet Service</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}form{{margin:.5em 0}}</style></head><body>
<h1>RetNet Service</h1><p>Gas adsorption of MOFs from energy voxels. API docs: <a href="/docs">/docs</a>,
health: <a href="/health">/health</a>, metrics: <a href="/metrics">/metrics</a>.</p>
<h2>Predict one structure</h2>
<form action="/predict" method="post" enctype="multipart/form-data"><input type="file" name="file" accept=".cif">
<input name="model" placeholder="model (optional)"><button>Predict</button></form>
<h2>Screen many structures</h2>
<form action="/screenings" method="post" enctype="multipart/form-data"><input type="file" name="files" multiple
accept=".cif,.zip"><input name="name" placeholder="name"><button>Screen</button></form>
<h2>Models</h2><table><tr><th>model</th><th>targets</th><th>R²</th><th>created</th></tr>{models}</table>
<h2>Recent jobs</h2><table><tr><th>id</th><th>kind</th><th>status</th><th>progress</th><th>created</th></tr>
{jobs}</table></body></html>"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def dashboard(session: SessionDep, caller: OptionalCallerDep) -> HTMLResponse:
    """The lab dashboard: the caller's recent jobs (none without a key when keys are required)."""
    e = html.escape
    with session.begin():
        models = registry.list_models(session, caller=caller or Caller(name=None, admin=False))
        jobs = jobs_service.list_jobs(session, caller, limit=25)[0] if caller is not None else []
        model_rows = "".join(
            f"<tr><td>{e(m.ref)}</td><td>{e(', '.join(str(t.get('name')) for t in m.card.get('targets', [])))}</td>"
            f"<td>{e(_r2(m.card))}</td><td>{m.created_at:%Y-%m-%d %H:%M}</td></tr>" for m in models
        ) or "<tr><td colspan=4>no model registered</td></tr>"
        job_rows = "".join(
            f"<tr><td><a href='/jobs/{j.id}'>{j.id[:8]}</a>{_results_links(j)}</td>"
            f"<td>{e(j.kind)}</td><td>{e(j.status)}</td><td>{_progress(j)}</td>"
            f"<td>{j.created_at:%Y-%m-%d %H:%M:%S}</td></tr>" for j in jobs
        ) or ("<tr><td colspan=5>no jobs yet</td></tr>" if caller is not None else
              "<tr><td colspan=5>API keys are required: send yours (Authorization: Bearer) to see your jobs</td></tr>")
    return HTMLResponse(PAGE.format(models=model_rows, jobs=job_rows))


def _r2(card: dict) -> str:  # type: ignore[type-arg]
    """R² with its 95 % CI, 3 decimals: ``metrics.r2`` (trained here) or ``metrics.test.r2`` (shipped model)."""
    metrics = card.get("metrics") or {}
    r2 = metrics.get("r2") or (metrics.get("test") or {}).get("r2") or {}
    value = r2.get("value")
    if not isinstance(value, int | float):
        return ""
    low, high = r2.get("ci_low"), r2.get("ci_high")
    if isinstance(low, int | float) and isinstance(high, int | float) and low != high:
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}"


def _results_links(job: Job) -> str:
    """Result links of jobs that have items (training jobs report through GET /jobs/{id})."""
    if job.kind == "training":
        return ""
    return f" (<a href='/jobs/{job.id}/results'>results</a>, <a href='/jobs/{job.id}/results?format=csv'>csv</a>)"


def _progress(job: Job) -> str:
    if job.kind == "training":
        return f"epoch {job.progress_done}/{job.progress_total}"
    failed = f", {job.progress_failed} failed" if job.progress_failed else ""
    return f"{job.progress_done}/{job.progress_total} done{failed}"
