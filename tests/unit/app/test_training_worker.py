"""worker.training.run_training on the embedded database and local store (no broker, no worker process)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def six_cifs(cif_dir: Path) -> list[Path]:
    """Six CoRE MOF test CIFs, the structures of the training zips below."""
    return sorted(cif_dir.glob("*_clean.cif"))[:6]


@pytest.fixture
def training_zip(six_cifs: list[Path]) -> bytes:
    """A training upload: the six CIFs and labels.csv with made-up ``ch4`` labels 1.0, 1.5, … (mol/kg)."""
    from tests.integration.helpers import training_zip as make_zip

    return make_zip(six_cifs, [1.0 + 0.5 * i for i in range(len(six_cifs))])


def test_run_training_registers_the_model_and_caches_the_grids(client, settings, sent,  # type: ignore[no-untyped-def]
                                                               six_cifs: list[Path], training_zip: bytes) -> None:
    from app.storage import cached_store, decode_grid, voxel_key
    from models.params import VoxelParams
    from models.structure import load_crystal
    from worker.runtime import WorkerContext
    from worker.training import run_training

    r = client.post("/training-jobs", files={"file": ("train.zip", training_zip)},
                    data={"targets": "ch4", "epochs": "2", "batch_size": "2", "val_fraction": "0.34", "seed": "1",
                          "name": "tiny-ch4", "version": "1", "unit": "mol/kg", "translate": "true"})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert sent["training"] == [job_id]

    run_training(WorkerContext(settings, voxel_threads=1), job_id)

    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["progress"]["done"] == 2 and job["progress"]["total"] == 2
    assert job["details"]["phase"] == "done" and job["details"]["epoch"] == 2
    assert [e["epoch"] for e in job["details"]["history"]] == [1, 2]  # the live loss curve
    result = job["result"]
    assert result["model"] == "tiny-ch4:1" and "r2" in result["metrics"]
    assert (result["n_train"], result["n_val"]) == (4, 2)  # train_val_split: round(6 × 0.34) = 2
    from models.training_job import ON_VALIDATION

    assert result["evaluated_on"] == ON_VALIDATION and result["skipped"] == []  # 6 < 10: no test split
    detail = client.get("/models/tiny-ch4").json()["latest"]
    assert detail["training_data"]["size"] == 4 and detail["training_data"]["translate"] is True
    assert detail["metrics"]["n_eval"] == 2

    store = cached_store(settings.store_uri, settings.s3.endpoint_url, settings.s3.region)
    params_hash = VoxelParams().params_hash()
    for path in six_cifs:  # the grids went into the service's voxel cache, under the shared key
        key = voxel_key(load_crystal(path).sha256, params_hash)
        assert store.exists(key) and decode_grid(store.get(key)).shape == (25, 25, 25)

    run_training(WorkerContext(settings), job_id)  # a re-delivered task of a finished job does nothing
    assert client.get(f"/jobs/{job_id}").json()["result"] == result


def test_a_training_job_with_descriptors_registers_a_descriptor_model(client, settings, sent,  # type: ignore[no-untyped-def]
                                                                      training_zip: bytes) -> None:
    from worker.runtime import WorkerContext
    from worker.training import run_training

    form = {"targets": "ch4", "epochs": "1", "batch_size": "2", "val_fraction": "0.34", "name": "described-ch4"}
    r = client.post("/training-jobs", files={"file": ("train.zip", training_zip)},
                    data={**form, "descriptors": "log_density,volume"})
    assert r.status_code == 422 and "volume" in r.json()["detail"]
    r = client.post("/training-jobs", files={"file": ("train.zip", training_zip)},
                    data={**form, "descriptors": "log_density"})
    assert r.status_code == 202, r.text
    run_training(WorkerContext(settings, voxel_threads=1), r.json()["job_id"])
    assert client.get(f"/jobs/{r.json()['job_id']}").json()["status"] == "succeeded"
    latest = client.get("/models/described-ch4").json()["latest"]
    assert latest["training_data"]["descriptors"] == ["log_density"] and latest["descriptors"] == ["log_density"]
