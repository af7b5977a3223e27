"""Unit tests for hybrid models: frozen tree arrays, the blend, its model folder and the design search on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

from models.artifacts import CorruptModelError, ModelCard, Target, load_model, save_model, save_trees
from models.descriptors import MissingDescriptorError, card_reads_density
from models.generator import GridVAE, from_generator_space
from models.hybrid import TREES_FILE, HybridTrees, choose_weight, fit_trees, tree_features
from models.inverse_design import design_landscapes
from models.retnet import RetNet
from models.training import TrainResult, predict_grids
from models.transforms import Standardizer
from models.trees import TreeArrays

CH4 = Target(name="ch4_uptake", unit="mol/kg", property="CH4 uptake, 298 K, 5.8 bar")


def _grids(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(-rng.normal(scale=rng.uniform(0.5, 3.0, (n, 1, 1, 1)), size=(n, 25, 25, 25))).astype(np.float32)


@pytest.mark.parametrize("forest", [ExtraTreesRegressor(n_estimators=20, random_state=0),
                                    RandomForestRegressor(n_estimators=20, min_samples_leaf=3, random_state=1)])
def test_frozen_trees_predict_exactly_as_scikit_learn(forest, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) * np.array([1e-3, 1, 10, 1e3, 1, 1])
    y = np.sin(x[:, 1]) + x[:, 2] / 10 + rng.normal(scale=0.1, size=300)
    forest.fit(x[:200], y[:200])
    trees = TreeArrays.from_sklearn(forest)
    unseen = x[200:].copy()
    root = forest.estimators_[0].tree_
    split = np.float32(root.threshold[0])  # inputs at, just below and just above the first split (in float32)
    below, above = np.nextafter(split, np.float32(-np.inf)), np.nextafter(split, np.float32(np.inf))
    for k, value in enumerate((split, below, above)):
        unseen[k, root.feature[0]] = value
    np.testing.assert_allclose(trees.predict(unseen), forest.predict(unseen), rtol=0, atol=1e-12)
    assert trees.per_tree(unseen).shape == (20, 100)
    trees.save(tmp_path / "t.npz")
    again = TreeArrays.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(again.predict(unseen), trees.predict(unseen))
    with pytest.raises(ValueError, match="6 features"):
        trees.predict(unseen[:, :5])


def test_inconsistent_tree_arrays_are_refused() -> None:
    leaf = {"feature": np.zeros(1, np.int32), "threshold": np.zeros(1), "left": np.array([-1], np.int32),
            "right": np.array([-1], np.int32), "value": np.ones(1), "roots": np.zeros(1, np.int32), "n_features": 2}
    assert TreeArrays(**leaf).predict(np.zeros((3, 2))).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="children"):
        TreeArrays(**{**leaf, "left": np.array([5], np.int32), "right": np.array([0], np.int32)})
    with pytest.raises(ValueError, match="roots"):
        TreeArrays(**{**leaf, "roots": np.array([3], np.int32)})
    with pytest.raises(ValueError, match="one entry per node"):
        TreeArrays(**{**leaf, "value": np.ones(2)})
    with pytest.raises(ValueError, match="one-dimensional"):
        TreeArrays(**{**leaf, "value": np.ones((1, 1))})
    # a cycle (node 1 back to node 0) would never reach a leaf: refused
    pair = {"feature": np.zeros(2, np.int32), "threshold": np.zeros(2), "left": np.array([1, 0], np.int32),
            "right": np.array([1, 0], np.int32), "value": np.ones(2), "roots": np.zeros(1, np.int32), "n_features": 1}
    with pytest.raises(ValueError, match="later nodes"):
        TreeArrays(**pair)


def test_the_weight_goes_to_whichever_predictor_is_right() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    noise_a, noise_b = rng.normal(size=500), rng.normal(size=500)
    assert choose_weight(y, y, y + noise_b) == 1.0
    assert choose_weight(y, y + noise_a, y) == 0.0
    # two independent errors of equal size: the mean beats either
    w = choose_weight(y, y + noise_a, y + noise_b)
    assert 0.35 <= w <= 0.65
    blend = w * (y + noise_a) + (1 - w) * (y + noise_b)
    assert np.mean((blend - y) ** 2) < min(np.mean(noise_a ** 2), np.mean(noise_b ** 2))


def test_the_blend_and_its_spread() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((60, 2))
    trees = fit_trees(x, x[:, 0] * 4, n_trees=10)
    hybrid = HybridTrees(trees, weight=0.25, features=("log_density",))
    members = np.stack([np.full((3, 1), 1.0), np.full((3, 1), 3.0)])
    values, spread = hybrid.combine(members, x[:3])
    by_trees = trees.predict(x[:3])
    np.testing.assert_allclose(values[:, 0], 0.25 * 2.0 + 0.75 * by_trees)
    np.testing.assert_allclose(spread[:, 0], [np.std([1.0, 3.0, t], ddof=1) for t in by_trees])
    assert hybrid.needs_density and not HybridTrees(trees, 0.5, ("energy_histogram",)).needs_density
    with pytest.raises(ValueError, match="predict 1 output"):
        hybrid.combine(np.zeros((2, 3, 4)), x[:3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        HybridTrees(trees, weight=1.5)


#: Trees on the grid and the density alone (the default also reads the crystal's ch4_widom numbers).
GRID_AND_DENSITY = ("energy_histogram", "log_density")


def _hybrid_folder(tmp_path: Path, weight: float = 0.4) -> tuple[Path, np.ndarray, np.ndarray, HybridTrees]:
    """A grid-only RetNet folder blended with trees on the energy histogram + ln ρ of 40 random grids."""
    torch.manual_seed(0)
    net = RetNet(n_outputs=1).eval()
    result = TrainResult(model=net, standardizer=Standardizer(mean=1.0, std=2.0), best_epoch=1)
    folder = save_model(tmp_path / "m", result, ModelCard(name="hybrid", version="1", targets=[CH4]))
    grids, densities = _grids(40), np.linspace(0.3, 2.0, 40)
    rows = tree_features(grids, densities, GRID_AND_DENSITY)
    hybrid = HybridTrees(fit_trees(rows, 5 * densities + np.log(grids.mean(axis=(1, 2, 3))), n_trees=30), weight,
                         GRID_AND_DENSITY)
    save_trees(folder, hybrid, fitted_on="40 random grids")
    return folder, grids, densities, hybrid


def test_a_hybrid_model_folder_predicts_the_blend(tmp_path: Path) -> None:
    folder, grids, densities, hybrid = _hybrid_folder(tmp_path)
    loaded = load_model(folder, device="cpu")
    assert loaded.trees is not None and loaded.trees.weight == 0.4 and loaded.needs_density
    card = json.loads((folder / "card.json").read_text())
    assert card["trees"]["file"] == TREES_FILE and card["trees"]["fitted_on"] == "40 random grids"
    assert card_reads_density(card) and not card_reads_density({**card, "trees": None})
    network = predict_grids(loaded.model, loaded.standardizer, grids[:5])[:, 0]
    expected = 0.4 * network + 0.6 * hybrid.trees.predict(tree_features(grids[:5], densities[:5], GRID_AND_DENSITY))
    np.testing.assert_allclose(loaded.predict(grids[:5], densities_g_cm3=densities[:5])[:, 0], expected, rtol=1e-6)
    detailed = loaded.predict_detailed(grids[:5], densities_g_cm3=densities[:5])
    np.testing.assert_allclose(detailed.values[:, 0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="density"):
        loaded.predict(grids[:2])
    np.testing.assert_allclose(loaded.predict(grids[:5], densities_g_cm3=densities[:5], network_only=True)[:, 0],
                               network, rtol=1e-6)
    assert loaded.predict(grids[:0], densities_g_cm3=densities[:0]).shape == (0, 1)


def test_trees_on_a_crystal_block_need_it_from_the_caller(tmp_path: Path) -> None:
    """Trees reading ``ch4_widom`` (computed from the crystal, not the grid): the card says so, predictions take
    the block and refuse to guess it, and the network's part needs none."""
    torch.manual_seed(0)
    result = TrainResult(model=RetNet(n_outputs=1).eval(), standardizer=Standardizer(mean=1.0, std=2.0), best_epoch=1)
    folder = save_model(tmp_path / "m", result, ModelCard(name="hybrid", version="1", targets=[CH4]))
    features = ("energy_histogram", "ch4_widom")
    grids, widom = _grids(40), np.column_stack([np.linspace(-2.0, 1.0, 40), np.linspace(8.0, 25.0, 40)])
    rows = tree_features(grids, None, features, {"ch4_widom": widom})
    hybrid = HybridTrees(fit_trees(rows, 3.0 + widom[:, 0], n_trees=30), 0.25, features)
    save_trees(folder, hybrid, fitted_on="40 random grids")
    loaded = load_model(folder, device="cpu")
    assert loaded.crystal_blocks == ("ch4_widom",) and not loaded.needs_density
    network = predict_grids(loaded.model, loaded.standardizer, grids[:5])[:, 0]
    expected = 0.25 * network + 0.75 * hybrid.trees.predict(rows[:5])
    blocks = {"ch4_widom": widom[:5]}
    np.testing.assert_allclose(loaded.predict(grids[:5], crystal_blocks=blocks)[:, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(loaded.predict_detailed(grids[:5], crystal_blocks=blocks).values[:, 0], expected,
                               rtol=1e-6)
    with pytest.raises(MissingDescriptorError, match="ch4_widom"):
        loaded.predict(grids[:5])
    np.testing.assert_allclose(loaded.predict(grids[:5], network_only=True)[:, 0], network, rtol=1e-6)
    grid_only = load_model(_hybrid_folder(tmp_path / "plain")[0], device="cpu")
    assert grid_only.crystal_blocks == ()


def test_damaged_or_missing_trees_are_refused(tmp_path: Path) -> None:
    folder, *_ = _hybrid_folder(tmp_path)
    data = bytearray((folder / TREES_FILE).read_bytes())
    data[100] ^= 0xFF
    (folder / TREES_FILE).write_bytes(bytes(data))
    with pytest.raises(CorruptModelError, match="sha256"):
        load_model(folder, device="cpu")
    (folder / TREES_FILE).unlink()
    with pytest.raises(CorruptModelError, match="missing"):
        load_model(folder, device="cpu")


def test_only_a_one_output_retnet_card_takes_trees(tmp_path: Path) -> None:
    entry = {"file": TREES_FILE, "sha256": "0" * 64, "weight": 0.5, "features": ["log_density"]}
    ModelCard(name="m", version="1", targets=[CH4], trees=entry)
    with pytest.raises(ValueError, match="one-output"):
        ModelCard(name="m", version="1", targets=[CH4, CH4], trees=entry)
    for bad in ({"weight": 2}, {"weight": None}, {"features": None}, {"features": ["no_such_descriptor"]}):
        with pytest.raises(ValueError):
            ModelCard(name="m", version="1", targets=[CH4], trees={**entry, **bad})
    # saving trees onto a two-output model is refused before anything is written
    result = TrainResult(model=RetNet(n_outputs=2).eval(), standardizer=Standardizer(mean=1.0, std=2.0), best_epoch=1)
    folder = save_model(tmp_path / "two", result, ModelCard(name="two", version="1", targets=[CH4, CH4]))
    rows = np.random.default_rng(0).random((20, 1))
    with pytest.raises(ValueError, match="one-output"):
        save_trees(folder, HybridTrees(fit_trees(rows, rows[:, 0], n_trees=3), 0.5, ("log_density",)))
    assert not (folder / TREES_FILE).exists() and load_model(folder, device="cpu").trees is None
    with pytest.raises(ValueError, match="features"):  # trees of another width than their features
        save_trees(folder, HybridTrees(fit_trees(rows, rows[:, 0], n_trees=3), 0.5))


class _Zero(torch.nn.Module):
    """A network that predicts 0 for every grid: only the trees can steer a search."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 1)


def test_the_design_search_scores_the_blend_that_serving_reports() -> None:
    torch.manual_seed(0)
    vae = GridVAE(latent_dim=4).eval()
    with torch.no_grad():
        raw = from_generator_space(vae.decode(torch.randn(400, 4))).numpy()[:, 0]
    features = ("energy_histogram",)
    rows = tree_features(raw, None, features)
    hybrid = HybridTrees(fit_trees(rows, 10 * raw.mean(axis=(1, 2, 3)), n_trees=30), weight=0.0, features=features)
    reachable = hybrid.trees.predict(rows)
    target = float(np.quantile(reachable, 0.9))
    kwargs = {"designs": 1, "particles": 16, "iterations": 25, "seed": 3}
    standardizer = Standardizer(mean=0.0, std=1.0)
    (with_trees,) = design_landscapes(vae, _Zero(), standardizer, np.ones((1, 1)), [target], [0.05],
                                      trees=hybrid, **kwargs)
    (without,) = design_landscapes(vae, _Zero(), standardizer, np.ones((1, 1)), [target], [0.05], **kwargs)
    found = hybrid.trees.predict(tree_features(with_trees.grid[None], None, features))[0]
    assert abs(found - target) < abs(float(np.median(reachable)) - target)
    assert with_trees.cost < without.cost  # the same swarm, but only the blend tells it where the target is


def test_calibrating_a_hybrid_needs_the_trees_rows(tmp_path: Path) -> None:
    from models.calibration import calibrate_model

    folder, grids, densities, hybrid = _hybrid_folder(tmp_path)
    loaded = load_model(folder, device="cpu")
    y = np.arange(40, dtype=np.float64)
    with pytest.raises(ValueError, match="rows of the val and test split"):
        calibrate_model(loaded.model, loaded.standardizer, train_x=grids[:20], train_y=y[:20],
                        train_names=[str(i) for i in range(20)], val_x=grids[20:30], val_y=y[20:30],
                        test_x=grids[30:], test_y=y[30:], trees=hybrid,
                        tree_rows={"val": tree_features(grids[20:30], densities[20:30], GRID_AND_DENSITY)})


def test_designs_of_a_model_whose_trees_read_the_crystal_are_scored_by_its_network(tmp_path: Path) -> None:
    """A landscape has no crystal, so no ``ch4_widom`` numbers: the design search and the designs' values use the
    network alone (which serving would blend with trees it cannot feed here), and say so."""
    from models.inverse_design import design_and_match, landscape_trees
    from worker.design import _scorer_note

    torch.manual_seed(0)
    result = TrainResult(model=RetNet(n_outputs=1).eval(), standardizer=Standardizer(mean=1.0, std=2.0), best_epoch=1)
    folder = save_model(tmp_path / "m", result, ModelCard(name="widom", version="1", targets=[CH4]))
    features = ("energy_histogram", "ch4_widom")
    grids, widom = _grids(30), np.column_stack([np.linspace(-2.0, 1.0, 30), np.full(30, 15.0)])
    rows = tree_features(grids, None, features, {"ch4_widom": widom})
    save_trees(folder, HybridTrees(fit_trees(rows, widom[:, 0], n_trees=10), 0.3, features), fitted_on="30 grids")
    loaded = load_model(folder, device="cpu")
    assert landscape_trees(loaded) is None and "network alone" in _scorer_note(loaded)
    (match,) = design_and_match(GridVAE(latent_dim=4).eval(), loaded, np.ones((1, 1)), [1.0], [0.5], None, None,
                                particles=4, iterations=2, keep_in_domain=False)
    network = loaded.predict(match.design.grid[None], network_only=True)[0, 0]
    assert match.predicted[0] == pytest.approx(network, rel=1e-6)
    plain = load_model(_hybrid_folder(tmp_path / "plain")[0], device="cpu")
    assert landscape_trees(plain) is plain.trees and _scorer_note(plain) == ""
