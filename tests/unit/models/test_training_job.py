"""The pure steps of a service training job (models.training_job) on tiny data: no database, store or worker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.artifacts import load_model
from models.params import VoxelParams
from models.structure import load_crystal
from models.training import predict_grids, train_val_split
from models.training_job import (
    NO_VALIDATION,
    ON_VALIDATION,
    LabelledDataset,
    build_card,
    label_hash,
    load_dataset,
    save_job_model,
    train_and_evaluate,
    voxel_params_for,
)
from models.voxels import compute_voxels

DATA = Path(__file__).resolve().parents[2] / "data"
CIFS = DATA / "cifs"
BAD = DATA / "bad"

PARAMS = {"targets": ["ch4"], "epochs": 2, "batch_size": 2, "learning_rate": 1e-3, "augment": False,
          "translate": True, "val_fraction": 0.34, "seed": 1, "base_model": None, "freeze": None,
          "model_name": "tiny-ch4", "model_version": "1", "unit": "mol/kg", "property": "CH4 uptake"}


def _cif(name: str, folder: Path = CIFS) -> tuple[str, bytes]:
    return name, (folder / f"{name}.cif").read_bytes()


# --- load_dataset --------------------------------------------------------------------------------


def test_load_dataset_pairs_labels_and_lists_what_it_skips() -> None:
    cifs = [_cif("FIGXAU_clean"), _cif("SAYTUJ_clean"), _cif("EDUWAB_clean"), _cif("plain_text", BAD),
            _cif("KEGZOL04_clean"), _cif("BUKRUW01_clean")]
    labels = (b"name,ch4,other\nSAYTUJ_clean,0.6,1\nFIGXAU_clean,1.5,2\nEDUWAB_clean,,3\n"
              b"plain_text,2.0,4\nKEGZOL04_clean,1.85,5\nKEGZOL04_clean,9.9,6\nnot_in_the_zip,1.0,7\n")
    seen: list[str] = []
    calls: list[tuple[int, int, int]] = []

    def grid_for(crystal: object) -> np.ndarray:
        seen.append(crystal.name)  # type: ignore[attr-defined]
        return np.full((5, 5, 5), float(len(seen)), dtype=np.float32)

    data = load_dataset(cifs, labels, ["ch4"], grid_for=grid_for,
                        progress=lambda done, total, skipped: calls.append((done, total, len(skipped))))
    assert data.names == ["FIGXAU_clean", "SAYTUJ_clean", "KEGZOL04_clean"]  # the CIFs' order; unlabelled ignored
    assert seen == data.names  # a structure that does not parse never reaches grid_for
    assert data.x.shape == (3, 5, 5, 5) and data.x.dtype == np.float32 and data.x[2, 0, 0, 0] == 3.0
    assert data.y.shape == (3, 1) and data.y.dtype == np.float64
    assert data.y[:, 0].tolist() == [1.5, 0.6, 1.85]  # the first row of a repeated name wins
    assert data.skipped[0] == {"name": "EDUWAB_clean", "error": "missing label"}
    assert data.skipped[1] == {"name": "plain_text", "error": "plain_text: not a CIF (no 'data_' block)"}
    assert len(data) == 3 and data.targets == ["ch4"]
    assert calls == [(1, 5, 0), (2, 5, 0), (3, 5, 1), (4, 5, 2), (5, 5, 2)]


def test_load_dataset_computes_grids_by_default() -> None:
    params = VoxelParams(grid_size=5)
    cifs = [_cif("FIGXAU_clean"), _cif("unknown_element_Tc", BAD), _cif("SAYTUJ_clean")]
    labels = b"name,a,b\nFIGXAU_clean,1,2\nSAYTUJ_clean,3,4\nunknown_element_Tc,5,6\n"
    data = load_dataset(cifs, labels, ["b", "a"], params, threads=1)
    expected = compute_voxels(load_crystal(CIFS / "SAYTUJ_clean.cif"), params, threads=1)
    np.testing.assert_array_equal(data.x[1], expected)
    assert data.y.tolist() == [[2.0, 1.0], [4.0, 3.0]]
    assert [s["name"] for s in data.skipped] == ["unknown_element_Tc"]  # refused by the grid: listed with why
    assert "Tc" in data.skipped[0]["error"]


def test_load_dataset_needs_two_usable_structures() -> None:
    with pytest.raises(ValueError, match="only 1 usable"):
        load_dataset([_cif("FIGXAU_clean"), _cif("empty", BAD)], b"name,y\nFIGXAU_clean,1\nempty,2\n", ["y"],
                     grid_for=lambda c: np.zeros((5, 5, 5), np.float32))
    with pytest.raises(KeyError):
        load_dataset([_cif("FIGXAU_clean")], b"name,y\nFIGXAU_clean,1\n", ["co2"])


def test_voxel_params_follow_the_base_model() -> None:
    class Card:
        voxel_params = VoxelParams(temperature=77.0)

    class Base:
        card = Card()

    assert voxel_params_for(None) == VoxelParams()
    assert voxel_params_for(Base()) == VoxelParams(temperature=77.0)


# --- train_and_evaluate, build_card, save_job_model ------------------------------------------------


def _dataset(n: int = 6) -> LabelledDataset:
    rng = np.random.default_rng(0)
    x = np.exp(-rng.normal(0.0, 1.0, size=(n, 25, 25, 25))).astype(np.float32)
    y = x.mean(axis=(1, 2, 3)).astype(np.float64)[:, None]
    return LabelledDataset(names=[f"s{i}" for i in range(n)], x=x, y=y, targets=["ch4"],
                           skipped=[{"name": "bad", "error": "bad: the file is empty"}])


@pytest.fixture(scope="module")
def trained() -> tuple[LabelledDataset, object, list[dict]]:
    data = _dataset()
    events: list[dict] = []
    outcome = train_and_evaluate(data, PARAMS, device="cpu", progress=events.append)
    return data, outcome, events


def test_train_and_evaluate_uses_the_shared_split(trained) -> None:  # type: ignore[no-untyped-def]
    data, outcome, events = trained
    train_idx, val_idx = train_val_split(6, 0.34, seed=1)
    assert outcome.n_val == 2 and outcome.n_train == 4  # round(6 × 0.34) = 2
    assert np.array_equal(outcome.val_idx, val_idx) and np.array_equal(outcome.train_idx, train_idx)
    assert [e["epoch"] for e in events] == [1, 2]
    assert all(e["n_train"] == 4 and e["n_val"] == 2 and e["val_loss"] is not None for e in events)
    assert outcome.history == [{k: v for k, v in e.items() if k not in ("n_train", "n_val")} for e in events]
    assert outcome.last_epoch["epoch"] == 2
    assert outcome.result.config.translate is True and outcome.result.config.seed == 1
    assert outcome.evaluated_on == ON_VALIDATION
    np.testing.assert_array_equal(outcome.eval_y, data.y[val_idx])
    expected = predict_grids(outcome.result.model, outcome.result.standardizer, data.x[val_idx])
    np.testing.assert_allclose(outcome.eval_pred, expected)
    assert set(outcome.metrics) == {"r2", "mae", "rmse", "spearman"}
    assert set(outcome.metrics["mae"]) == {"value", "ci_low", "ci_high"}
    json.dumps(outcome.metrics, allow_nan=False)  # JSON values (NaN → None)


def test_without_validation_it_evaluates_on_the_training_set() -> None:
    data = _dataset(4)
    outcome = train_and_evaluate(data, {**PARAMS, "epochs": 1, "val_fraction": 0.0}, device="cpu")
    assert outcome.n_val == 0 and outcome.n_train == 4 and outcome.evaluated_on == NO_VALIDATION
    assert outcome.eval_pred.shape == (4, 1) and outcome.history[0]["val_loss"] is None


def test_build_card_and_save_job_model(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data, outcome, _ = trained
    card = build_card(data, outcome, PARAMS, version="7", source="training job abc")
    assert card.ref == "tiny-ch4:7"
    assert [(t.name, t.unit, t.property) for t in card.targets] == [("ch4", "mol/kg", "CH4 uptake")]
    assert card.training_data == {
        "source": "training job abc", "size": 4, "n_val": 2, "split_seed": 1,
        "label_hash": label_hash(data.names, data.y), "structures": 6, "skipped": 1, "epochs": 2,
        "base_model": None, "augment": False, "translate": True, "n_test": 0, "vibration_copies": 0,
        "vibration_amplitude": None, "input_clip": None, "descriptors": [], "trees": False}
    assert card.metrics["evaluated_on"] == ON_VALIDATION and card.metrics["n_eval"] == 2
    assert card.metrics["r2"] == outcome.metrics["r2"]

    folder = save_job_model(tmp_path / "model", outcome, card)
    assert (folder / "parity.png").exists() and (folder / "history.png").exists()
    loaded = load_model(folder, device="cpu")
    assert loaded.ref == "tiny-ch4:7"
    np.testing.assert_allclose(loaded.predict(data.x[outcome.val_idx]), outcome.eval_pred, rtol=1e-5, atol=1e-6)


def test_label_hash_ignores_row_order() -> None:
    y = np.array([[1.0], [2.0]])
    assert label_hash(["a", "b"], y) == label_hash(["b", "a"], y[::-1])
    assert label_hash(["a", "b"], y) != label_hash(["a", "b"], y + 1)


# --- held-out test split, calibration, vibration augmentation ------------------------------------------


def test_test_split_is_held_out_scored_and_calibrated(tmp_path: Path) -> None:
    """With test_fraction the card's metrics come from structures never trained or validated on (10,000
    bootstrap resamples), σ is calibrated on validation, the domain built from training, both scored on test."""
    from models.training_job import N_BOOTSTRAP, ON_TEST

    data = _dataset(30)
    params = {**PARAMS, "epochs": 1, "val_fraction": 0.25, "test_fraction": 0.2, "gas": "CH4",
              "temperature_k": 298.0, "pressure_bar": 5.8}
    outcome = train_and_evaluate(data, params, device="cpu")
    assert (outcome.n_train, outcome.n_val, outcome.n_test) == (18, 6, 6)
    parts = [set(outcome.train_idx), set(outcome.val_idx), set(outcome.test_idx)]
    assert set().union(*parts) == set(range(30)) and sum(map(len, parts)) == 30  # disjoint, complete
    rest, test = train_val_split(30, 0.2, seed=1)
    assert np.array_equal(outcome.test_idx, test)  # the project's one split function, applied twice
    assert outcome.evaluated_on == ON_TEST
    np.testing.assert_array_equal(outcome.eval_y, data.y[outcome.test_idx])
    assert outcome.calibration is not None
    card = build_card(data, outcome, params, version="1", source="test")
    assert card.metrics["n_bootstrap"] == N_BOOTSTRAP and card.metrics["n_eval"] == 6
    assert card.training_data["n_test"] == 6
    assert card.uncertainty["test_coverage"] is not None and card.domain["n_train"] == 18
    target = card.targets[0]
    assert (target.gas, target.temperature_k, target.pressure_bar) == ("CH4", 298.0, 5.8)
    folder = save_job_model(tmp_path / "model", outcome, card)
    assert (folder / "domain.npz").exists() and (folder / "calibration.png").exists()
    detailed = load_model(folder, device="cpu").predict_detailed(data.x[:3])
    assert detailed.sigma is not None and (detailed.sigma > 0).all()
    assert detailed.in_domain is not None and len(detailed.neighbours[0]) == 5
    train_names = {data.names[i] for i in outcome.train_idx}
    assert {n.name for row in detailed.neighbours for n in row} <= train_names


def test_vibrated_copies_train_only_the_training_structures(monkeypatch: pytest.MonkeyPatch) -> None:
    import models.training

    data = _dataset(10)
    copies = np.stack([np.stack([x * 0 + 1000 + i] * 2) for i, x in enumerate(data.x)])  # (10, 2, 25, 25, 25)
    data.vibrated = copies.astype(np.float32)
    seen = {}
    real_training = models.training.train_retnet

    def recording(x, y, config, **kwargs):  # noqa: ANN001, ANN003  (records what training gets, then trains)
        seen["x"], seen["y"] = x, y
        return real_training(x, y, config, **kwargs)

    monkeypatch.setattr(models.training, "train_retnet", recording)
    outcome = train_and_evaluate(data, {**PARAMS, "epochs": 1, "val_fraction": 0.2}, device="cpu")
    n = outcome.n_train
    assert len(seen["x"]) == 3 * n  # each training structure once plus its 2 copies
    copy_ids = {int(g[0, 0, 0]) - 1000 for g in seen["x"][n:]}
    assert copy_ids == {int(i) for i in outcome.train_idx}  # never a validation structure's copy
    np.testing.assert_array_equal(seen["y"][n:], np.repeat(data.y[outcome.train_idx], 2, axis=0))


def test_a_job_with_descriptors_trains_scores_and_serves_a_descriptor_model(tmp_path: Path) -> None:
    """``descriptors``: standardized on the training split, read at every step, in the card, needed to serve."""
    from models.descriptors import MissingDescriptorError

    data = _dataset(30)
    data.densities = np.linspace(0.4, 2.0, 30)
    params = {**PARAMS, "epochs": 1, "val_fraction": 0.25, "test_fraction": 0.2,
              "descriptors": ["log_density", "energy_histogram"]}
    outcome = train_and_evaluate(data, params, device="cpu")
    spec = outcome.result.descriptors
    assert outcome.result.model.n_descriptors == spec.width == 15
    assert spec.mean[0] == pytest.approx(float(np.log(data.densities[outcome.train_idx]).mean()))
    expected = predict_grids(outcome.result.model, outcome.result.standardizer, data.x[outcome.test_idx],
                             descriptors=spec.compute(data.x[outcome.test_idx], data.densities[outcome.test_idx]))
    np.testing.assert_allclose(outcome.eval_pred, expected, rtol=1e-6)
    card = build_card(data, outcome, params, version="1", source="test")
    assert card.descriptors == spec.to_dict() and card.training_data["descriptors"] == params["descriptors"]
    loaded = load_model(save_job_model(tmp_path / "model", outcome, card), device="cpu")
    served = loaded.predict_detailed(data.x[outcome.test_idx], densities_g_cm3=data.densities[outcome.test_idx])
    np.testing.assert_allclose(served.values, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(MissingDescriptorError):
        loaded.predict(data.x[:2])


def test_load_dataset_keeps_each_crystal_density() -> None:
    from models.units import crystal_density_g_cm3

    data = load_dataset([_cif("FIGXAU_clean"), _cif("SAYTUJ_clean")], b"name,ch4\nFIGXAU_clean,1\nSAYTUJ_clean,2\n",
                        ["ch4"], grid_for=lambda crystal: np.ones((5, 5, 5), np.float32))
    expected = [crystal_density_g_cm3(load_crystal(CIFS / f"{n}.cif")) for n in data.names]
    np.testing.assert_allclose(data.densities, expected)
    assert data.crystal_blocks == {}  # computed only when asked for (a job with trees)


def test_load_dataset_computes_the_crystal_blocks_asked_for() -> None:
    from models.widom import ch4_widom_descriptors

    data = load_dataset([_cif("FIGXAU_clean"), _cif("SAYTUJ_clean")], b"name,ch4\nFIGXAU_clean,1\nSAYTUJ_clean,2\n",
                        ["ch4"], grid_for=lambda crystal: np.ones((5, 5, 5), np.float32), crystal_blocks=("ch4_widom",))
    expected = [ch4_widom_descriptors(load_crystal(CIFS / f"{n}.cif")) for n in data.names]
    np.testing.assert_allclose(data.crystal_blocks["ch4_widom"], expected)


def test_a_job_with_trees_scores_and_serves_the_blend(tmp_path: Path) -> None:
    """``trees``: fitted on the training split only, weighted on validation; the card's metrics, σ and the served
    values are the blend's, and the network's own metrics stay beside them."""
    data = _dataset(40)
    data.densities = np.linspace(0.4, 2.0, 40)
    data.y = data.y + data.densities[:, None]  # something the trees can read off ln ρ
    data.crystal_blocks = {"ch4_widom": np.column_stack([np.linspace(-2.0, 1.0, 40), np.full(40, 15.0)])}
    params = {**PARAMS, "epochs": 1, "val_fraction": 0.25, "test_fraction": 0.2, "trees": True}
    outcome = train_and_evaluate(data, params, device="cpu")
    hybrid = outcome.trees
    assert hybrid is not None and 0.0 <= hybrid.weight <= 1.0 and "validation" in outcome.trees_selection
    network = predict_grids(outcome.result.model, outcome.result.standardizer, data.x[outcome.test_idx])
    from models.hybrid import tree_features

    test_blocks = {k: v[outcome.test_idx] for k, v in data.crystal_blocks.items()}
    rows = tree_features(data.x[outcome.test_idx], data.densities[outcome.test_idx], crystal_blocks=test_blocks)
    expected = hybrid.weight * network[:, 0] + (1 - hybrid.weight) * hybrid.trees.predict(rows)
    np.testing.assert_allclose(outcome.eval_pred[:, 0], expected, rtol=1e-6)
    card = build_card(data, outcome, params, version="1", source="test")
    assert card.training_data["trees"] and "r2" in card.metrics["network"] and card.uncertainty is not None
    loaded = load_model(save_job_model(tmp_path / "model", outcome, card), device="cpu")
    assert loaded.card.trees["weight"] == hybrid.weight and loaded.card.trees["fitted_on"].endswith("(24 structures)")
    served = loaded.predict_detailed(data.x[outcome.test_idx], densities_g_cm3=data.densities[outcome.test_idx],
                                     crystal_blocks=test_blocks)
    np.testing.assert_allclose(served.values[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert served.sigma is not None and (served.sigma > 0).all()
