"""GET /: a small lab dashboard (recent jobs, models, upload forms)."""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from app.api.deps import SessionDep
from app.db.tables import Job
from app.services import registry

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
def dashboard(session: SessionDep) -> HTMLResponse:
    """The lab dashboard."""
    e = html.escape
    with session.begin():
        models = registry.list_models(session)
        jobs = list(session.scalars(select(Job).order_by(Job.created_at.desc()).limit(25)))
        model_rows = "".join(
            f"<tr><td>{e(m.ref)}</td><td>{e(', '.join(str(t.get('name')) for t in m.card.get('targets', [])))}</td>"
            f"<td>{e(str((m.card.get('metrics') or {}).get('r2', {}).get('value', '')))}</td>"
            f"<td>{m.created_at:%Y-%m-%d %H:%M}</td></tr>" for m in models
        ) or "<tr><td colspan=4>no model registered</td></tr>"
        job_rows = "".join(
            f"<tr><td><a href='/jobs/{j.id}'>{j.id[:8]}</a> (<a href='/jobs/{j.id}/results?format=csv'>csv</a>)</td>"
            f"<td>{e(j.kind)}</td><td>{e(j.status)}</td><td>{j.progress_done}+{j.progress_failed}/"
            f"{j.progress_total}</td><td>{j.created_at:%Y-%m-%d %H:%M:%S}</td></tr>" for j in jobs
        )
    return HTMLResponse(PAGE.format(models=model_rows, jobs=job_rows))
