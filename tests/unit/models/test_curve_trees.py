"""Unit tests for models.curve_trees: monotone isotherm trees, and their blend with an isotherm network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.curve_trees import CurveTrees, curve_components, curve_from_components
from models.hybrid import HybridTrees, choose_weight, tree_features

PRESSURES = (1.0, 5.8, 35.0, 65.0)
ANCHOR = 1


def _langmuir(rows: np.ndarray) -> np.ndarray:
    """Langmuir curves whose capacity and affinity follow the first two row features."""
    capacity, affinity = 2.0 + 6.0 * rows[:, :1], 0.01 + 0.3 * rows[:, 1:2]
    p = np.asarray(PRESSURES)[None]
    return capacity * affinity * p / (1 + affinity * p)


def test_components_by_hand_and_back() -> None:
    curves = np.array([[0.5, 2.0, 5.0, 6.0]])
    np.testing.assert_allclose(curve_components(curves, ANCHOR), [[0.25, 2.0, 3.0, 1.0]])
    np.testing.assert_allclose(curve_from_components(curve_components(curves, ANCHOR), ANCHOR), curves)
    # the anchor at either end: fractions only, or steps only
    np.testing.assert_allclose(curve_components(curves, 0), [[0.5, 1.5, 3.0, 1.0]])
    np.testing.assert_allclose(curve_components(curves, 3), [[0.25, 0.4, 5.0 / 6.0, 6.0]])
    for anchor in range(4):
        np.testing.assert_allclose(curve_from_components(curve_components(curves, anchor), anchor), curves)


def test_components_of_incomplete_and_noisy_curves() -> None:
    curves = np.array([[0.2, 1.0, np.nan, 9.0],    # 35 bar missing: neither step around it is defined
                       [np.nan, 1.0, 3.0, 2.9],     # GCMC noise: a dip of 0.1 becomes a zero step
                       [0.1, 0.0, 0.5, 0.6],        # nothing adsorbed at the anchor: no fraction below it
                       [1.2, 1.0, 1.5, 1.5]])       # 1 bar above 5.8 bar by noise: the fraction is 1
    c = curve_components(curves, ANCHOR)
    assert np.isnan(c[0, 2]) and np.isnan(c[0, 3]) and c[0, 0] == pytest.approx(0.2)
    assert np.isnan(c[1, 0]) and c[1, 3] == 0.0
    assert np.isnan(c[2, 0]) and c[2, 1] == 0.0
    assert c[3, 0] == 1.0
    with pytest.raises(ValueError, match="anchor"):
        curve_components(curves, 4)


@pytest.mark.parametrize("seed", range(3))
def test_rebuilt_curves_are_monotone_and_nonnegative_for_any_valid_components(seed: int) -> None:
    rng = np.random.default_rng(seed)
    components = np.column_stack([rng.random(500), rng.random(500) * 10 ** rng.uniform(-6, 2, 500),
                                  rng.random(500) * 30, np.where(rng.random(500) < 0.2, 0.0, rng.random(500))])
    curves = curve_from_components(components, ANCHOR)
    assert (curves >= 0).all() and (np.diff(curves, axis=1) >= 0).all()


def test_curve_trees_learn_langmuir_curves_from_incomplete_labels_and_stay_monotone(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = rng.random((600, 5))
    curves = _langmuir(rows) + rng.normal(scale=0.05, size=(600, 4))
    labels = curves.copy()
    labels[200:, [0, 2, 3]] = np.nan  # most structures have only the anchor, as in the GCMC labels
    trees = CurveTrees.fit(rows[:500], labels[:500], ANCHOR, n_trees=60, min_samples_leaf=2)
    unseen = np.vstack([rows[500:], rng.normal(scale=5.0, size=(200, 5))])  # far outside the training range too
    predicted = trees.predict(unseen)
    assert predicted.shape == (300, 4) and trees.n_outputs == 4 and trees.n_features == 5
    assert (predicted >= 0).all() and (np.diff(predicted, axis=1) >= 0).all()
    truth = _langmuir(rows[500:])
    for j in range(4):  # every pressure learned (R² on unseen structures)
        r2 = 1 - np.mean((predicted[:100, j] - truth[:, j]) ** 2) / np.var(truth[:, j])
        assert r2 > 0.8, (PRESSURES[j], r2)
    trees.save(tmp_path / "curve.npz")
    again = CurveTrees.load(tmp_path / "curve.npz")
    assert again.anchor == ANCHOR
    np.testing.assert_array_equal(again.predict(unseen), predicted)
    with pytest.raises(ValueError, match="component 0 has 3"):
        CurveTrees.fit(rows[:50], np.column_stack([np.r_[labels[:3, 0], np.full(47, np.nan)], labels[:50, 1:]]),
                       ANCHOR, n_trees=5, min_samples_leaf=1)


def test_a_blend_of_two_monotone_curves_is_monotone_and_its_spread_has_every_pressure() -> None:
    rng = np.random.default_rng(1)
    rows = rng.random((300, 3))
    trees = CurveTrees.fit(rows, _langmuir(rows), ANCHOR, n_trees=20, min_samples_leaf=2)
    hybrid = HybridTrees(trees, weight=0.4, features=("log_density",))
    assert hybrid.n_outputs == 4
    members = np.sort(rng.random((3, 50, 4)) * 8, axis=2)  # three monotone member curves
    values, spread = hybrid.combine(members, rows[:50])
    assert values.shape == spread.shape == (50, 4)
    assert (np.diff(values, axis=1) >= 0).all()
    np.testing.assert_allclose(values, 0.4 * members.mean(axis=0) + 0.6 * trees.predict(rows[:50]))
    np.testing.assert_allclose(spread, np.concatenate([members, trees.predict(rows[:50])[None]]).std(axis=0, ddof=1))
    with pytest.raises(ValueError, match="4 output"):
        hybrid.combine(members[:, :, :1], rows[:50])
    entry = hybrid.card_entry("0" * 64)
    assert entry["outputs"] == 4 and entry["anchor"] == ANCHOR


def test_one_weight_for_a_curve_is_chosen_on_the_labelled_points_only() -> None:
    rng = np.random.default_rng(2)
    truth = np.sort(rng.random((80, 4)) * 5, axis=1)
    network, trees = truth + 0.3, truth - 0.3 * rng.random((80, 4))  # the trees are closer
    labels = truth.copy()
    labels[20:, [0, 2, 3]] = np.nan
    weight = choose_weight(labels, network, trees, scales=np.nanstd(labels, axis=0))
    assert 0.0 <= weight < 0.5
    labels_lie = labels.copy()
    labels_lie[np.isnan(labels_lie)] = 1e6  # masked points would dominate if they counted
    assert choose_weight(labels, network, trees) == choose_weight(np.where(np.isnan(labels), np.nan, labels_lie),
                                                                  network, trees)
    with pytest.raises(ValueError, match="no held-out label"):
        choose_weight(np.full((3, 4), np.nan), network[:3], trees[:3])
    with pytest.raises(ValueError, match="one shape"):  # one pressure's predictions never broadcast over a curve
        choose_weight(labels, network[:, :1], trees)
    with pytest.raises(ValueError, match="finite"):
        choose_weight(labels, np.where(np.isnan(labels), 0.0, np.nan), trees)
    with pytest.raises(ValueError, match="scale"):
        choose_weight(labels, network, trees, scales=np.ones(3))


def test_an_isotherm_model_with_curve_trees_saves_loads_and_predicts_the_blend(tmp_path: Path) -> None:
    from models.artifacts import CorruptModelError, ModelCard, Target, load_model, save_model, save_trees
    from models.isotherm import IsothermEnsemble
    from models.retnet import RetNet, RetNetEnsemble

    torch.manual_seed(0)
    model = IsothermEnsemble(RetNetEnsemble([RetNet() for _ in range(2)]), PRESSURES).freeze_backbone().eval()
    targets = [Target(name=f"ch4_uptake_{p:g}bar", unit="mol/kg", property=f"CH4 uptake, 298 K, {p:g} bar",
                      gas="CH4", temperature_k=298.0, pressure_bar=p) for p in PRESSURES]
    card = ModelCard(name="iso", version="1", architecture="RetNetIsotherm", targets=targets,
                     primary_output=ANCHOR, standardization={"mean": 0.1, "std": 0.2})
    folder = save_model(tmp_path / "iso", model, card)
    rng = np.random.default_rng(0)
    grids = np.exp(-rng.normal(scale=rng.uniform(0.5, 3.0, (40, 1, 1, 1)), size=(40, 25, 25, 25))).astype(np.float32)
    features = ("energy_histogram", "log_density")
    density = rng.uniform(0.3, 2.0, 40)
    rows = tree_features(grids, density, features)
    trees = CurveTrees.fit(rows, _langmuir(rng.random((40, 2))), ANCHOR, n_trees=10, min_samples_leaf=2)
    saved = save_trees(folder, HybridTrees(trees, 0.5, features))
    assert saved.trees is not None and saved.trees["outputs"] == 4 and saved.needs_density
    loaded = load_model(folder, device="cpu")
    blend = loaded.predict(grids, densities_g_cm3=density)
    network = loaded.predict(grids, densities_g_cm3=density, network_only=True)
    np.testing.assert_allclose(blend, 0.5 * network + 0.5 * trees.predict(rows), rtol=1e-5, atol=1e-6)
    assert blend.shape == (40, 4) and (np.diff(blend, axis=1) >= 0).all()
    assert loaded.predict_detailed(grids, densities_g_cm3=density).values.shape == (40, 4)
    # a curve's trees anchored elsewhere than the primary output, or one output's trees on a curve, are refused
    # and leave the folder as it was
    with pytest.raises(ValueError, match="anchored at its primary output"):
        save_trees(folder, HybridTrees(CurveTrees(trees.components, 0), 0.5, features))
    with pytest.raises(ValueError, match="one-output RetNet"):
        save_trees(folder, HybridTrees(trees.components[0], 0.5, features))
    assert sorted(f.name for f in folder.iterdir() if f.name.startswith("."))  == []
    np.testing.assert_array_equal(load_model(folder, device="cpu").predict(grids, densities_g_cm3=density), blend)
    card_file = folder / "card.json"
    card_text = card_file.read_text()
    for bad in ('"outputs": 3', '"outputs": true', '"outputs": 1'):
        card_file.write_text(card_text.replace('"outputs": 4', bad))
        with pytest.raises(CorruptModelError):
            load_model(folder, device="cpu")
    # a file whose trees disagree with the card (its sha256 updated) is refused on loading too
    import hashlib
    import json

    CurveTrees(trees.components, 0).save(folder / "trees.npz")
    entry = json.loads(card_text)
    entry["trees"]["sha256"] = hashlib.sha256((folder / "trees.npz").read_bytes()).hexdigest()
    card_file.write_text(json.dumps(entry))
    with pytest.raises(CorruptModelError, match="anchored at output 0"):
        load_model(folder, device="cpu")


def test_components_whose_leaves_could_break_the_curve_are_refused() -> None:
    rng = np.random.default_rng(3)
    rows = rng.random((100, 3))
    trees = CurveTrees.fit(rows, _langmuir(rows), ANCHOR, n_trees=5, min_samples_leaf=2)
    anchor_trees = trees.components[ANCHOR]  # uptakes up to ~8 mol/kg: not a fraction
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\]"):
        CurveTrees((trees.components[0], anchor_trees, anchor_trees, trees.components[3]), 2)
    negative = type(anchor_trees)(**{**anchor_trees.__dict__, "value": anchor_trees.value - 100.0})
    with pytest.raises(ValueError, match="≥ 0"):
        CurveTrees((trees.components[0], negative, *trees.components[2:]), ANCHOR)
    fewer = CurveTrees.fit(rows, _langmuir(rows), ANCHOR, n_trees=3, min_samples_leaf=2)
    with pytest.raises(ValueError, match="as many"):
        CurveTrees((fewer.components[0], *trees.components[1:]), ANCHOR)


def test_out_of_fold_curve_trees_never_predict_a_structure_they_saw() -> None:
    from models.curve_trees import out_of_fold_curve_trees
    from models.isotherm_training import fold_assignment

    rng = np.random.default_rng(4)
    rows = rng.random((120, 3))
    curves = _langmuir(rows)
    folds = fold_assignment(120, 4)
    oof = out_of_fold_curve_trees(rows, curves, ANCHOR, folds, n_trees=20, min_samples_leaf=1)
    seen = CurveTrees.fit(rows, curves, ANCHOR, n_trees=20, min_samples_leaf=1).predict(rows)
    assert oof.shape == (120, 4) and (np.diff(oof, axis=1) >= 0).all()
    # trees with one structure per leaf reproduce what they saw almost exactly, and miss what they did not
    assert np.abs(seen - curves).mean() < 0.5 * np.abs(oof - curves).mean()
    held = folds == 0
    fold_trees = CurveTrees.fit(rows[~held], curves[~held], ANCHOR, n_trees=20, min_samples_leaf=1, seed=0)
    np.testing.assert_allclose(oof[held], fold_trees.predict(rows[held]))
    with pytest.raises(ValueError, match="one fold per structure"):
        out_of_fold_curve_trees(rows, curves, ANCHOR, folds[:-1], n_trees=2, min_samples_leaf=1)
