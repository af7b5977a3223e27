"""The shipped isotherm model, served: curve points, deliverable capacity, volumetric units, ranking and CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

REQUIRE = os.environ.get("RETNET_TEST_REQUIRE_SERVICES") == "1"
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "shipped" / "retnet-ch4-isotherm"
CIFS = Path(__file__).resolve().parents[1] / "data" / "cifs"
NAMES = ["KEGZOL04_clean", "SAYTUJ_clean", "EDUWAB_clean", "BUKRUW01_clean", "c5cc04223b_c5cc04223b2_clean"]
PRESSURES = [1.0, 5.8, 35.0, 65.0]


def _ref() -> str:
    card = json.loads((SHIPPED / "card.json").read_text())
    return f"{card['name']}:{card['version']}"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The service with its embedded worker, on SQLite (the default) and on PostgreSQL (a fresh database): the
    ranking by a curve point is SQL on a JSON element, which the two dialects spell differently."""
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app
    from tests.integration.helpers import create_database, drop_database, pg_admin_url

    database, admin = None, None
    if request.param == "postgresql":
        admin = pg_admin_url()
        if admin is None:
            pytest.fail("PostgreSQL on 127.0.0.1:5432 is not reachable") if REQUIRE else pytest.skip("no PostgreSQL")
        name, database = create_database(admin)
    from app.core.config import AuthSettings

    settings = Settings(data_dir=tmp_path_factory.mktemp("isotherm"), device="cpu", embedded_concurrency=2,
                        database_url=database, auth=AuthSettings(required=False))
    upgrade(settings.db_url)
    try:
        with TestClient(create_app(settings)) as c:
            yield c
    finally:
        if admin is not None:
            from app.db.session import dispose_all

            dispose_all()
            drop_database(admin, name)


