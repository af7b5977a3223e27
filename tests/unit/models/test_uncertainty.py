"""Calibrated σ and the applicability domain (models.uncertainty, models.calibration, LoadedModel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.uncertainty import Domain, SpreadCalibration, calibrate_spread, calibration_curve, coverage, fit_domain

DENSE = Path(__file__).resolve().parents[2] / "data" / "dense"


def test_calibrated_spread_covers_the_level_on_fresh_data() -> None:
    rng = np.random.default_rng(0)
    # heteroscedastic errors: the true σ is sqrt(0.1² + (3 · spread)²)
    spread = rng.uniform(0.05, 0.5, size=4000)
    y_pred = rng.normal(size=4000)
    y = y_pred + rng.normal(size=4000) * np.sqrt(0.01 + (3 * spread) ** 2)
    cal = calibrate_spread(y[:2000], y_pred[:2000], spread[:2000])
    assert cal.gain[0] * cal.scale[0] == pytest.approx(3.0, rel=0.1)
    rms = float(np.sqrt(np.mean((y[:2000] - y_pred[:2000]) ** 2)))
    assert cal.base[0] >= 0.25 * rms - 1e-12  # the floor: a quarter of the validation RMSE
    assert cal.sigma(np.array([0.0]))[0, 0] >= 0.25 * rms * cal.scale[0] - 1e-12
    fresh = coverage(y[2000:], y_pred[2000:], cal.sigma(spread[2000:]))[0]
    assert 0.93 <= fresh <= 0.97
    assert cal.val_coverage[0] >= 0.95


def test_uninformative_spread_gets_no_weight() -> None:
    """Members whose disagreement says nothing about the error: σ ends up (nearly) constant."""
    rng = np.random.default_rng(6)
    spread = rng.uniform(0.0, 2.0, size=3000)
    y = rng.normal(scale=0.5, size=3000)
    cal = calibrate_spread(y, np.zeros(3000), spread)
    sigma = cal.sigma(np.array([0.0, 2.0]))[:, 0]
    assert sigma[1] / sigma[0] < 1.1
    assert sigma[0] == pytest.approx(0.5 * 1.96 / 1.96, rel=0.1)


def test_constant_sigma_for_one_network_and_round_trip() -> None:
    rng = np.random.default_rng(1)
    y_pred = rng.normal(size=500)
    y = y_pred + rng.normal(scale=0.4, size=500)
    cal = calibrate_spread(y, y_pred, None)
    assert cal.method == "constant"
    sigma = cal.sigma(np.full((3, 1), 123.0))  # the spread is ignored
    assert np.allclose(sigma, 0.4, rtol=0.15)
    again = SpreadCalibration.from_dict(cal.to_dict())
    assert again == cal


def test_calibration_curve_bins_follow_sigma() -> None:
    rng = np.random.default_rng(3)
    sigma = rng.uniform(0.1, 2.0, size=4000)
    y = rng.normal(size=4000) * sigma
    curve = calibration_curve(y, np.zeros(4000), sigma, bins=5)
    assert len(curve) == 5 and sum(p["n"] for p in curve) == 4000
    for point in curve:  # a calibrated σ: observed RMSE ≈ predicted σ in each bin
        assert point["rmse"] == pytest.approx(point["sigma"], rel=0.15)


def test_domain_flags_far_points_and_lists_neighbours(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    train = rng.normal(size=(300, 10))
    names = [f"mof{i}" for i in range(300)]
    labels = rng.uniform(0, 5, size=300)
    domain = fit_domain(train, names, labels, rng.normal(size=(100, 10)))
    assert domain.summary["val_in_domain"] == pytest.approx(0.95, abs=0.011)
    inside, neighbours = domain.assess(np.vstack([train[7] + 0.01, np.full(10, 8.0)]))
    assert inside.tolist() == [True, False]
    assert neighbours[0][0].name == "mof7" and neighbours[0][0].label == labels[7]
    assert [n.distance for n in neighbours[1]] == sorted(n.distance for n in neighbours[1])
    assert len(neighbours[1]) == 5
    domain.save(tmp_path / "d.npz")
    loaded = Domain.load(tmp_path / "d.npz")
    assert loaded.threshold == domain.threshold and loaded.names == names
    assert np.array_equal(loaded.assess(np.full((1, 10), 8.0))[0], [False])


def test_shipped_model_reports_sigma_and_domain() -> None:
    from models.artifacts import load_model, shipped_model_dir

    model = load_model(shipped_model_dir(), device="cpu")
    assert model.card.uncertainty is not None and model.domain is not None
    test_coverage = model.card.uncertainty["test_coverage"][0]
    assert 0.85 <= test_coverage <= 1.0
    rng = np.random.default_rng(5)
    grids = rng.uniform(0, 1, size=(3, 25, 25, 25)).astype(np.float32)
    densities = [0.6, 1.0, 1.4]  # g/cm³ (read by a descriptor model, ignored by a grid-only one)
    # log10 K_H (mol/(kg·bar)) and Q_st⁰ (kJ/mol), for trees that read the crystal's ch4_widom numbers
    blocks = {b: np.array([[-1.0, 12.0], [-0.5, 15.0], [0.2, 20.0]]) for b in model.crystal_blocks}
    out = model.predict_detailed(grids, densities_g_cm3=densities, crystal_blocks=blocks)
    assert out.values.shape == (3, 1) and out.sigma.shape == (3, 1) and (out.sigma > 0).all()
    plain = model.predict(grids, densities_g_cm3=densities, crystal_blocks=blocks)
    assert np.allclose(out.values, plain, atol=1e-5)  # the plain path's mean
    assert len(out.neighbours[0]) == 5


@pytest.mark.parametrize("cif", sorted(DENSE.glob("*.cif")), ids=lambda p: p.stem)
def test_dense_framework_is_out_of_domain(cif: Path) -> None:
    """A dense, non-porous crystal (α-quartz, rock salt) is nothing like the MOFs the model learned from."""
    from models.artifacts import load_model, shipped_model_dir
    from models.descriptors import compute_crystal_blocks
    from models.structure import parse_cif
    from models.units import crystal_density_g_cm3
    from models.voxels import compute_voxels

    model = load_model(shipped_model_dir(), device="cpu")
    crystal = parse_cif(cif.read_bytes(), cif.stem)
    out = model.predict_detailed(compute_voxels(crystal, model.voxel_params),
                                 densities_g_cm3=[crystal_density_g_cm3(crystal)],
                                 crystal_blocks=compute_crystal_blocks(model.crystal_blocks, [crystal]))
    assert out.in_domain is not None and not bool(out.in_domain[0])


def test_a_training_structure_is_in_domain() -> None:
    """A structure the shipped model trained on lies in its domain (its nearest neighbour is itself)."""
    from models.artifacts import load_model, shipped_model_dir
    from models.datasets import coremof_cif_dir
    from models.descriptors import compute_crystal_blocks
    from models.structure import parse_cif
    from models.units import crystal_density_g_cm3
    from models.voxels import compute_voxels

    model = load_model(shipped_model_dir(), device="cpu")
    name = model.domain.names[0]
    cif = next(coremof_cif_dir().glob(f"{name}.cif"))
    crystal = parse_cif(cif.read_bytes(), name)
    out = model.predict_detailed(compute_voxels(crystal, model.voxel_params),
                                 densities_g_cm3=[crystal_density_g_cm3(crystal)],
                                 crystal_blocks=compute_crystal_blocks(model.crystal_blocks, [crystal]))
    assert bool(out.in_domain[0])
    assert out.neighbours[0][0].name == name and out.neighbours[0][0].distance < 1e-3


def test_a_calibrated_model_without_its_domain_file_is_refused(tmp_path: Path) -> None:
    """σ of the shipped model depends on the distance to its training data: without domain.npz it would be wrong."""
    import shutil

    from models.artifacts import CorruptModelError, load_model, shipped_model_dir

    folder = tmp_path / "m"
    shutil.copytree(shipped_model_dir(), folder)
    (folder / "domain.npz").unlink()
    with pytest.raises(CorruptModelError, match="domain"):
        load_model(folder, device="cpu")
    (folder / "domain.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CorruptModelError, match="domain"):
        load_model(folder, device="cpu")


def test_calibration_skips_unlabelled_points_per_output() -> None:
    """An isotherm's missing points (NaN labels) are left out of that output's fit and coverage only."""
    rng = np.random.default_rng(3)
    n = 4000
    spread = rng.uniform(0.1, 1.0, size=(n, 2))
    y_pred = rng.normal(size=(n, 2))
    y = y_pred + rng.normal(size=(n, 2)) * spread
    y_missing = y.copy()
    y_missing[rng.random(n) < 0.8, 1] = np.nan  # 80 % of the second output unlabelled
    full = calibrate_spread(y, y_pred, spread)
    masked = calibrate_spread(y_missing, y_pred, spread)
    assert masked.scale[0] == pytest.approx(full.scale[0]) and masked.gain[0] == pytest.approx(full.gain[0])
    assert masked.scale[1] == pytest.approx(full.scale[1], rel=0.15)  # the same law, from a fifth of the data
    assert all(0.93 <= c <= 0.97 for c in masked.val_coverage)
    assert coverage(y_missing, y_pred, masked.sigma(spread))[1] == pytest.approx(masked.val_coverage[1])
    y_missing[:, 1] = np.nan
    y_missing[0, 1] = 1.0
    with pytest.raises(ValueError, match="≥ 2 finite labels"):
        calibrate_spread(y_missing, y_pred, spread)
