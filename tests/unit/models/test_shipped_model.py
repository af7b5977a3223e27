"""The shipped CH4 model: its card tells the truth, and inference reproduces the training script's predictions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from models.artifacts import load_model, shipped_model_dir
from models.datasets import coremof_cif
from models.descriptors import compute_crystal_blocks
from models.metrics import regression_metrics
from models.params import VoxelParams
from models.structure import load_crystal
from models.units import crystal_density_g_cm3
from models.voxels import compute_voxels

SHIPPED = Path(__file__).resolve().parents[3] / "models" / "shipped" / "retnet-ch4"


@pytest.fixture(scope="module")
def shipped():
    assert shipped_model_dir("retnet-ch4") == SHIPPED
    return load_model(SHIPPED, device="cpu")


def _test_rows() -> list[tuple[str, float, float]]:
    names = (SHIPPED / "test_names.txt").read_text().split()
    with (SHIPPED / "test_predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(names)
    return [(n, float(r["true_mol_kg"]), float(r["predicted_mol_kg"])) for n, r in zip(names, rows, strict=True)]


def test_card_describes_the_target_and_voxels(shipped) -> None:
    card = shipped.card
    assert card.targets[0].unit == "mol/kg"
    assert "CH4" in card.targets[0].property and "298 K" in card.targets[0].property
    assert card.voxel_params == VoxelParams()
    assert not card.preliminary
    data = card.training_data
    assert data["n_test"] >= 0.2 * data["n_labelled"] - 1
    assert data["split_seed"] == 0


def test_card_metrics_match_the_stored_test_predictions(shipped) -> None:
    rows = _test_rows()
    y_true = np.array([r[1] for r in rows])
    y_pred = np.array([r[2] for r in rows])
    recomputed = regression_metrics(y_true, y_pred, n_boot=10000, seed=0)
    stored = shipped.card.metrics["test"]
    assert recomputed["r2"].value == pytest.approx(stored["r2"]["value"], abs=1e-4)
    assert recomputed["mae"].value == pytest.approx(stored["mae"]["value"], abs=1e-4)


def test_test_structures_are_labelled_with_the_gcmc_values(shipped) -> None:
    """Every test structure carries its label from one of the committed label files named in the card."""
    reference: dict[str, dict[str, str]] = {}
    for label_file in shipped.card.training_data.get("label_files", ["ch4_coremof2019_raspa2.csv"]):
        with open(SHIPPED.parents[1] / "data" / label_file) as fh:
            reference.update({r["name"]: r for r in csv.DictReader(fh)})
    for name, y_true, _ in _test_rows():
        assert reference[name]["status"] == "ok"
        assert float(reference[name]["ch4_uptake_mol_kg"]) == pytest.approx(y_true, abs=1e-5)


@pytest.mark.slow
def test_inference_reproduces_training_script_predictions(shipped) -> None:
    """Voxelize test structures from their CIFs again and predict: same numbers as the training script."""
    rows = _test_rows()[:4]
    crystals = [load_crystal(coremof_cif(name)) for name, _, _ in rows]
    grids = np.stack([compute_voxels(c, shipped.voxel_params) for c in crystals])
    predicted = shipped.predict(grids, densities_g_cm3=[crystal_density_g_cm3(c) for c in crystals],
                                crystal_blocks=compute_crystal_blocks(shipped.crystal_blocks, crystals))[:, 0]
    expected = np.array([r[2] for r in rows])
    np.testing.assert_allclose(predicted, expected, rtol=1e-4, atol=1e-4)