def _wait(client, job_id: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    while client.get(f"/jobs/{job_id}").json()["status"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, "the screening did not finish"
        time.sleep(0.2)


def test_the_isotherm_model_is_registered_at_start_up(client) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/models/retnet-ch4-isotherm").json()
    assert "latest" in body, body
    assert body["latest"]["ref"] == _ref()
    assert [t["pressure_bar"] for t in body["latest"]["targets"]] == PRESSURES
    assert client.get("/models").json()["default"].startswith("retnet-ch4:")  # the default stays the 5.8 bar model


def test_predict_gives_the_curve_in_increasing_pressure_and_the_deliverable_capacity(client) -> None:  # type: ignore[no-untyped-def]
    data = (CIFS / "KEGZOL04_clean.cif").read_bytes()
    r = client.post("/predict", files={"file": ("KEGZOL04_clean.cif", data)},
                    data={"wait": "120", "model": _ref()})
    assert r.status_code == 200, r.text
    p = r.json()["prediction"]
    points = p["values"]
    assert [pt["pressure_bar"] for pt in points] == PRESSURES
    values = [pt["value"] for pt in points]
    assert values == sorted(values) and values[0] >= 0  # monotone and non-negative by construction
    assert all(pt["uncertainty"] > 0 for pt in points)
    assert p["value"] == pytest.approx(values[1])  # the primary output is the 5.8 bar point
    assert p["uncertainty"] == pytest.approx(points[1]["uncertainty"])
    assert p["deliverable_capacity"] == pytest.approx(values[3] - values[1])
    assert p["deliverable_capacity_uncertainty"] == pytest.approx(
        (points[3]["uncertainty"] ** 2 + points[1]["uncertainty"] ** 2) ** 0.5)
    assert p["property"] == "CH4 uptake, 298 K, 5.8 bar" and p["unit"] == "mol/kg"

    from models.structure import parse_cif
    from models.units import crystal_density_g_cm3

    factor = crystal_density_g_cm3(parse_cif(data, "KEGZOL04_clean")) * 22413.969545 / 1000
    r = client.post("/predict", files={"file": ("KEGZOL04_clean.cif", data)},
                    data={"wait": "120", "model": _ref(), "units": "cm3(STP)/cm3"})
    vol = r.json()["prediction"]
    assert vol["unit"] == "cm3(STP)/cm3"
    assert [pt["value"] for pt in vol["values"]] == pytest.approx([v * factor for v in values], rel=1e-6)
    assert vol["deliverable_capacity"] == pytest.approx(p["deliverable_capacity"] * factor, rel=1e-6)


def test_screenings_rank_by_any_point_and_export_every_point(client) -> None:  # type: ignore[no-untyped-def]
    files = [("files", (f"{n}.cif", (CIFS / f"{n}.cif").read_bytes())) for n in NAMES]
    r = client.post("/screenings", files=files, data={"model": _ref()})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    _wait(client, job_id)
    by_default = client.get(f"/jobs/{job_id}/results").json()
    assert by_default["sort"] == "value"
    assert [i["prediction"]["value"] for i in by_default["items"]] == sorted(
        (i["prediction"]["value"] for i in by_default["items"]), reverse=True)
    for key, of in [("uptake_65bar", lambda p: p["values"][3]["value"]),
                    ("uptake_1bar", lambda p: p["values"][0]["value"]),
                    ("deliverable_65_5.8bar", lambda p: p["deliverable_capacity"])]:
        page = client.get(f"/jobs/{job_id}/results", params={"sort": key}).json()
        assert page["sort"] == key
        shown = [of(i["prediction"]) for i in page["items"]]
        assert len(shown) == len(NAMES) and shown == sorted(shown, reverse=True), key
        ascending = [of(i["prediction"]) for i in client.get(f"/jobs/{job_id}/results",
                                                             params={"sort": key, "order": "asc"}).json()["items"]]
        assert ascending == sorted(shown)
    text = client.get(f"/jobs/{job_id}/results", params={"format": "csv", "sort": "deliverable_65_5.8bar"}).text
    rows = list(csv.DictReader(text.splitlines()))
    header = text.splitlines()[0].split(",")
    columns = ["uptake_1bar", "uptake_5.8bar", "uptake_35bar", "uptake_65bar", "deliverable_65_5.8bar"]
    assert header[header.index("uncertainty") + 1: header.index("uncertainty") + 6] == columns
    dc = [float(r["deliverable_65_5.8bar"]) for r in rows]
    assert dc == sorted(dc, reverse=True)
    for row in rows:
        assert float(row["deliverable_65_5.8bar"]) == pytest.approx(
            float(row["uptake_65bar"]) - float(row["uptake_5.8bar"]), rel=1e-6, abs=1e-9)
        assert float(row["value"]) == pytest.approx(float(row["uptake_5.8bar"]))
    bad = client.get(f"/jobs/{job_id}/results", params={"sort": "uptake_100bar"})
    assert bad.status_code == 422 and "uptake_65bar" in bad.json()["detail"]
    assert client.get(f"/jobs/{job_id}/results", params={"sort": "uptake_100bar", "format": "csv"}).status_code == 422


def test_a_single_output_model_can_only_be_ranked_by_its_value(client) -> None:  # type: ignore[no-untyped-def]
    files = [("files", (f"{n}.cif", (CIFS / f"{n}.cif").read_bytes())) for n in NAMES[:2]]
    job_id = client.post("/screenings", files=files).json()["job_id"]
    _wait(client, job_id)
    bad = client.get(f"/jobs/{job_id}/results", params={"sort": "uptake_65bar"})
    assert bad.status_code == 422 and "gives value" in bad.json()["detail"]
    header = client.get(f"/jobs/{job_id}/results", params={"format": "csv"}).text.splitlines()[0]
    assert "uptake_65bar" not in header
    assert client.get(f"/jobs/{job_id}/results").json()["items"][0]["prediction"]["values"] is None


# --- POST /design ----------------------------------------------------------------------------------------------


def _design(client, body: dict, **headers: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    r = client.post("/design", json=body, headers=headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    _wait(client, job_id)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["kind"] == "design" and job["progress"]["done"] == 1
    return dict(job["result"], job_id=job_id)


def test_design_ranks_the_structures_predicted_here_by_distance_to_the_target(client) -> None:  # type: ignore[no-untyped-def]
    files = [("files", (f"{n}.cif", (CIFS / f"{n}.cif").read_bytes())) for n in NAMES]
    job_id = client.post("/screenings", files=files, data={"model": _ref()}).json()["job_id"]
    _wait(client, job_id)
    items = client.get(f"/jobs/{job_id}/results").json()["items"]
    curves = {i["name"][:-4]: [pt["value"] for pt in i["prediction"]["values"]] for i in items}
    middle = sorted(curves, key=lambda n: curves[n][3])[2]
    target = {"uptake_65bar": curves[middle][3], "uptake_5.8bar": curves[middle][1]}
    result = _design(client, {"model": _ref(), "target": target, "tolerance": 0.05, "top_k": 10,
                              "sources": ["service"]})
    candidates = result["candidates"]
    assert result["sources"] == {"service": len(NAMES), "library": 0} and len(candidates) == len(NAMES)
    assert candidates[0]["name"] == middle and candidates[0]["distance"] == pytest.approx(0.0, abs=1e-9)
    assert candidates[0]["within_tolerance"] is True and candidates[0]["source"] == "service"
    expected = sorted(curves, key=lambda n: ((curves[n][3] - target["uptake_65bar"]) ** 2
                                             + (curves[n][1] - target["uptake_5.8bar"]) ** 2))
    assert [c["name"] for c in candidates] == expected
    for c in candidates:
        assert c["predicted"] == pytest.approx({"uptake_65bar": curves[c["name"]][3],
                                                "uptake_5.8bar": curves[c["name"]][1]})
        assert set(c["uncertainty"]) == set(target) and 0.0 <= c["p_within"] <= 1.0
    dc = _design(client, {"model": _ref(), "target": {"deliverable_65_5.8bar": 100.0}, "tolerance": 1.0,
                          "sources": ["service"], "top_k": 1})["candidates"][0]
    assert dc["name"] == max(curves, key=lambda n: curves[n][3] - curves[n][1])  # the largest capacity is nearest
    assert dc["within_tolerance"] is False


def test_design_ranks_the_shipped_core_mof_library_and_counts_a_structure_once(client) -> None:  # type: ignore[no-untyped-def]
    from models.datasets import coremof_cif
    from models.design import LIBRARY_FILE, read_library

    library = read_library(SHIPPED / LIBRARY_FILE)
    assert len(library) > 10_000  # CoRE MOF lists some structures twice, under two names: their sha256 repeat
    unique = library[~library["sha256"].duplicated(keep=False)]
    row = unique.iloc[len(unique) // 2]
    r = client.post("/predict", files={"file": (f"{row['name']}.cif", coremof_cif(row["name"]).read_bytes())},
                    data={"wait": "120", "model": _ref()})
    assert r.status_code == 200, r.text
    prediction = r.json()["prediction"]
    assert r.json()["structure"]["sha256"] == row["sha256"]  # the library's sha256 is the service's
    assert prediction["values"][3]["value"] == pytest.approx(row["uptake_65bar"], rel=1e-3, abs=1e-3)
    result = _design(client, {"model": _ref(), "target": {"uptake_65bar": prediction["values"][3]["value"]},
                              "tolerance": 0.5, "top_k": 20})
    mine = _design(client, {"model": _ref(), "target": {"uptake_65bar": 1.0}, "tolerance": 0.5, "top_k": 1000,
                            "sources": ["service"]})["candidates"]
    assert row["sha256"] in {c["sha256"] for c in mine}
    # every structure predicted here (CoRE MOF ones included) is ranked once, from its own prediction
    assert result["sources"]["library"] == len(library) - int(library["sha256"].isin({c["sha256"] for c in mine}).sum())
    same = [c for c in result["candidates"] if c["sha256"] == row["sha256"]]
    assert len(same) == 1 and same[0]["source"] == "service"
    assert {c["source"] for c in result["candidates"]} == {"service", "library"}
    distances = [c["distance"] for c in result["candidates"]]
    assert distances == sorted(distances) and len(distances) == 20
    inside = _design(client, {"model": _ref(), "target": {"uptake_65bar": 10.0}, "tolerance": 0.5,
                              "in_domain_only": True, "sources": ["library"], "top_k": 50})
    assert inside["candidates"] and all(c["in_domain"] is True for c in inside["candidates"])
    vol = _design(client, {"model": _ref(), "target": {"uptake_65bar": 150.0}, "tolerance": 10.0,
                           "units": "cm3(STP)/cm3", "sources": ["library"], "top_k": 5})
    for c in vol["candidates"]:
        lib = library[library["name"] == c["name"]].iloc[0]
        factor = lib["density_g_cm3"] * 22413.969545 / 1000
        assert c["predicted"]["uptake_65bar"] == pytest.approx(lib["uptake_65bar"] * factor, rel=1e-4)


def test_design_refuses_what_the_model_cannot_answer_and_retries_safely(client) -> None:  # type: ignore[no-untyped-def]
    bad = client.post("/design", json={"model": _ref(), "target": {"uptake_100bar": 5}, "tolerance": 1})
    assert bad.status_code == 422 and "uptake_65bar" in bad.json()["detail"]
    bad = client.post("/design", json={"target": {"uptake_65bar": 5}, "tolerance": 1})  # the default model: 5.8 bar
    assert bad.status_code == 422 and "gives value" in bad.json()["detail"]
    bad = client.post("/design", json={"model": _ref(), "target": {"uptake_65bar": 5, "uptake_1bar": 1},
                                       "tolerance": {"uptake_65bar": 1}})
    assert bad.status_code == 422 and "per-quantity tolerance" in bad.json()["detail"]
    for tolerance in (0, -1):
        r = client.post("/design", json={"model": _ref(), "target": {"uptake_65bar": 5}, "tolerance": tolerance})
        assert r.status_code == 422
    unknown = client.post("/design", json={"model": "no-such-model", "target": {"value": 1}, "tolerance": 1})
    assert unknown.status_code == 422 and "retnet-ch4" in unknown.json()["detail"]  # names the models there are
    assert client.post("/design", json={"target": {"value": 1}, "tolerance": 1, "top_k": 0}).status_code == 422
    body = {"target": {"value": 4.0}, "tolerance": 0.5, "sources": ["library"], "top_k": 3}
    first = client.post("/design", json=body, headers={"Idempotency-Key": "design-1"})
    again = client.post("/design", json=body, headers={"Idempotency-Key": "design-1"})
    assert first.status_code == again.status_code == 202 and first.json()["job_id"] == again.json()["job_id"]
    _wait(client, first.json()["job_id"])
    result = client.get(f"/jobs/{first.json()['job_id']}").json()["result"]
    assert result["model"].startswith("retnet-ch4:") and len(result["candidates"]) == 3
    assert all(abs(c["predicted"]["value"] - 4.0) < 0.5 for c in result["candidates"])


def test_a_grid_only_model_cannot_design_landscapes_in_volumetric_units(client, model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from app.db.session import session_scope
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri
    from tests.integration.helpers import MODEL_NAME

    settings = client.app.state.settings
    with session_scope(settings.db_url) as session:
        register_model_dir(session, store_from_uri(settings.store_uri), model_dir)
    bad = client.post("/design", json={"model": MODEL_NAME, "target": {"value": 100}, "tolerance": 10,
                                       "units": "cm3(STP)/cm3", "generate": 1})
    assert bad.status_code == 422 and "no crystal density" in bad.json()["detail"]


def test_the_density_model_designs_a_landscape_with_its_density_in_volumetric_units(client) -> None:  # type: ignore[no-untyped-def]
    from models.artifacts import load_model
    from models.inverse_design import landscape_trees
    from models.units import mol_per_kg_to_cm3_stp_per_cm3

    default = client.get("/models").json()["default"]
    result = _design(client, {"model": default, "target": {"value": 120.0}, "tolerance": 20.0, "top_k": 2,
                              "sources": ["library"], "generate": 1, "seed": 3, "units": "cm3(STP)/cm3"})
    assert result["units"] == "cm3(STP)/cm3" and "cm3(STP)/cm3" in result["designed_note"]
    (design,) = result["designed"]
    rho = design["density_g_cm3"]
    assert 0.05 < rho < 5.0  # drawn from the generator's p(density | landscape)
    grid = np.load(io.BytesIO(client.get(design["grid"]).content))
    shipped = load_model(Path(__file__).resolve().parents[2] / "models" / "shipped" / "retnet-ch4", device="cpu")
    # scored as designs are: a landscape has no crystal, so trees that read the crystal's numbers sit out
    network_only = landscape_trees(shipped) is None
    assert ("network alone" in result["designed_note"]) == network_only
    again = shipped.predict(grid[None], densities_g_cm3=[rho], network_only=network_only)[0, 0]
    assert design["predicted"]["value"] == pytest.approx(mol_per_kg_to_cm3_stp_per_cm3(again, rho), rel=1e-3)


def test_designed_landscapes_are_kept_in_the_predictors_applicability_domain(client) -> None:  # type: ignore[no-untyped-def]
    default = client.get("/models").json()["default"]
    result = _design(client, {"model": default, "target": {"value": 3.0}, "tolerance": 0.75, "top_k": 1,
                              "sources": ["library"], "generate": 2, "seed": 0})
    assert "applicability domain" in result["designed_note"]
    assert [d["in_domain"] for d in result["designed"]] == [True, True], result["designed"]


def test_design_with_the_generator_returns_landscapes_and_their_nearest_real_structures(client) -> None:  # type: ignore[no-untyped-def]
    from models.artifacts import load_model
    from models.design import read_library
    from models.inverse_design import landscape_trees

    result = _design(client, {"model": _ref(), "target": {"uptake_65bar": 9.0}, "tolerance": 1.0, "top_k": 3,
                              "sources": ["library"], "generate": 1, "seed": 7})
    assert len(result["candidates"]) == 3 and len(result["designed"]) == 1, result.get("designed_note")
    design = result["designed"][0]
    shipped = load_model(SHIPPED, device="cpu")
    # trees that read the crystal (ch4_widom) cannot score a landscape: the network alone does, without σ
    network_only = shipped.trees is not None and landscape_trees(shipped) is None
    assert ("network alone" in result["designed_note"]) == network_only
    assert set(design["predicted"]) == {"uptake_65bar"}
    assert (design["uncertainty"] is None) if network_only else design["uncertainty"]["uptake_65bar"] > 0
    assert isinstance(design["in_domain"], bool) and design["cost"] >= 0
    names = set(read_library(SHIPPED / "library.csv.gz")["name"])
    distances = [n["distance"] for n in design["nearest"]]
    assert len(design["nearest"]) == 5 and all(n["name"] in names for n in design["nearest"])
    assert distances == sorted(distances)
    grid = np.load(io.BytesIO(client.get(design["grid"]).content))
    assert grid.shape == (25, 25, 25) and grid.dtype == np.float32 and grid.min() >= 0
    png = client.get(design["picture"])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    job_id = result["job_id"]
    assert client.get(f"/jobs/{job_id}/designs/3.npy").status_code == 404
    # the service's own prediction of the landscape it returned is the one reported
    densities = [design["density_g_cm3"]] if shipped.needs_density else None
    assert (design["density_g_cm3"] is not None) == shipped.needs_density
    again = shipped.predict_detailed(grid[None], densities_g_cm3=densities, network_only=network_only)
    assert again.values[0, 3] == pytest.approx(design["predicted"]["uptake_65bar"], rel=1e-4, abs=1e-4)
