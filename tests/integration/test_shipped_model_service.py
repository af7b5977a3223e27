"""The service, started on its defaults, serves the shipped CH4 model with the training script's numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "shipped" / "retnet-ch4"


@pytest.fixture(scope="module")
def default_client(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Embedded app with default settings: the shipped model is registered at start-up."""
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app

    settings = Settings(data_dir=tmp_path_factory.mktemp("shipped"), device="cpu", embedded_concurrency=2)
    upgrade(settings.db_url)
    with TestClient(create_app(settings)) as client:
        yield client


def test_default_model_is_the_shipped_one(default_client) -> None:  # type: ignore[no-untyped-def]
    expected = _shipped_ref(SHIPPED)  # from the shipped card.json, e.g. retnet-ch4:4
    listing = default_client.get("/models").json()
    assert listing["default"] == expected
    body = default_client.get("/models/retnet-ch4").json()
    assert body["latest"]["ref"] == expected
    target = body["latest"]["targets"][0]
    assert target["unit"] == "mol/kg" and "CH4" in target["property"]


def _shipped_ref(folder: Path) -> str:
    card = json.loads((folder / "card.json").read_text())
    return f"{card['name']}:{card['version']}"


def test_shipped_backbone_is_registered_for_fine_tuning(default_client) -> None:  # type: ignore[no-untyped-def]
    refs = [m["ref"] for m in default_client.get("/models").json()["data"]]
    assert _shipped_ref(SHIPPED) in refs
    assert _shipped_ref(SHIPPED.parent / "retnet-coremof-geometry") in refs


def test_served_predictions_equal_the_training_script(default_client) -> None:  # type: ignore[no-untyped-def]
    from models.datasets import coremof_cif

    names = (SHIPPED / "test_names.txt").read_text().split()
    with (SHIPPED / "test_predictions.csv").open() as fh:
        expected = [float(row["predicted_mol_kg"]) for row in csv.DictReader(fh)]
    for name, value in list(zip(names, expected, strict=True))[:3]:
        cif = coremof_cif(name).read_bytes()
        r = default_client.post("/predict", files={"file": (f"{name}.cif", cif)}, data={"wait": "120"})
        assert r.status_code == 200, r.text
        prediction = r.json()["prediction"]
        assert prediction["model"] == _shipped_ref(SHIPPED)
        assert prediction["unit"] == "mol/kg"
        assert prediction["value"] == pytest.approx(value, rel=1e-4, abs=1e-4)
