"""API keys: 401 without one, per-owner jobs and models, 409 on a taken model version, rate limits, quotas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture()
def auth_settings(settings):  # type: ignore[no-untyped-def]
    """The embedded test settings with keys required."""
    return settings.model_copy(update={"auth": settings.auth.model_copy(update={"required": True})})


@pytest.fixture()
def keys(auth_settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """alice, bob (ordinary keys) and root (admin)."""
    from app.db.session import session_scope
    from app.services.keys import create_key

    with session_scope(auth_settings.db_url) as session:
        return {"alice": create_key(session, "alice"), "bob": create_key(session, "bob"),
                "root": create_key(session, "root", admin=True)}


@pytest.fixture()
def api(auth_settings, model_row, sent):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app

    with TestClient(create_app(auth_settings)) as c:
        yield c


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _screen(api: Any, key: str, cif_dir: Path, n: int = 2, **headers: str) -> str:
    files = [("files", (p.name, p.read_bytes())) for p in sorted(cif_dir.glob("*.cif"))[:n]]
    r = api.post("/screenings", files=files, headers={**_h(key), **headers})
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def test_keys_are_required_by_default_in_scaled_mode_only() -> None:
    from app.core.config import Settings

    assert Settings(database_url="postgresql://u@h/db").auth_required is True
    assert Settings().auth_required is False  # embedded: SQLite on 127.0.0.1
    assert Settings(database_url="postgresql://u@h/db", auth={"required": False}).auth_required is False


def test_without_a_valid_key_every_api_call_is_401_json(api, keys, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cif = (cif_dir / "KEGZOL04_clean.cif").read_bytes()
    for method, path, kw in (("post", "/predict", {"files": {"file": ("k.cif", cif)}}), ("get", "/jobs", {}),
                             ("get", "/models", {}), ("get", "/jobs/x", {}), ("delete", "/jobs/x", {})):
        for headers in ({}, _h("rk_not-a-key"), {"Authorization": "Basic abc"}):
            r = getattr(api, method)(path, headers=headers, **kw)
            assert r.status_code == 401, (path, r.text)
            assert isinstance(r.json()["detail"], str) and r.headers["www-authenticate"] == "Bearer"
    assert api.get("/health").status_code in (200, 503)  # probes stay open
    assert api.get("/").status_code == 200  # the page loads; its API calls ask for the key


def test_jobs_are_visible_only_to_their_key_and_admins(api, keys, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    job_id = _screen(api, keys["alice"], cif_dir)
    for path in (f"/jobs/{job_id}", f"/jobs/{job_id}/results", f"/jobs/{job_id}/results?format=csv"):
        assert api.get(path, headers=_h(keys["alice"])).status_code == 200
        r = api.get(path, headers=_h(keys["bob"]))
        assert r.status_code == 404 and job_id in r.json()["detail"]
        assert api.get(path, headers=_h(keys["root"])).status_code == 200
    assert api.post(f"/jobs/{job_id}/cancel", headers=_h(keys["bob"])).status_code == 404
    assert api.delete(f"/jobs/{job_id}", headers=_h(keys["bob"])).status_code == 404
    mine = api.get("/jobs", headers=_h(keys["alice"])).json()
    assert [j["id"] for j in mine["data"]] == [job_id] and mine["total"] == 1
    assert api.get("/jobs", headers=_h(keys["bob"])).json()["total"] == 0
    assert api.get("/jobs", headers=_h(keys["root"])).json()["total"] == 1
    assert api.get("/jobs", params={"status": "succeeded"}, headers=_h(keys["alice"])).json()["total"] == 0
    assert api.get("/jobs", params={"kind": "screening", "status": "queued"},
                   headers=_h(keys["alice"])).json()["total"] == 1
    assert api.get("/jobs", params={"status": "nonsense"}, headers=_h(keys["alice"])).status_code == 422
    page = api.get("/jobs", params={"limit": 1, "offset": 1}, headers=_h(keys["alice"])).json()
    assert page["data"] == [] and page["limit"] == 1


def test_idempotency_keys_are_per_owner(api, keys, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    a1 = _screen(api, keys["alice"], cif_dir, **{"Idempotency-Key": "k1"})
    assert _screen(api, keys["alice"], cif_dir, **{"Idempotency-Key": "k1"}) == a1
    assert _screen(api, keys["bob"], cif_dir, **{"Idempotency-Key": "k1"}) != a1


def test_delete_removes_the_job_its_results_and_its_uploads(api, keys, auth_settings, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from app.storage import store_from_uri

    store = store_from_uri(auth_settings.store_uri)
    job_id = _screen(api, keys["alice"], cif_dir, n=1)
    assert store.list("uploads/")
    r = api.delete(f"/jobs/{job_id}", headers=_h(keys["alice"]))
    assert r.status_code == 204
    assert api.get(f"/jobs/{job_id}", headers=_h(keys["alice"])).status_code == 404
    assert store.list("uploads/") == []


def test_an_upload_shared_with_another_job_is_kept(api, keys, auth_settings, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from app.storage import store_from_uri

    store = store_from_uri(auth_settings.store_uri)
    first = _screen(api, keys["alice"], cif_dir, n=1)
    _screen(api, keys["bob"], cif_dir, n=1)  # the same bytes
    assert api.delete(f"/jobs/{first}", headers=_h(keys["alice"])).status_code == 204
    assert len(store.list("uploads/")) == 1


def test_models_of_a_key_live_in_its_namespace(api, keys, auth_settings, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.db.tables import ModelVersion

    card = {"name": "mine", "version": "1", "voxel_params": {}, "targets": [{"name": "ch4", "unit": "mol/kg"}]}
    with session_scope(auth_settings.db_url) as session:
        session.add(ModelVersion(name="alice/mine", version="1", ref="alice/mine:1", params_hash="x", card=card,
                                 storage_prefix="models/alice/mine/1/", owner="alice"))
    refs = {k: [m["ref"] for m in api.get("/models", headers=_h(keys[k])).json()["data"]] for k in keys}
    assert "alice/mine:1" in refs["alice"] and "alice/mine:1" in refs["root"] and "alice/mine:1" not in refs["bob"]
    assert "m:1" in refs["bob"]  # global models are everyone's
    assert api.get("/models/alice/mine", headers=_h(keys["alice"])).status_code == 200
    assert api.get("/models/alice/mine", headers=_h(keys["bob"])).status_code == 404
    cif = (cif_dir / "KEGZOL04_clean.cif").read_bytes()
    r = api.post("/predict", files={"file": ("k.cif", cif)}, data={"model": "alice/mine:1", "wait": "0"},
                 headers=_h(keys["bob"]))
    assert r.status_code == 422 and "unknown model" in r.json()["detail"]
    r = api.post("/predict", files={"file": ("k.cif", cif)}, data={"model": "alice/mine:1", "wait": "0"},
                 headers=_h(keys["alice"]))
    assert r.status_code == 202, r.text


def _training_zip(cif_dir: Path) -> bytes:
    from tests.integration.helpers import training_zip

    cifs = sorted(cif_dir.glob("*_clean.cif"))[:3]
    return training_zip(cifs, list(range(len(cifs))))


def test_a_taken_model_version_is_409_and_names_are_namespaced(api, keys, auth_settings, sent,  # type: ignore[no-untyped-def]
                                                              cif_dir: Path) -> None:
    from app.db.session import session_scope
    from app.db.tables import Job

    data = _training_zip(cif_dir)
    # the global model m:1 belongs to nobody: an admin asking for m:1 again gets 409, never a silent keep
    r = api.post("/training-jobs", files={"file": ("t.zip", data)}, data={"targets": "ch4", "name": "m",
                                                                          "version": "1"}, headers=_h(keys["root"]))
    assert r.status_code == 409 and "m:1 already exists" in r.json()["detail"]
    # alice's "m" is alice/m: no clash with the global m, and registered in her namespace
    r = api.post("/training-jobs", files={"file": ("t.zip", data)}, data={"targets": "ch4", "name": "m",
                                                                          "version": "1"}, headers=_h(keys["alice"]))
    assert r.status_code == 202, r.text
    with session_scope(auth_settings.db_url) as session:
        job = session.get(Job, r.json()["job_id"])
        assert job is not None and job.owner == "alice" and job.params["owner"] == "alice"


def test_registering_an_existing_version_is_a_conflict(auth_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.services.errors import ConflictError
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri
    from tests.integration.helpers import make_test_model

    folder = make_test_model(tmp_path / "m", name="dup", version="1")
    store = store_from_uri(auth_settings.store_uri)
    with session_scope(auth_settings.db_url) as session:
        first = register_model_dir(session, store, folder, owner="alice", exist_ok=False)
        assert first.ref == "alice/dup:1" and first.owner == "alice"
        assert register_model_dir(session, store, folder, owner="alice").ref == "alice/dup:1"  # start-up: reuse
        with pytest.raises(ConflictError, match="already exists"):
            register_model_dir(session, store, folder, owner="alice", exist_ok=False)


def test_rate_limit_is_429_with_retry_after(auth_settings, keys, model_row, sent) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app

    limited = auth_settings.model_copy(update={"auth": auth_settings.auth.model_copy(
        update={"requests_per_minute": 3})})
    with TestClient(create_app(limited)) as c:
        codes = [c.get("/jobs", headers=_h(keys["alice"])).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = c.get("/jobs", headers=_h(keys["alice"]))
        assert "3 requests per minute" in r.json()["detail"] and int(r.headers["retry-after"]) >= 1
        assert c.get("/jobs", headers=_h(keys["bob"])).status_code == 200  # per key


def test_concurrent_job_quota_is_429(auth_settings, keys, model_row, sent, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.main import create_app

    quota = auth_settings.model_copy(update={"auth": auth_settings.auth.model_copy(update={"max_active_jobs": 1})})
    with TestClient(create_app(quota)) as c:
        _screen(c, keys["alice"], cif_dir)
        files = [("files", (p.name, p.read_bytes())) for p in sorted(cif_dir.glob("*.cif"))[:1]]
        r = c.post("/screenings", files=files, headers=_h(keys["alice"]))
        assert r.status_code == 429 and "the limit is 1" in r.json()["detail"] and r.headers["retry-after"]
        assert c.post("/screenings", files=files, headers=_h(keys["bob"])).status_code == 202


def test_revoked_key_stops_working(api, keys, auth_settings) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.services.keys import revoke_key

    assert api.get("/jobs", headers=_h(keys["bob"])).status_code == 200
    with session_scope(auth_settings.db_url) as session:
        revoke_key(session, "bob")
    r = api.get("/jobs", headers=_h(keys["bob"]))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_cli_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from app.cli import main
    from app.core.config import get_settings
    from app.db.session import session_scope
    from app.services.keys import caller_for

    monkeypatch.setenv("RETNET_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        assert main(["db", "upgrade"]) == 0
        capsys.readouterr()
        assert main(["keys", "create", "lab-a", "--admin"]) == 0
        key = capsys.readouterr().out.strip().splitlines()[-1]
        assert key.startswith("rk_") and len(key) > 40
        with session_scope(get_settings().db_url) as session:
            caller = caller_for(session, key)
            assert caller is not None and caller.name == "lab-a" and caller.admin
        assert main(["keys", "create", "lab-a"]) == 2  # taken
        assert main(["keys", "list"]) == 0
        listing = capsys.readouterr().out
        assert "lab-a,true" in listing and key not in listing
        assert main(["keys", "revoke", "lab-a"]) == 0
        with session_scope(get_settings().db_url) as session:
            assert caller_for(session, key) is None
        assert main(["keys", "revoke", "nobody"]) == 2
    finally:
        get_settings.cache_clear()
