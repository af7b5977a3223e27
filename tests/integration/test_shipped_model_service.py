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
    trees = body["latest"]["trees"]  # the shipped model is a hybrid (README, Model)
    card_trees = json.loads((SHIPPED / "card.json").read_text())["trees"]
    assert trees["features"] == card_trees["features"] and {"energy_histogram", "log_density"} <= set(trees["features"])
    assert trees["weight"] == card_trees["weight"] and 0.0 <= trees["weight"] <= 1.0


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


def test_predictions_carry_uncertainty_and_domain(default_client) -> None:  # type: ignore[no-untyped-def]
    """/predict and the screening results (JSON and CSV) report σ, in_domain and the 5 nearest training MOFs."""
    from models.datasets import coremof_cif

    dense = Path(__file__).resolve().parents[1] / "data" / "dense" / "alpha_quartz.cif"
    name = (SHIPPED / "test_names.txt").read_text().split()[0]
    r = default_client.post("/predict", files={"file": (f"{name}.cif", coremof_cif(name).read_bytes())},
                            data={"wait": "120"})
    assert r.status_code == 200, r.text
    prediction = r.json()["prediction"]
    assert prediction["uncertainty"] > 0
    assert isinstance(prediction["in_domain"], bool)
    assert len(prediction["neighbours"]) == 5
    assert all({"name", "distance", "label"} <= set(n) for n in prediction["neighbours"])
    assert name not in {n["name"] for n in prediction["neighbours"]}  # a test structure is not a training one
    r = default_client.post("/screenings", files=[("files", (f"{name}.cif", coremof_cif(name).read_bytes())),
                                                  ("files", ("alpha_quartz.cif", dense.read_bytes()))])
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    import time

    deadline = time.monotonic() + 120
    while default_client.get(f"/jobs/{job_id}").json()["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    items = {i["name"]: i["prediction"] for i in default_client.get(f"/jobs/{job_id}/results").json()["items"]}
    assert items["alpha_quartz.cif"]["in_domain"] is False
    assert items[f"{name}.cif"]["uncertainty"] == pytest.approx(prediction["uncertainty"])
    rows = list(csv.DictReader(default_client.get(f"/jobs/{job_id}/results?format=csv").text.splitlines()))
    by_name = {row["name"]: row for row in rows}
    assert by_name["alpha_quartz.cif"]["in_domain"] == "False"
    assert float(by_name[f"{name}.cif"]["uncertainty"]) == pytest.approx(prediction["uncertainty"])


def test_volumetric_units_convert_with_the_crystal_density(default_client) -> None:  # type: ignore[no-untyped-def]
    """units=cm3(STP)/cm3: value and σ are the mol/kg ones × density × 22,413.97 / 1000, in /predict and screenings;
    screenings rank in the unit shown."""
    from models.datasets import coremof_cif
    from models.structure import parse_cif
    from models.units import crystal_density_g_cm3

    names = (SHIPPED / "test_names.txt").read_text().split()[:3]
    cifs = {n: coremof_cif(n).read_bytes() for n in names}
    grav, vol = {}, {}
    for n, data in cifs.items():
        for units, out in (("mol/kg", grav), ("cm3(STP)/cm3", vol)):
            r = default_client.post("/predict", files={"file": (f"{n}.cif", data)},
                                    data={"wait": "120", "units": units})
            assert r.status_code == 200, r.text
            out[n] = r.json()["prediction"]
    for n, data in cifs.items():
        factor = crystal_density_g_cm3(parse_cif(data, n)) * 22413.969545 / 1000
        assert vol[n]["unit"] == "cm3(STP)/cm3" and grav[n]["unit"] == "mol/kg"
        assert vol[n]["value"] == pytest.approx(grav[n]["value"] * factor, rel=1e-6)
        assert vol[n]["uncertainty"] == pytest.approx(grav[n]["uncertainty"] * factor, rel=1e-6)
    r = default_client.post("/screenings", files=[("files", (f"{n}.cif", d)) for n, d in cifs.items()],
                            data={"units": "cm3(STP)/cm3"})
    assert r.status_code == 202, r.text
    import time

    job_id, deadline = r.json()["job_id"], time.monotonic() + 120
    while default_client.get(f"/jobs/{job_id}").json()["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    items = default_client.get(f"/jobs/{job_id}/results").json()["items"]
    values = [i["prediction"]["value"] for i in items]
    assert values == sorted(values, reverse=True)  # ranked by the volumetric value
    assert {i["name"][:-4]: i["prediction"]["value"] for i in items} == pytest.approx(
        {n: v["value"] for n, v in vol.items()})
    bad = default_client.post("/predict", files={"file": ("x.cif", cifs[names[0]])}, data={"units": "g/g"})
    assert bad.status_code == 422 and "units" in bad.text
