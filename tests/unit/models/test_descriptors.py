"""Crystal descriptors beside the grid: the numbers, the descriptor RetNet, its training, card and serving."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifacts import ModelCard, Target, load_model, save_model
from models.descriptors import (
    DESCRIPTOR_WIDTHS,
    DescriptorSpec,
    MissingDescriptorError,
    compute_crystal_blocks,
    descriptor_matrix,
    energy_histogram,
    gravimetric_grid,
    stack_crystal_blocks,
    with_copy_descriptors,
)
from models.retnet import RetNet, RetNetEnsemble
from models.training import TrainConfig, predict_grids, train_retnet
from models.transforms import Standardizer

CH4 = Target(name="ch4_uptake", unit="mol/kg", property="CH4 uptake, 298 K, 5.8 bar")
BOTH = ("log_density", "energy_histogram")


def _grids(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(-rng.normal(size=(n, 25, 25, 25))).astype(np.float32)


def test_energy_histogram_counts_grid_points_per_energy_bin_by_hand() -> None:
    grid = np.ones((1, 2, 2, 2))  # V = 0 K: the bin [0, 1000) K
    grid[0, 0, 0, 0] = 0.0  # inside an atom: V = +inf, the last bin
    grid[0, 0, 0, 1] = math.exp(1100 / 298.0)  # V = -1100 K: the bin [-1250, -1000) K
    out = energy_histogram(grid)
    assert out.shape == (1, 14)
    assert out[0, :13].sum() == pytest.approx(1.0)
    assert out[0, 11] == pytest.approx(6 / 8) and out[0, 12] == pytest.approx(1 / 8)
    assert out[0, 6] == pytest.approx(1 / 8)
    assert out[0, 13] == pytest.approx((6 + math.exp(1100 / 298.0)) / 8)  # mean Boltzmann factor


def test_gravimetric_grid_by_hand() -> None:
    """Eight points: inside atoms (0, 0), a closed pocket (1e-4: V = +2745 K), open (0.5), V = 0 (1), attractive
    (2, 4); ρ = 2 g/cm³."""
    values = [0.0, 0.0, 1e-4, 0.5, 1.0, 2.0, 4.0, 0.0]
    grid = np.array(values).reshape(1, 2, 2, 2)
    mean_b = sum(values) / 8
    b_log_b = sum(v * math.log(v) for v in values if v > 0) / 8
    out = gravimetric_grid(grid, np.array([2.0]))
    assert out.shape == (1, 4)
    assert out[0, 0] == pytest.approx(mean_b / 2)  # ⟨e^(−V/T)⟩ / ρ, cm³/g
    assert out[0, 1] == pytest.approx(2 / 8 / 2)  # V < 0: the 2 and the 4
    assert out[0, 2] == pytest.approx(4 / 8 / 2)  # e^(−V/T) > 1e-3: 0.5, 1, 2, 4 (not the closed 1e-4)
    assert out[0, 3] == pytest.approx(-298.0 * b_log_b / mean_b)  # ⟨V e^(−V/T)⟩ / ⟨e^(−V/T)⟩, K
    assert out[0, 3] < 0  # attraction dominates the Boltzmann-weighted energy
    closed = gravimetric_grid(np.zeros((1, 2, 2, 2)), np.array([1.0]))
    assert closed.tolist() == [[0.0, 0.0, 0.0, 0.0]]  # no open point: no NaN
    assert descriptor_matrix(("gravimetric_grid",), grid, [2.0]) == pytest.approx(out)
    assert gravimetric_grid(np.zeros((0, 2, 2, 2)), np.zeros(0)).shape == (0, 4)
    with pytest.raises(MissingDescriptorError, match="density"):
        descriptor_matrix(("gravimetric_grid",), grid, None)


def test_descriptor_matrix_log_density_and_missing_densities() -> None:
    grids = _grids(3)
    out = descriptor_matrix(BOTH, grids, [1.0, 2.0, 0.5])
    assert out.shape == (3, sum(DESCRIPTOR_WIDTHS[n] for n in BOTH))
    assert out[:, 0] == pytest.approx(np.log([1.0, 2.0, 0.5]))
    for bad in (None, [1.0, None, 2.0], [1.0, 0.0, 2.0], [1.0, float("nan"), 2.0]):
        with pytest.raises(MissingDescriptorError, match="density"):
            descriptor_matrix(BOTH, grids, bad)
    assert descriptor_matrix(("energy_histogram",), grids, None).shape == (3, 14)  # no density needed
    with pytest.raises(ValueError, match="unknown descriptor"):
        descriptor_matrix(("volume",), grids, None)


def test_crystal_blocks_come_from_the_caller_and_must_be_whole() -> None:
    grids = _grids(3)
    widom = np.array([[-0.3, 15.9], [-1.2, 12.0], [0.4, 20.1]])
    out = descriptor_matrix(("log_density", "ch4_widom"), grids, [1.0, 2.0, 0.5], {"ch4_widom": widom})
    assert out.shape == (3, 3) and out[:, 1:].tolist() == widom.tolist()
    for bad in (None, {}, {"ch4_widom": np.where(np.eye(3, 2) > 0, np.nan, widom)}):
        with pytest.raises(MissingDescriptorError, match="ch4_widom"):
            descriptor_matrix(("ch4_widom",), grids, None, bad)
    with pytest.raises(ValueError, match="shape"):
        descriptor_matrix(("ch4_widom",), grids, None, {"ch4_widom": widom[:2]})
    with pytest.raises(ValueError, match="network reads"):  # a network's descriptors come from its grid and ρ
        DescriptorSpec(("ch4_widom",), (0.0, 0.0), (1.0, 1.0))


def test_compute_crystal_blocks_computes_only_the_named_blocks() -> None:
    from models.structure import Crystal
    from models.widom import ch4_widom_descriptors

    crystals = [Crystal(f"c{a}", np.eye(3) * a, np.zeros((1, 3)), ((("Zn", 1.0),),)) for a in (7.0, 11.0)]
    assert compute_crystal_blocks(("log_density", "energy_histogram"), crystals) == {}
    blocks = compute_crystal_blocks(("energy_histogram", "ch4_widom"), crystals)
    assert list(blocks) == ["ch4_widom"] and blocks["ch4_widom"].shape == (2, 2)
    np.testing.assert_allclose(blocks["ch4_widom"], [ch4_widom_descriptors(c) for c in crystals])
    assert compute_crystal_blocks(("ch4_widom",), [])["ch4_widom"].shape == (0, 2)
    assert stack_crystal_blocks(("ch4_widom", "log_density"), [])["ch4_widom"].shape == (0, 2)  # an empty batch
    stacked = stack_crystal_blocks(("ch4_widom",), [{"ch4_widom": np.array([[1.0, 2.0]])}, {"ch4_widom": [3.0, 4.0]}])
    assert stacked["ch4_widom"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_spec_standardizes_with_the_training_statistics_and_round_trips() -> None:
    raw = descriptor_matrix(BOTH, _grids(5), [0.5, 0.8, 1.0, 1.5, 2.0])
    spec = DescriptorSpec.fit(BOTH, raw)
    z = spec.transform(raw)
    assert np.allclose(z.mean(axis=0), 0.0, atol=1e-5)
    assert spec.needs_density and not DescriptorSpec.fit(("energy_histogram",), raw[:, 1:]).needs_density
    assert DescriptorSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="columns"):
        DescriptorSpec(("log_density",), (0.0, 1.0), (1.0, 1.0))


def test_a_descriptor_retnet_needs_its_descriptors_and_uses_them() -> None:
    torch.manual_seed(0)
    model = RetNet(n_descriptors=3).eval()
    x = torch.rand(4, 1, 25, 25, 25)
    with pytest.raises(ValueError, match="3 crystal descriptor"):
        model(x)
    with pytest.raises(ValueError, match="shape"):
        model(x, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="reads no descriptors"):
        RetNet()(x, torch.zeros(4, 3))
    with torch.no_grad():
        a, b = model(x, torch.zeros(4, 3)), model(x, torch.ones(4, 3))
    assert not torch.allclose(a, b)
    assert "descriptor_input.weight" in model.state_dict()
    assert "descriptor_input.weight" not in RetNet().state_dict()  # grid-only weights are unchanged


def test_fused_ensemble_with_descriptors_equals_its_members() -> None:
    torch.manual_seed(1)
    members = [RetNet(n_outputs=2, n_descriptors=4) for _ in range(3)]
    for member in members:  # BatchNorm statistics away from their defaults, so the folding is exercised
        member.train()
        with torch.no_grad():
            member(torch.rand(8, 1, 25, 25, 25), torch.randn(8, 4) * 3)
    ensemble = RetNetEnsemble(members).eval()
    x, d = torch.rand(9, 1, 25, 25, 25), torch.randn(9, 4)
    with torch.inference_mode():
        fused = ensemble.member_outputs(x, d)
        one_by_one = [torch.stack([m.fingerprint(x, d) for m in members]), torch.stack([m(x, d) for m in members])]
    for got, want in zip(fused, one_by_one, strict=True):
        assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="disagree on the number of descriptors"):
        RetNetEnsemble([RetNet(), RetNet(n_descriptors=1)])


def test_training_with_descriptors_learns_what_only_the_descriptor_knows() -> None:
    """Labels that are a function of the density alone: a descriptor RetNet fits them, a grid-only one cannot."""
    n = 48
    grids = np.ones((n, 25, 25, 25), np.float32)  # identical grids: only the density tells the crystals apart
    density = np.linspace(0.3, 2.0, n)
    y = 4.0 / density
    spec = DescriptorSpec.fit(("log_density",), descriptor_matrix(("log_density",), grids, density))
    d = spec.compute(grids, density)
    config = TrainConfig(epochs=25, batch_size=16, augment=False, seed=0, step_size=10, learning_rate=3e-3)
    described = train_retnet(grids, y, config, descriptors=d, standardizer=Standardizer(1.0, 1.0))
    grid_only = train_retnet(grids, y, config, standardizer=Standardizer(1.0, 1.0))
    assert described.model.n_descriptors == 1
    err = np.abs(predict_grids(described.model, described.standardizer, grids, descriptors=d)[:, 0] - y).mean()
    err_grid = np.abs(predict_grids(grid_only.model, grid_only.standardizer, grids)[:, 0] - y).mean()
    assert err < 0.5 * err_grid
    with pytest.raises(ValueError, match="training and the validation"):
        train_retnet(grids, y, config, descriptors=d, val=(grids[:4], y[:4]))


def test_saved_descriptor_model_serves_with_densities(tmp_path: Path) -> None:
    grids = _grids(6)
    density = np.array([0.4, 0.7, 0.9, 1.1, 1.3, 1.8])
    spec = DescriptorSpec.fit(BOTH, descriptor_matrix(BOTH, grids, density))
    torch.manual_seed(0)
    members = [RetNet(n_descriptors=spec.width) for _ in range(2)]
    for member in members:
        member.train()
        with torch.no_grad():
            member(torch.rand(4, 1, 25, 25, 25), torch.randn(4, spec.width))
    ensemble = RetNetEnsemble(members).eval()
    card = ModelCard(name="m", version="1", targets=[CH4], standardization={"mean": 1.0, "std": 2.0},
                     descriptors=spec.to_dict())
    folder = save_model(tmp_path / "m", ensemble, card)
    loaded = load_model(folder, device="cpu")
    assert loaded.needs_density and loaded.card.descriptor_spec == spec
    expected = predict_grids(ensemble, Standardizer(1.0, 2.0), grids, descriptors=spec.compute(grids, density))
    assert np.allclose(loaded.predict(grids, densities_g_cm3=density), expected, atol=1e-6)
    detailed = loaded.predict_detailed(grids, densities_g_cm3=density.tolist())
    assert np.allclose(detailed.values, expected, atol=1e-6)
    with pytest.raises(MissingDescriptorError):
        loaded.predict(grids)
    with pytest.raises(ValueError, match="descriptor"):  # a card that does not describe the model's inputs
        save_model(tmp_path / "bad", ensemble, card.model_copy(update={"descriptors": None}))


def test_freezing_all_but_the_output_freezes_the_descriptor_input() -> None:
    from models.retnet import freeze

    model = freeze(RetNet(n_descriptors=2), "all-but-output")
    assert not model.descriptor_input.weight.requires_grad and model.output.weight.requires_grad


def test_an_isotherm_model_on_a_density_backbone_reads_the_density_and_round_trips(tmp_path: Path) -> None:
    from models.isotherm import IsothermEnsemble

    torch.manual_seed(0)
    model = IsothermEnsemble(RetNetEnsemble([RetNet(n_descriptors=1), RetNet(n_descriptors=1)]), (1.0, 5.8)).eval()
    assert model.n_descriptors == 1
    grids = torch.as_tensor(_grids(3))[:, None]
    with pytest.raises(ValueError, match="descriptor"):
        model(grids)  # the density is required, never guessed
    light, heavy = model(grids, torch.full((3, 1), -1.0)), model(grids, torch.full((3, 1), 1.0))
    assert not torch.allclose(light, heavy) and bool((light.diff(dim=1) >= 0).all())
    targets = [Target(name=f"ch4_uptake_{p:g}bar", unit="mol/kg", property=f"CH4 uptake, 298 K, {p:g} bar",
                      gas="CH4", temperature_k=298.0, pressure_bar=p) for p in (1.0, 5.8)]
    spec = DescriptorSpec(names=("log_density",), mean=(0.0,), std=(0.5,))
    card = ModelCard(name="iso", version="1", architecture="RetNetIsotherm", targets=targets, primary_output=1,
                     standardization={"mean": 0.0, "std": 1.0}, descriptors=spec.to_dict())
    save_model(tmp_path / "iso", model, card)
    loaded = load_model(tmp_path / "iso", device="cpu")
    assert loaded.needs_density
    densities = np.array([0.6, 1.0, 1.6])
    with torch.no_grad():
        expected = model(grids, torch.as_tensor(spec.compute(_grids(3), densities))).double().numpy()
    assert np.allclose(loaded.predict(_grids(3), densities_g_cm3=densities), expected, atol=1e-5)
    with pytest.raises(MissingDescriptorError):
        loaded.predict(_grids(3))


def test_jittered_copies_keep_their_originals_density_and_get_their_own_histogram() -> None:
    spec = DescriptorSpec(names=BOTH, mean=(0.0,) * 15, std=(1.0,) * 15)
    originals, copies = _grids(2, seed=1), _grids(4, seed=2)  # 2 structures × 2 copies each
    densities = np.array([0.5, 2.0])
    described = spec.compute(originals, densities)
    out = with_copy_descriptors(spec, described, copies, densities, per_copy=2)
    assert out.shape == (6, 15) and np.array_equal(out[:2], described)
    assert np.allclose(out[2:, 0], np.log([0.5, 0.5, 2.0, 2.0]))  # copies 0, 1 of structure 0, then of 1
    assert np.allclose(out[2:, 1:], descriptor_matrix(BOTH, copies, np.ones(4))[:, 1:])  # their own grids
    assert with_copy_descriptors(spec, described, copies[:0], densities, per_copy=0) is described
