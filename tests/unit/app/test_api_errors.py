"""Precise 4xx answers, health and metrics without any model or worker."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest


def test_health_reports_missing_model(client) -> None:  # type: ignore[no-untyped-def]
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "degraded" and body["model"]["status"] == "missing"
    assert body["database"]["status"] == "ok" and body["mode"] == "scaled"


def test_predict_without_model_is_503(client, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cif = (cif_dir / "KEGZOL04_clean.cif").read_bytes()
    r = client.post("/predict", files={"file": ("KEGZOL04_clean.cif", cif)})
    assert r.status_code == 503
    assert "no model is registered" in r.json()["detail"]


def test_empty_file_is_400(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/predict", files={"file": ("empty.cif", b"")})
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def test_too_large_is_413(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/predict", files={"file": ("big.cif", b"x" * 60_000)})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_zip_to_predict_is_400(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/predict", files={"file": ("many.zip", b"PK")})
    assert r.status_code == 400 and "/screenings" in r.json()["detail"]


def test_screening_zip_without_cifs_is_422(client) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes.txt", "hello")
    r = client.post("/screenings", files=[("files", ("set.zip", buf.getvalue()))])
    assert r.status_code == 422 and "no .cif files" in r.json()["detail"]


def test_screening_unsafe_zip_is_400(client) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../../etc/x.cif", "data_x")
    r = client.post("/screenings", files=[("files", ("set.zip", buf.getvalue()))])
    assert r.status_code == 400 and "unsafe path" in r.json()["detail"]


def test_unknown_job_and_model_are_404(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/jobs/nope").status_code == 404
    r = client.get("/models/nope")
    assert r.status_code == 404 and "available models" in r.json()["detail"]


def test_training_requires_zip(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/training-jobs", files={"file": ("labels.csv", b"name,y\n")}, data={"targets": "y"})
    assert r.status_code == 400


def test_docs_metrics_dashboard(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/predict", "/screenings", "/jobs/{job_id}", "/jobs/{job_id}/results", "/training-jobs", "/models",
              "/models/{name}", "/health", "/metrics"):
        assert p in paths
    m = client.get("/metrics")
    assert m.status_code == 200 and "retnet_voxel_cache_hits" in m.text and "retnet_http_requests" in m.text
    assert "RetNet Service" in client.get("/").text


def test_unmigrated_database_refuses_to_start(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.db.migrate import DatabaseNotMigratedError
    from app.main import create_app

    s = Settings(data_dir=tmp_path, embedded_workers=False)
    with pytest.raises(DatabaseNotMigratedError, match="retnet db upgrade"):
        with TestClient(create_app(s)):
            pass


def test_empty_cif_in_a_screening_fails_only_its_item(client, settings, model_row, sent,  # type: ignore[no-untyped-def]
                                                      cif_dir: Path) -> None:
    """Regression: one empty file among the screening's files used to reject the whole screening with 400."""
    from worker.pipeline import voxelize_chunk
    from worker.runtime import WorkerContext

    cif = (cif_dir / "KEGZOL04_clean.cif").read_bytes()
    r = client.post("/screenings", files=[("files", ("KEGZOL04_clean.cif", cif)), ("files", ("empty.cif", b""))])
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.json()["job"]["progress"]["total"] == 2 and len(sent["voxelize"]) == 2
    voxelize_chunk(WorkerContext(settings), [sent["voxelize"][1]])  # the empty one: fails at parse, no grid needed
    items = client.get(f"/jobs/{job_id}/results", params={"order": "input"}).json()["items"]
    assert items[1]["status"] == "failed" and "empty" in items[1]["error"]
    assert items[0]["status"] == "queued"
    # an empty zip is still refused outright
    r = client.post("/screenings", files=[("files", ("set.zip", b""))])
    assert r.status_code == 400 and "empty" in r.json()["detail"]


def _two_labelled_cifs_zip() -> bytes:
    """A training zip: two committed CIFs and a labels CSV with target ``y``."""
    buf = io.BytesIO()
    cifs = Path(__file__).resolve().parents[2] / "data" / "cifs"
    with zipfile.ZipFile(buf, "w") as z:
        for name in ("KEGZOL04_clean", "SAYTUJ_clean"):
            z.write(cifs / f"{name}.cif", f"{name}.cif")
        z.writestr("labels.csv", "name,y\nKEGZOL04_clean,1.0\nSAYTUJ_clean,2.0\n")
    return buf.getvalue()


def test_training_freeze_without_base_model_is_422(client, model_row, sent) -> None:  # type: ignore[no-untyped-def]
    """Regression: freeze=conv without base_model trained a net with frozen random convolutions."""
    archive = _two_labelled_cifs_zip()
    r = client.post("/training-jobs", files={"file": ("t.zip", archive)},
                    data={"targets": "y", "freeze": "conv", "epochs": "1"})
    assert r.status_code == 422 and "base_model" in r.json()["detail"]
    assert sent["training"] == []
    r = client.post("/training-jobs", files={"file": ("t.zip", archive)},
                    data={"targets": "y", "freeze": "conv", "base_model": model_row, "epochs": "1"})
    assert r.status_code == 202 and len(sent["training"]) == 1


def test_training_trees_need_one_target_and_are_kept(client, sent, settings) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.db.tables import Job

    archive = _two_labelled_cifs_zip()
    r = client.post("/training-jobs", files={"file": ("t.zip", archive)},
                    data={"targets": "y,y2", "trees": "true", "epochs": "1"})
    assert r.status_code == 422 and "one target" in r.json()["detail"] and sent["training"] == []
    r = client.post("/training-jobs", files={"file": ("t.zip", archive)},
                    data={"targets": "y", "trees": "true", "epochs": "1"})
    assert r.status_code == 202 and len(sent["training"]) == 1
    with session_scope(settings.db_url) as session:
        assert session.get(Job, sent["training"][0]).params["trees"] is True


def test_training_input_clip_needs_a_base_model_and_is_kept(client, model_row, sent,  # type: ignore[no-untyped-def]
                                                           settings) -> None:
    from app.db.session import session_scope
    from app.db.tables import Job
    from models.training_job import train_config

    archive = _two_labelled_cifs_zip()
    r = client.post("/training-jobs", files={"file": ("t.zip", archive)},
                    data={"targets": "y", "input_clip": "5", "epochs": "1"})
    assert r.status_code == 422 and "base_model" in r.json()["detail"] and sent["training"] == []
    r = client.post("/training-jobs", files={"file": ("t.zip", archive)},
                    data={"targets": "y", "input_clip": "0", "base_model": model_row, "epochs": "1"})
    assert r.status_code == 422 and sent["training"] == []
    r = client.post("/training-jobs", files={"file": ("t.zip", archive)},
                    data={"targets": "y", "input_clip": "5", "base_model": model_row, "epochs": "1"})
    assert r.status_code == 202 and len(sent["training"]) == 1
    with session_scope(settings.db_url) as session:
        params = session.get(Job, sent["training"][0]).params
    assert params["input_clip"] == 5.0 and train_config(params).fine_tune_clip == 5.0
