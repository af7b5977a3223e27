"""The lab dashboard's pages and files: served by the API, self-contained (no CDN), every module importable."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

import pytest

STATIC = Path(__file__).resolve().parents[3] / "app" / "static"
IMPORT = re.compile(r"""^\s*import\s[^;]*?from\s+["']([^"']+)["']""", re.MULTILINE)
SCRIPT = re.compile(r"""<script[^>]*\ssrc="([^"?]+)""")


def _module_graph(client: Any, entry: str) -> set[str]:
    """Every ES module a page loads (following relative imports), each fetched from the app."""
    seen: set[str] = set()
    todo = [entry]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        r = client.get(url)
        assert r.status_code == 200, f"{url}: {r.status_code}"
        assert "javascript" in r.headers["content-type"], url
        for target in IMPORT.findall(r.text):
            assert target.startswith("."), f"{url} imports {target!r}: only relative imports of vendored files"
            todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(url), target)))
    return seen


@pytest.mark.parametrize(("path", "script"), [("/", "home.js"), ("/ui/models", "models.js"),
                                              ("/ui/jobs/0b7d6c1e-0000-4000-8000-000000000001", "job.js")])
def test_pages_are_html_shells_whose_modules_all_load(client, path: str, script: str) -> None:  # type: ignore[no-untyped-def]
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-cache"
    scripts = SCRIPT.findall(r.text)
    assert scripts == [f"/static/js/pages/{script}"]
    modules = _module_graph(client, scripts[0])
    assert "/static/js/api.js" in modules  # every page calls the API through the key-aware wrapper
    css = re.search(r'href="(/static/css/[^"?]+)', r.text)
    assert css and client.get(css.group(1)).status_code == 200
    assert '<html lang="en">' in r.text and "<title>" in r.text


def test_dashboard_has_the_upload_controls(client) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/").text
    assert re.search(r'<input type="file" id="file-input"[^>]*multiple[^>]*accept=".cif,.zip"', page)
    assert re.search(r'<input type="file" id="folder-input"[^>]*webkitdirectory', page)
    for element_id in ("dropzone", "model-select", "units-select", "submit-button", "job-list", "current-job"):
        assert f'id="{element_id}"' in page
    for control in ("file-input", "folder-input", "model-select", "units-select", "screening-name"):
        assert re.search(rf'<label[^>]*\sfor="{control}"', page), f"{control} has no label"


def test_job_page_carries_its_id_and_refuses_odd_ones(client) -> None:  # type: ignore[no-untyped-def]
    job_id = "3f1c2b9a-1111-4222-8333-444455556666"
    page = client.get(f"/ui/jobs/{job_id}").text
    assert f'data-job-id="{job_id}"' in page and "{{" not in page
    r = client.get("/ui/jobs/%3Cscript%3Ealert(1)")  # never reflected into a page
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/json")


def test_pages_need_no_key_but_the_api_does(settings) -> None:  # type: ignore[no-untyped-def]
    """With keys required the pages still load (they ask for the key, then send it with each call)."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    auth = settings.model_copy(update={"auth": settings.auth.model_copy(update={"required": True})})
    with TestClient(create_app(auth)) as c:
        for path in ("/", "/ui/models", "/ui/jobs/abc", "/static/js/api.js"):
            assert c.get(path).status_code == 200, path
        assert c.get("/jobs").status_code == 401 and c.get("/models").status_code == 401
    api_js = (STATIC / "js" / "api.js").read_text()
    assert "Authorization" in api_js and "Bearer" in api_js and "localStorage" in api_js


def test_static_files_load_nothing_from_elsewhere() -> None:
    """No CDN at run time: no script, style, image or fetch from another origin in any shipped file."""
    external = re.compile(r"""(?:src|href)\s*=\s*["']https?://|@import\s+url\(\s*["']?https?://"""
                          r"""|\bfrom\s+["']https?://|\bimport\(\s*["']https?://|fetch\(\s*["'`]https?://""")
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".html", ".js", ".css"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert not external.search(text), f"{path.relative_to(STATIC)} loads something from another origin"

