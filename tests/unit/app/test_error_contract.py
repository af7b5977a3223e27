"""One error contract: every error is JSON with a string ``detail``; bounded pagination; CSV streams every row."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest


def test_validation_error_is_one_sentence_plus_the_original_list(client, settings) -> None:  # type: ignore[no-untyped-def]
    """Regression: a huge offset reached SQL (500: Python int too large to convert to SQLite INTEGER)."""
    r = client.get(f"/jobs/{_screening(settings, 1)}/results", params={"offset": "9223372036854775808", "limit": "0"})
    assert r.status_code == 422
    body = r.json()
    assert isinstance(body["detail"], str)
    assert "query parameter 'offset'" in body["detail"] and "query parameter 'limit'" in body["detail"]
    assert "less than or equal to 10000000" in body["detail"]
    assert isinstance(body["errors"], list) and {tuple(e["loc"]) for e in body["errors"]} == {
        ("query", "offset"), ("query", "limit")}


def test_missing_form_field_names_it(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/predict", data={"model": "m"})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("invalid request: form field 'file'")


def test_unknown_route_and_wrong_method_keep_a_string_detail(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = client.delete("/predict")
    assert r.status_code == 405 and isinstance(r.json()["detail"], str) and "POST" in r.headers["allow"]


def test_openapi_documents_the_error_bodies(client) -> None:  # type: ignore[no-untyped-def]
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["HTTPValidationError"]["properties"]["detail"] == {"type": "string", "title": "Detail"}
    assert schemas["ErrorDetail"]["required"] == ["detail"]
    predict = spec["paths"]["/predict"]["post"]["responses"]
    assert predict["413"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorDetail"}
    assert "500" in predict


@pytest.mark.timeout(120)
def test_model_that_cannot_load_is_a_500_with_the_job(client, model_row, inline_worker,  # type: ignore[no-untyped-def]
                                                      cif_dir: Path) -> None:
    """Regression: a model failing to load answered 200 with ``"status": "failed"``."""
    cif = (cif_dir / "KEGZOL04_clean.cif").read_bytes()
    r = client.post("/predict", files={"file": ("KEGZOL04_clean.cif", cif)}, data={"wait": "60"})
    assert r.status_code == 500, r.text
    body = r.json()
    assert "cannot load model m:1" in body["detail"] and body["job_id"] and body["item_id"]
    assert client.get(f"/jobs/{body['job_id']}").json()["status"] == "failed"


def test_dependency_failures_are_503() -> None:
    from app.api.errors import failed_job_status

    assert failed_job_status("model m:1 is not registered") == 503
    assert failed_job_status("gave up after 5 attempts; last error: OperationalError: database is locked") == 503
    assert failed_job_status("cannot load model m:1: weights.pt is corrupt") == 500


def _screening(settings, n: int) -> str:  # type: ignore[no-untyped-def]
    """A screening of ``n`` items, every other one predicted (value = its position), straight into the DB."""
    from sqlalchemy import insert

    from app.db.session import session_scope
    from app.db.tables import Job, JobItem, JobKind, ModelVersion, Prediction, Structure, new_id

    with session_scope(settings.db_url) as session:
        model = ModelVersion(name="big", version="1", ref="big:1", params_hash="p", card={}, storage_prefix="x/")
        job = Job(kind=JobKind.screening, status="running", progress_total=n)
        session.add_all([model, job, Structure(sha256="s" * 64, name="s", formula="C", n_atoms=1, raw_key="k")])
        session.flush()
        ids = [new_id() for _ in range(n)]
        session.execute(insert(JobItem), [
            {"id": ids[i], "job_id": job.id, "position": i, "name": f"cif_{i}.cif", "raw_key": "k",
             "status": "succeeded" if i % 2 else "queued", "structure_sha256": "s" * 64 if i % 2 else None,
             "stage": "voxels", "attempts": 0} for i in range(n)])
        predictions = [{"id": new_id(), "item_id": ids[i], "structure_sha256": "s" * 64, "model_id": model.id,
                        "params_hash": "p", "value": float(i), "values": [float(i)]} for i in range(1, n, 2)]
        if predictions:
            session.execute(insert(Prediction), predictions)
        return job.id


def _csv_names(text: str) -> list[str]:
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["rank", "name", "status"]
    assert [int(r[0]) for r in rows[1:]] == list(range(1, len(rows)))
    return [r[1] for r in rows[1:]]


def test_csv_streams_every_row_in_json_order(client, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from app.services import jobs as jobs_service

    monkeypatch.setattr(jobs_service, "CSV_BATCH", 4)
    job_id = _screening(settings, 11)
    for order in ("desc", "asc", "input"):
        r = client.get(f"/jobs/{job_id}/results", params={"format": "csv", "order": order})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        items = client.get(f"/jobs/{job_id}/results", params={"order": order}).json()["items"]
        assert _csv_names(r.text) == [i["name"] for i in items]
    names = _csv_names(client.get(f"/jobs/{job_id}/results", params={"format": "csv"}).text)
    assert names[:3] == ["cif_9.cif", "cif_7.cif", "cif_5.cif"] and names[-1] == "cif_10.cif"


@pytest.mark.timeout(120)
def test_csv_is_not_cut_at_10000_rows(client, settings) -> None:  # type: ignore[no-untyped-def]
    """Regression: the CSV export silently stopped at 10,000 rows."""
    job_id = _screening(settings, 10_050)
    r = client.get(f"/jobs/{job_id}/results", params={"format": "csv"})
    assert r.status_code == 200
    names = _csv_names(r.text)
    assert len(names) == 10_050 and len(set(names)) == 10_050
    page = client.get(f"/jobs/{job_id}/results", params={"limit": 10, "offset": 10_040}).json()
    assert page["total"] == 10_050 and [i["name"] for i in page["items"]] == names[10_040:]
