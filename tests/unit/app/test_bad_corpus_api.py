"""``POST /predict`` refuses every file of the broken-CIF corpus with a 4xx JSON ``detail``, never a 5xx.

The API parses the upload itself; files that parse but cannot be gridded (an element without UFF parameters,
a supercell over the atom limit) fail in the voxel task, run here in-process (``inline_worker``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

BAD = Path(__file__).resolve().parents[2] / "data" / "bad"
CORPUS = sorted(p for p in BAD.iterdir() if p.is_file() and p.suffix != ".py")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One embedded app (workers off, tasks inline) with a registered model row, shared by the corpus."""
    from fastapi.testclient import TestClient

    from app.core import queue
    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.db.tables import ModelVersion
    from app.main import create_app
    from app.services.registry import params_hash_of
    from worker.pipeline import predict_chunk, voxelize_chunk
    from worker.runtime import WorkerContext

    settings = Settings(data_dir=tmp_path_factory.mktemp("corpus-api"), embedded_workers=False,
                        register_shipped_model=False, sweep_interval_s=0)
    upgrade(settings.db_url)
    card = {"name": "m", "version": "1", "voxel_params": {},
            "targets": [{"name": "ch4", "unit": "mol/kg", "property": "CH4 uptake"}]}
    with session_scope(settings.db_url) as session:
        session.add(ModelVersion(name="m", version="1", ref="m:1", params_hash=params_hash_of(card), card=card,
                                 storage_prefix="models/m/1/"))
    ctx = WorkerContext(settings)
    patch = pytest.MonkeyPatch()
    patch.setattr(queue, "enqueue_voxelize", lambda ids, settings=None: voxelize_chunk(ctx, list(ids)))
    patch.setattr(queue, "enqueue_predict", lambda ids, settings=None, **_: predict_chunk(ctx, list(ids)))
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client
    finally:
        patch.undo()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_predict_refuses_bad_file_with_a_4xx_detail(api, path: Path) -> None:  # type: ignore[no-untyped-def]
    r = api.post("/predict", files={"file": (path.name, path.read_bytes())}, data={"wait": "30"})
    assert 400 <= r.status_code < 500, f"{r.status_code}: {r.text[:500]}"
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail.strip()
