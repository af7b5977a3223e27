"""Unit tests for the generator half of inverse design: the grid VAE, the particle swarm, the latent search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.descriptors import DescriptorSpec
from models.generator import (
    DensityHead,
    GridVAE,
    LatentCodes,
    density_head,
    fit_density_head,
    fit_generator,
    from_generator_space,
    load_generator,
    save_generator,
    to_generator_space,
)
from models.inverse_design import PRIOR_WEIGHT, design_landscapes
from models.swarm import particle_swarm
from models.transforms import Standardizer
from models.uncertainty import fit_domain


def _blobs(n: int, seed: int = 0) -> np.ndarray:
    """Raw grids: a Gaussian pocket of random depth at a random place (Boltzmann factors 0 … 50)."""
    rng = np.random.default_rng(seed)
    axis = np.arange(25)
    out = np.empty((n, 25, 25, 25), np.float32)
    for i in range(n):
        c = rng.uniform(6, 18, 3)
        r2 = ((axis[:, None, None] - c[0]) ** 2 + (axis[None, :, None] - c[1]) ** 2 + (axis[None, None, :] - c[2]) ** 2)
        out[i] = 1.0 + rng.uniform(5, 50) * np.exp(-r2 / 18.0)
    return out


def test_generator_space_round_trip_and_bounds() -> None:
    grid = np.array([0.0, 0.5, 1.0, 37.0, 100.0, 5e4])
    t = to_generator_space(grid)
    np.testing.assert_allclose(from_generator_space(t), np.minimum(grid, 100.0), rtol=1e-12)
    assert torch.allclose(to_generator_space(torch.tensor(grid)), torch.tensor(t))
    assert from_generator_space(np.array([-5.0, 50.0])).tolist() == [0.0, 100.0]  # decoded values stay physical


def test_vae_shapes_training_and_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = to_generator_space(_blobs(96)).astype(np.float32)
    vae = GridVAE(latent_dim=4)
    fit = fit_generator(vae, x[:80], x[80:], epochs=6, batch_size=16, lr=3e-3, beta=0.1, seed=0)
    baseline = float(np.mean((x[80:] - x[:80].mean(axis=0)) ** 2))
    assert fit.val_mse[-1] < fit.val_mse[0] and fit.val_mse[-1] < baseline  # it learns more than the mean grid
    save_generator(vae, str(tmp_path / "g.pt"), {"clip": 100.0})
    again, info = load_generator(str(tmp_path / "g.pt"))
    z = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(again.decode(z), vae.eval().decode(z)) and again.decode(z).shape == (3, 1, 25, 25, 25)
    assert info == {"clip": 100.0}


def test_particle_swarm_finds_the_minimum_and_never_forgets_its_best() -> None:
    def rosenbrock(z: np.ndarray) -> np.ndarray:
        return np.sum(100 * (z[:, 1:] - z[:, :-1] ** 2) ** 2 + (1 - z[:, :-1]) ** 2, axis=1)

    best, cost, history = particle_swarm(rosenbrock, 2, particles=40, iterations=200, seed=1)
    assert cost < 1e-3 and np.allclose(best, [1.0, 1.0], atol=0.05)
    assert all(b <= a for a, b in zip(history, history[1:], strict=False)) and len(history) == 201
    edge, _, _ = particle_swarm(lambda z: -z.sum(axis=1), 3, bound=2.0, seed=0)
    assert np.all(np.abs(edge) <= 2.0) and edge.sum() > 5.5  # pushed to the box's corner, never past it
    with pytest.raises(ValueError):
        particle_swarm(lambda z: z.sum(axis=1), 0)


class _MeanGrid(torch.nn.Module):
    """A 'predictor' whose one output is the mean standardized voxel: easy to steer, exactly known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3, 4))[:, None]


def test_the_latent_search_steers_a_decoded_landscape_towards_the_target() -> None:
    torch.manual_seed(0)
    vae = GridVAE(latent_dim=4).eval()
    standardizer = Standardizer(mean=0.0, std=1.0)
    with torch.no_grad():
        reachable = _MeanGrid()(from_generator_space(vae.decode(torch.randn(256, 4)))).numpy()[:, 0]
    target = float(np.quantile(reachable, 0.9))  # a value some codes reach, most do not
    designs = design_landscapes(vae, _MeanGrid(), standardizer, np.ones((1, 1)), [target], [0.01], designs=2,
                                particles=16, iterations=25, seed=3)
    assert len(designs) == 2
    for d in designs:
        assert d.grid.shape == (25, 25, 25) and d.grid.dtype == np.float32 and d.grid.min() >= 0.0
        assert d.history[-1] <= d.history[0]
        assert abs(float(d.grid.mean()) - target) < abs(float(np.median(reachable)) - target)


