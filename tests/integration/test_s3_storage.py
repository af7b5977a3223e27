"""The S3 storage path against moto's standalone S3 server (a real HTTP endpoint on loopback)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import MODEL_NAME

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``moto_server`` on a free loopback port, with dummy credentials in the environment."""
    exe = shutil.which("moto_server")
    if exe is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_s3_store_roundtrip(s3_endpoint: str) -> None:
    from app.storage import store_from_uri
    from app.storage.s3 import S3Store

    store = store_from_uri("s3://retnet-test/some/prefix", endpoint_url=s3_endpoint)
    assert isinstance(store, S3Store)
    store.ensure_bucket()
    store.ping()
    assert not store.exists("a/b.bin")
    store.put("a/b.bin", b"hello")
    store.put("a/c.bin", b"world")
    assert store.exists("a/b.bin") and store.get("a/b.bin") == b"hello"
    assert store.list("a/") == ["a/b.bin", "a/c.bin"]
    store.delete("a/b.bin")
    assert not store.exists("a/b.bin")
    with pytest.raises(KeyError):
        store.get("a/b.bin")


def test_embedded_predict_with_s3_storage(s3_endpoint: str, model_dir: Path, cif_dir: Path,
                                          tmp_path: Path) -> None:
    """Raw uploads, model files and the voxel cache all live in S3; the second prediction hits the cache."""
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.main import create_app
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri

    settings = Settings(data_dir=tmp_path, storage_uri="s3://retnet-e2e/store", s3={"endpoint_url": s3_endpoint},
                        register_shipped_model=False, device="cpu", embedded_concurrency=2)
    store = store_from_uri(settings.store_uri, endpoint_url=s3_endpoint)
    store.ensure_bucket()  # type: ignore[attr-defined]
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        register_model_dir(session, store, model_dir)
    cif = (cif_dir / "EDUWAB_clean.cif").read_bytes()
    with TestClient(create_app(settings)) as client:
        first = client.post("/predict", files={"file": ("EDUWAB_clean.cif", cif)}, data={"model": MODEL_NAME})
        assert first.status_code == 200, first.text
        second = client.post("/predict", files={"file": ("copy.cif", cif)})
        assert second.status_code == 200 and second.json()["timings"]["cache_hit"] is True
        assert client.get("/health").json()["storage"]["detail"] == "s3://retnet-e2e/store"
    keys = store.list("")
    assert any(k.startswith("voxels/") and k.endswith(".npy.gz") for k in keys)
    assert any(k.startswith("uploads/") for k in keys) and any(k.startswith("models/") for k in keys)
