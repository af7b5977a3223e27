"""A hybrid model whose trees read numbers of the crystal itself (``ch4_widom``), served end to end (embedded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.integration.helpers import make_test_model, wait_job

NAME = "widom-hybrid"


@pytest.fixture(scope="module")
def widom_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained RetNet blended (weight 0.5) with trees that follow log10 K_H of the ``ch4_widom`` block."""
    from models.artifacts import save_trees
    from models.hybrid import HybridTrees, fit_trees, tree_features

    folder = make_test_model(tmp_path_factory.mktemp("widom") / NAME, name=NAME, version="1")
    rng = np.random.default_rng(0)
    grids = np.exp(-rng.normal(size=(60, 25, 25, 25))).astype(np.float32)
    widom = np.column_stack([np.linspace(-3.0, 1.0, 60), rng.uniform(5.0, 30.0, 60)])
    features = ("energy_histogram", "ch4_widom")
    rows = tree_features(grids, None, features, {"ch4_widom": widom})
    save_trees(folder, HybridTrees(fit_trees(rows, 4.0 + widom[:, 0], n_trees=20), 0.5, features),
               fitted_on="60 random grids")
    return folder


@pytest.fixture(scope="module")
def client(widom_model: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.main import create_app
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri

    settings = Settings(data_dir=tmp_path_factory.mktemp("embedded-widom"), register_shipped_model=False,
                        device="cpu", embedded_concurrency=2)
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        register_model_dir(session, store_from_uri(settings.store_uri), widom_model)
    with TestClient(create_app(settings)) as c:
        yield c


def _expected(model_dir: Path, cif: Path) -> float:
    """The model's prediction from the CIF, computed here: grid, Widom numbers of the crystal, blend."""
    from models.artifacts import load_model
    from models.descriptors import compute_crystal_blocks
    from models.structure import load_crystal
    from models.voxels import compute_voxels

    loaded = load_model(model_dir, device="cpu")
    crystal = load_crystal(cif)
    grid = compute_voxels(crystal, loaded.voxel_params)
    return float(loaded.predict(grid, crystal_blocks=compute_crystal_blocks(loaded.crystal_blocks, [crystal]))[0, 0])


def test_the_crystals_widom_numbers_are_computed_stored_and_rebuilt(client, widom_model: Path, cif_dir: Path
                                                                   ) -> None:  # type: ignore[no-untyped-def]
    from app.storage import store_from_uri
    from models.descriptors import crystal_block_tag

    cif = cif_dir / "KEGZOL04_clean.cif"
    expected = _expected(widom_model, cif)

    r = client.post("/predict", files={"file": (cif.name, cif.read_bytes())}, data={"model": NAME, "wait": "60"})
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    assert r.json()["prediction"]["value"] == pytest.approx(expected, rel=1e-5)

    def screen() -> float:  # a screening predicts again (known bytes: straight to the inference stage)
        r = client.post("/screenings", files=[("files", (cif.name, cif.read_bytes()))], data={"model": NAME})
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["job_id"], 120)
        assert job["progress"] == {"done": 1, "failed": 0, "total": 1}, job
        return float(client.get(f"/jobs/{job['id']}/results").json()["items"][0]["prediction"]["value"])

    store = store_from_uri(client.app.state.settings.store_uri)
    [key] = [k for k in store.list("crystal-blocks/") if k.endswith(f"_{crystal_block_tag('ch4_widom')}.npy")]
    store.delete(key)  # evicted: rebuilt from the stored CIF
    assert screen() == pytest.approx(expected, rel=1e-5) and store.exists(key)
    store.put(key, b"not a block")  # unreadable: recomputed, not served and not a failure
    assert screen() == pytest.approx(expected, rel=1e-5)
    assert store.get(key) != b"not a block"


def test_a_screening_with_a_crystal_block_model_keeps_bad_files_apart(client, cif_dir: Path
                                                                      ) -> None:  # type: ignore[no-untyped-def]
    # FIGXAU_deuterated is FIGXAU_clean from other bytes: one crystal, its block read once for both items
    names = ["BUKRUW01_clean.cif", "FIGXAU_clean.cif", "FIGXAU_deuterated.cif", "SAYTUJ_clean.cif"]
    files = [("files", (n, (cif_dir / n).read_bytes())) for n in names]
    files.append(("files", ("broken.cif", b"data_x\n_cell_length_a 10\n")))
    r = client.post("/screenings", files=files, data={"name": "widom", "model": NAME})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], 120)
    assert job["progress"] == {"done": 4, "failed": 1, "total": 5}, job
    items = client.get(f"/jobs/{job['id']}/results").json()["items"]
    assert sorted(i["name"] for i in items if i["prediction"] is not None) == names
    values = {i["name"]: i["prediction"]["value"] for i in items if i["prediction"] is not None}
    assert values["FIGXAU_clean.cif"] == pytest.approx(values["FIGXAU_deuterated.cif"])


def test_a_training_job_with_trees_fits_them_on_the_crystals_widom_numbers_and_serves_them(
        client, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from app.storage import crystal_block_key, store_from_uri
    from models.hybrid import TREE_FEATURES
    from tests.integration.helpers import training_zip

    cifs = sorted(cif_dir.glob("*_clean.cif"))[:6]
    upload = training_zip(cifs, [1.0 + 0.5 * i for i in range(len(cifs))])
    r = client.post("/training-jobs", files={"file": ("train.zip", upload)},
                    data={"targets": "ch4", "epochs": "1", "batch_size": "2", "val_fraction": "0.34", "seed": "1",
                          "name": "tiny-widom", "version": "1", "unit": "mol/kg", "trees": "true"})
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["job_id"], 240)
    assert job["status"] == "succeeded", job
    trees = client.get("/models/tiny-widom").json()["latest"]["trees"]
    assert trees["features"] == list(TREE_FEATURES) and "ch4_widom" in trees["features"]
    new = cif_dir / "FIGXAU_disordered.cif"  # not in the training set
    pred = client.post("/predict", files={"file": (new.name, new.read_bytes())},
                       data={"model": "tiny-widom:1", "wait": "60"})
    assert pred.status_code == 200 and pred.json()["status"] == "succeeded", pred.text
    assert np.isfinite(pred.json()["prediction"]["value"])
    store = store_from_uri(client.app.state.settings.store_uri)
    assert store.exists(crystal_block_key(pred.json()["structure"]["sha256"], "ch4_widom"))