def test_the_density_head_recovers_a_linear_gaussian_relation() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4000, 6))
    coef = np.array([0.3, -0.2, 0.0, 0.1, 0.0, 0.05])
    log_rho = 0.1 + z @ coef + 0.2 * rng.standard_normal(4000)
    head = fit_density_head(z[:3600], log_rho[:3600], z[3600:], log_rho[3600:])
    assert np.allclose(head.coef, coef, atol=0.02) and head.intercept == pytest.approx(0.1, abs=0.02)
    assert head.residual_std == pytest.approx(0.2, rel=0.1)
    expected_r2 = coef @ coef / (coef @ coef + 0.04)
    assert head.val_r2 == pytest.approx(expected_r2, abs=0.05)
    assert DensityHead.from_dict(head.to_dict()) == head
    assert density_head({"density_head": head.to_dict()}) == head and density_head({}) is None
    as_torch = head.log_density(torch.as_tensor(z[:3], dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    assert np.allclose(as_torch.numpy(), head.log_density(z[:3], np.ones(3)))


class _DensityReader(torch.nn.Module):
    """A stand-in descriptor predictor: the mean grid plus 10 × the standardized ln ρ it is given."""

    n_descriptors = 1

    def forward(self, x: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3, 4))[:, None] + 10.0 * descriptors


def test_a_density_reading_predictor_searches_the_density_too() -> None:
    torch.manual_seed(0)
    vae = GridVAE(latent_dim=4).eval()
    head = DensityHead(coef=(0.0, 0.0, 0.0, 0.0), intercept=0.0, residual_std=0.5, val_r2=0.0)
    spec = DescriptorSpec(names=("log_density",), mean=(0.0,), std=(0.5,))
    standardizer = Standardizer(mean=0.0, std=1.0)
    with torch.no_grad():
        base = float(from_generator_space(vae.decode(torch.zeros(1, 4))).mean())
    # only a density of e^{+0.5} (ε = +1, standardized ln ρ = +1) reaches the target: the swarm must move ε
    target = base + 10.0
    designs = design_landscapes(vae, _DensityReader(), standardizer, np.ones((1, 1)), [target], [0.5], designs=1,
                                particles=16, iterations=30, seed=1, descriptors=spec, density=head)
    (d,) = designs
    assert d.latent.shape == (5,)  # the 4-d code and the density's own coordinate
    assert d.density_g_cm3 == pytest.approx(np.exp(0.5 * d.latent[4]))
    assert 1.2 < d.density_g_cm3 < 2.2  # ≈ e^{0.5} = 1.65, not the prior's centre (1 g/cm³)
    with pytest.raises(ValueError, match="density head"):
        design_landscapes(vae, _DensityReader(), standardizer, np.ones((1, 1)), [target], [0.5], designs=1,
                          descriptors=spec)
    with pytest.raises(ValueError, match="volumetric"):
        design_landscapes(vae, _MeanGrid(), standardizer, np.ones((1, 1)), [target], [0.5], designs=1,
                          volumetric=True)


class _MeanGridWithFingerprint(_MeanGrid):
    """The mean-grid 'predictor' as a one-member ensemble whose fingerprint is the grid's (mean, std)."""

    def member_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(start_dim=1)
        return torch.stack([flat.mean(dim=1), flat.std(dim=1)], dim=1)[None], self(x)[None]


def test_the_domain_term_keeps_designs_where_the_predictor_has_seen_landscapes() -> None:
    torch.manual_seed(0)
    vae = GridVAE(latent_dim=4).eval()
    predictor, standardizer = _MeanGridWithFingerprint(), Standardizer(mean=0.0, std=1.0)
    with torch.no_grad():
        raw = from_generator_space(vae.decode(torch.randn(600, 4)))
        fingerprints = predictor.member_outputs(raw)[0][0].double().numpy()
    # the "training set": the landscapes of one half of the (mean, std) plane, split by their std
    seen = fingerprints[fingerprints[:, 1] < np.median(fingerprints[:, 1])]
    domain = fit_domain(seen[::2], [f"s{i}" for i in range(len(seen[::2]))], np.zeros(len(seen[::2])), seen[1::2])
    spread = float(np.ptp(fingerprints[:, 0]))
    target, tolerance = float(np.quantile(seen[:, 0], 0.9)), [0.05 * spread]  # reachable inside the domain
    common = {"designs": 2, "particles": 16, "iterations": 25, "seed": 3}
    free = design_landscapes(vae, predictor, standardizer, np.ones((1, 1)), [target], tolerance, **common)
    held = design_landscapes(vae, predictor, standardizer, np.ones((1, 1)), [target], tolerance, domain=domain,
                             **common)

    def score(designs: list) -> np.ndarray:  # type: ignore[type-arg]
        grids = torch.as_tensor(np.stack([d.grid for d in designs]))[:, None]
        return domain.score(predictor.member_outputs(grids)[0][0].double().numpy()) / domain.threshold

    assert np.all(score(held) <= 1.0)  # every constrained design is in domain
    assert score(held).mean() < score(free).mean()
    for d in held:
        assert abs(float(d.grid.mean()) - target) < 0.1 * spread  # and near the target


def test_a_periodic_generator_learns_and_round_trips_its_architecture(tmp_path) -> None:  # type: ignore[no-untyped-def]
    x = to_generator_space(_blobs(96)).astype(np.float32)
    vae = GridVAE(latent_dim=4, channels=(4, 8, 8), periodic=True)
    fit = fit_generator(vae, x[:80], x[80:], epochs=6, batch_size=16, lr=3e-3, beta=0.1, seed=0)
    assert fit.val_mse[-1] < float(np.mean((x[80:] - x[:80].mean(axis=0)) ** 2))
    save_generator(vae, str(tmp_path / "p.pt"), {})
    again, _ = load_generator(str(tmp_path / "p.pt"))
    assert again.config() == {"latent_dim": 4, "channels": [4, 8, 8], "periodic": True}
    z = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(again.decode(z), vae.eval().decode(z))
    # a generator saved before the architecture was configurable (latent size only) still loads as it was built
    old = GridVAE(latent_dim=4)
    torch.save({"state": old.state_dict(), "latent_dim": 4, "info": {}}, tmp_path / "old.pt")
    assert load_generator(str(tmp_path / "old.pt"))[0].config() == {"latent_dim": 4, "channels": [8, 16, 32],
                                                                   "periodic": False}


def test_a_swarm_started_at_known_points_begins_from_them() -> None:
    def bowl(z: np.ndarray) -> np.ndarray:
        return ((z - 2.5) ** 2).sum(axis=1)

    near = np.array([[2.5, 2.5, 2.5], [9.0, 9.0, 9.0]])  # the optimum, and a point outside the box (clipped)
    best, cost, history = particle_swarm(bowl, 3, particles=8, iterations=1, seed=0, start=near)
    assert history[0] == 0.0 and cost == 0.0 and np.allclose(best, 2.5)  # the first evaluation already has it
    unseeded = particle_swarm(bowl, 3, particles=8, iterations=1, seed=0)
    assert unseeded[2][0] > 0.0
    with pytest.raises(ValueError, match="start"):
        particle_swarm(bowl, 3, start=np.zeros((2, 4)))


def test_latent_codes_start_a_search_at_a_structure_and_its_own_density(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    codes = LatentCodes(["a", "b", "c"], rng.standard_normal((3, 4)).astype(np.float32), np.log([0.5, 1.0, 2.0]))
    codes.save(str(tmp_path / "codes.npz"))
    again = LatentCodes.load(str(tmp_path / "codes.npz"))
    assert again.names == ["a", "b", "c"] and np.allclose(again.codes, codes.codes)
    assert again.start(["c", "unknown", "a"]).shape == (2, 4)  # unknown names are skipped, order kept
    head = DensityHead(coef=(0.1, -0.2, 0.0, 0.3), intercept=-0.1, residual_std=0.3, val_r2=0.5)
    start = again.start(["c", "a"], head)
    assert start.shape == (2, 5) and np.allclose(start[:, :4], codes.codes[[2, 0]], atol=1e-6)
    # the swarm's density of that start, ln ρ = head(z) + s·ε, is the structure's own
    assert np.allclose(head.log_density(start[:, :4], start[:, 4]), np.log([2.0, 0.5]), atol=1e-5)


def test_a_design_started_at_known_codes_is_never_worse_than_they_are() -> None:
    torch.manual_seed(0)
    vae = GridVAE(latent_dim=4).eval()
    standardizer = Standardizer(mean=0.0, std=1.0)
    codes = np.random.default_rng(5).standard_normal((40, 4))
    with torch.no_grad():
        means = _MeanGrid()(from_generator_space(vae.decode(torch.as_tensor(codes, dtype=torch.float32)))).numpy()
    target = float(np.median(means))
    nearest = codes[np.argsort(np.abs(means[:, 0] - target))[:4]]
    (d,) = design_landscapes(vae, _MeanGrid(), standardizer, np.ones((1, 1)), [target], [1e-4], designs=1,
                             particles=8, iterations=2, seed=0, start=nearest)
    start_cost = ((float(means[np.argsort(np.abs(means[:, 0] - target))[0], 0]) - target) / 1e-4) ** 2 \
        + PRIOR_WEIGHT * float(np.mean(nearest[0] ** 2))
    assert d.history[0] <= start_cost * (1 + 1e-4) + 1e-6
