"""Embedded mode end to end: SQLite + local storage + the Celery worker in threads of the API process."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from tests.integration.helpers import BROKEN_CIFS, MODEL_NAME, MODEL_VERSION, wait_job


@pytest.fixture(scope="module")
def embedded_client(model_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """TestClient over an embedded app (migrated SQLite, fixture model registered, in-process workers)."""
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.main import create_app
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri

    settings = Settings(data_dir=tmp_path_factory.mktemp("embedded"), register_shipped_model=False, device="cpu",
                        embedded_concurrency=2, inference={"batch_size": 8, "batch_timeout_ms": 20})
    assert settings.embedded
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        register_model_dir(session, store_from_uri(settings.store_uri), model_dir)
    with TestClient(create_app(settings)) as client:
        yield client


def test_embedded_predict_and_cache_hit(embedded_client, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cif = (cif_dir / "KEGZOL04_clean.cif").read_bytes()
    r = embedded_client.post("/predict", files={"file": ("KEGZOL04_clean.cif", cif)}, data={"wait": "60"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded"
    assert body["prediction"]["model"] == f"{MODEL_NAME}:{MODEL_VERSION}"
    assert body["prediction"]["unit"] == "mol/kg"
    assert body["structure"]["name"] == "KEGZOL04_clean" and body["structure"]["n_atoms"] == 40
    assert body["timings"]["cache_hit"] is False
    again = embedded_client.post("/predict", files={"file": ("renamed.cif", cif)}, data={"model": MODEL_NAME})
    assert again.status_code == 200 and again.json()["timings"]["cache_hit"] is True
    assert again.json()["prediction"]["value"] == pytest.approx(body["prediction"]["value"])
    health = embedded_client.get("/health").json()
    assert health["mode"] == "embedded" and health["status"] == "ok"


def test_embedded_screening_zip(embedded_client, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(cif_dir.glob("*.cif"))[:6]:
            z.write(p, f"set/{p.name}")
        z.writestr("not_a_cif.cif", BROKEN_CIFS["not_a_cif.cif"])
    r = embedded_client.post("/screenings", files=[("files", ("set.zip", buf.getvalue()))], data={"name": "emb"})
    assert r.status_code == 202, r.text
    job = wait_job(embedded_client, r.json()["job_id"], 120)
    assert job["status"] == "succeeded" and job["progress"] == {"done": 6, "failed": 1, "total": 7}
    items = embedded_client.get(f"/jobs/{job['id']}/results").json()["items"]
    values = [i["prediction"]["value"] for i in items if i["prediction"]]
    assert values == sorted(values, reverse=True)
    assert items[-1]["status"] == "failed" and "not a CIF" in items[-1]["error"]


def test_known_bytes_skip_the_voxels_stage_and_an_evicted_grid_is_rebuilt(embedded_client, cif_dir: Path
                                                                          ) -> None:  # type: ignore[no-untyped-def]
    from app.storage import store_from_uri

    # (not FIGXAU_clean: its deuterated copy, screened above, is the same structure from other bytes)
    names = ["BUKRUW01_clean.cif", "SAYTUJ_clean.cif", "EDUWAB_clean.cif"]
    files = [("files", (n, (cif_dir / n).read_bytes())) for n in names]

    def screen() -> list[dict]:
        r = embedded_client.post("/screenings", files=files, data={"name": "known"})
        assert r.status_code == 202, r.text
        job = wait_job(embedded_client, r.json()["job_id"], 120)
        assert job["status"] == "succeeded" and job["progress"] == {"done": 3, "failed": 0, "total": 3}
        items = embedded_client.get(f"/jobs/{job['id']}/results").json()["items"]
        return sorted(items, key=lambda i: i["name"])

    first = screen()
    again = screen()  # the same bytes: straight to inference, no parse, grids from the cache, same values
    assert all(i["timings"]["parse_ms"] == 0.0 and i["timings"]["cache_hit"] is True for i in again)
    assert [i["prediction"]["value"] for i in again] == pytest.approx([i["prediction"]["value"] for i in first])

    store = store_from_uri(embedded_client.app.state.settings.store_uri)
    grids = [k for k in store.list("voxels/") if k.endswith(".npy.gz")]
    for key in grids:  # evicted from the cache: the inference stage rebuilds each grid from the stored CIF
        store.delete(key)
    rebuilt = screen()
    assert all(i["timings"]["cache_hit"] is False and i["timings"]["voxelize_ms"] > 0 for i in rebuilt)
    assert [i["prediction"]["value"] for i in rebuilt] == pytest.approx([i["prediction"]["value"] for i in first])


def test_embedded_errors(embedded_client, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cif = (cif_dir / "KEGZOL04_clean.cif").read_bytes()
    r = embedded_client.post("/predict", files={"file": ("x.cif", cif)}, data={"model": "nope:9"})
    assert r.status_code == 422 and f"{MODEL_NAME}:{MODEL_VERSION}" in r.json()["detail"]
    r = embedded_client.post("/predict", files={"file": ("x.cif", BROKEN_CIFS["not_a_cif.cif"])})
    assert r.status_code == 422 and "not a CIF" in r.json()["detail"]
    r = embedded_client.post("/predict", files={"file": ("x.cif", BROKEN_CIFS["binary.cif"])})
    assert r.status_code == 422
