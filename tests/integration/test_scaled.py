"""Scaled mode end to end: real Postgres, Redis broker and a Celery worker subprocess."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest

from tests.integration.helpers import BROKEN_CIFS, MODEL_NAME, MODEL_VERSION, coremof_cifs, training_zip, wait_job

pytestmark = pytest.mark.integration


def test_predict_end_to_end_then_cache_hit(scaled_client, worker, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cif = (cif_dir / "SAYTUJ_clean.cif").read_bytes()
    r = scaled_client.post("/predict", files={"file": ("SAYTUJ_clean.cif", cif)}, data={"wait": "90"})
    assert r.status_code == 200, (r.text, worker.tail())
    body = r.json()
    assert body["status"] == "succeeded"
    assert set(body) >= {"job_id", "status", "prediction", "structure", "timings"}
    assert body["prediction"]["model"] == f"{MODEL_NAME}:{MODEL_VERSION}"
    assert body["timings"]["cache_hit"] is False and body["timings"]["voxelize_ms"] > 0
    job = scaled_client.get(f"/jobs/{body['job_id']}").json()
    assert job["kind"] == "predict" and job["status"] == "succeeded"
    assert job["progress"] == {"done": 1, "failed": 0, "total": 1}

    def hits() -> float:
        text = scaled_client.get("/metrics").text
        line = next(ln for ln in text.splitlines() if ln.startswith("retnet_voxel_cache_hits_total"))
        return float(line.split()[-1])

    before = hits()
    again = scaled_client.post("/predict", files={"file": ("other_name.cif", cif)}, data={"wait": "60"})
    assert again.status_code == 200, again.text
    assert again.json()["timings"]["cache_hit"] is True
    assert again.json()["structure"]["sha256"] == body["structure"]["sha256"]
    assert hits() == before + 1
    health = scaled_client.get("/health").json()
    assert health["mode"] == "scaled" and health["status"] == "ok", health


def test_screening_of_coremof_with_broken_cifs(scaled_client, worker) -> None:  # type: ignore[no-untyped-def]
    files = coremof_cifs(20)
    assert len(files) == 20
    uploads = [("files", (p.name, p.read_bytes())) for p in files]
    uploads += [("files", (name, data)) for name, data in BROKEN_CIFS.items()]
    r = scaled_client.post("/screenings", files=uploads, data={"name": "coremof-20"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.headers["location"] == f"/jobs/{job_id}"
    seen_partial = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = scaled_client.get(f"/jobs/{job_id}").json()
        p = job["progress"]
        if 0 < p["done"] + p["failed"] < p["total"]:
            seen_partial = True
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert job["status"] == "succeeded", (job, worker.tail())
    total = len(files) + len(BROKEN_CIFS)
    assert job["progress"]["total"] == total
    assert job["progress"]["done"] + job["progress"]["failed"] == total
    assert job["progress"]["failed"] >= len(BROKEN_CIFS)
    assert job["progress"]["done"] >= 18  # real CoRE MOF CIFs predict (a rare one may be refused with a reason)
    assert seen_partial or job["progress"]["done"] > 0

    page = scaled_client.get(f"/jobs/{job_id}/results", params={"limit": 10}).json()
    assert page["total"] == total and len(page["items"]) == 10
    all_items = scaled_client.get(f"/jobs/{job_id}/results", params={"limit": 100}).json()["items"]
    values = [i["prediction"]["value"] for i in all_items if i["prediction"]]
    assert values == sorted(values, reverse=True)
    failed = [i for i in all_items if i["status"] == "failed"]
    assert {i["name"] for i in failed} >= set(BROKEN_CIFS)
    assert all(i["error"] for i in failed)
    csv_text = scaled_client.get(f"/jobs/{job_id}/results", params={"format": "csv"}).text
    assert csv_text.splitlines()[0].startswith("rank,name,status,value")
    assert len(csv_text.strip().splitlines()) == total + 1


def test_training_job_registers_a_model(scaled_client, worker, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cifs = sorted(p for p in cif_dir.glob("*_clean.cif"))[:6]
    upload = training_zip(cifs, [1.0 + 0.5 * i for i in range(len(cifs))])
    r = scaled_client.post(
        "/training-jobs", files={"file": ("train.zip", upload)},
        data={"targets": "ch4", "epochs": "2", "batch_size": "2", "val_fraction": "0.34", "seed": "1",
              "name": "tiny-ch4", "version": "1", "unit": "mol/kg", "translate": "true"},
    )
    assert r.status_code == 202, r.text
    job = wait_job(scaled_client, r.json()["job_id"], 240)
    assert job["status"] == "succeeded", (job, worker.tail())
    assert job["kind"] == "training" and job["progress"]["done"] == 2 and job["progress"]["total"] == 2
    assert job["details"]["epoch"] == 2 and "train_loss" in job["details"]
    assert job["result"]["model"] == "tiny-ch4:1" and "r2" in job["result"]["metrics"]
    models = scaled_client.get("/models").json()
    assert "tiny-ch4:1" in [m["ref"] for m in models["data"]]
    detail = scaled_client.get("/models/tiny-ch4").json()
    assert set(detail["latest"]["metrics"]["r2"]) >= {"value", "ci_low", "ci_high"}
    assert detail["latest"]["training_data"]["size"] == job["result"]["n_train"]
    assert detail["latest"]["training_data"]["translate"] is True  # the form option reached the worker
    assert job["result"]["n_train"] + job["result"]["n_val"] == len(cifs)
    pred = scaled_client.post("/predict", files={"file": (cifs[0].name, cifs[0].read_bytes())},
                              data={"model": "tiny-ch4:1", "wait": "60"})
    assert pred.status_code == 200, pred.text
    assert pred.json()["prediction"]["model"] == "tiny-ch4:1"
    assert pred.json()["timings"]["cache_hit"] is True  # same voxel params as the training grids


def test_training_job_validation_errors(scaled_client) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.cif", "data_a")
        z.writestr("labels.csv", "name,ch4\na,1\n")
    r = scaled_client.post("/training-jobs", files={"file": ("t.zip", buf.getvalue())}, data={"targets": "co2"})
    assert r.status_code == 422 and "co2" in r.json()["detail"]
    r = scaled_client.post("/training-jobs", files={"file": ("t.zip", buf.getvalue())},
                           data={"targets": "ch4", "base_model": "missing"})
    assert r.status_code == 422
