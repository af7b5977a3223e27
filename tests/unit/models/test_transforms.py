"""Unit tests for models.transforms: standardizer, symmetry and translation augmentation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.params import VoxelParams
from models.structure import load_crystal
from models.transforms import SYMMETRY_KINDS, Standardizer, apply_symmetry, random_symmetry, random_translation
from models.voxels import energy_grid, supercell_scale

CIFS = Path(__file__).resolve().parents[2] / "data" / "cifs"


def _grids(batch: int = 8, n: int = 5) -> torch.Tensor:
    return torch.rand(batch, 1, n, n, n, generator=torch.Generator().manual_seed(1))


def test_standardizer_fit_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    grids = rng.gamma(2.0, 3.0, size=(600, 4, 4, 4)).astype(np.float32)  # > one fit chunk
    std = Standardizer.fit(grids)
    assert std.mean == pytest.approx(grids.astype(np.float64).mean(), rel=1e-12)
    assert std.std == pytest.approx(grids.astype(np.float64).std(), rel=1e-10)
    out = std(grids)
    assert out.dtype == np.float32 and out.shape == grids.shape
    assert float(out.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(out.std()) == pytest.approx(1.0, abs=1e-5)


def test_standardizer_returns_copy_and_same_type() -> None:
    grids = _grids()
    before = grids.clone()
    std = Standardizer.fit(grids)
    out = std(grids)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.equal(grids, before)
    assert torch.allclose(out, (before - std.mean) / std.std)


def test_standardizer_dict_round_trip_and_validation() -> None:
    std = Standardizer(mean=1.5, std=2.0)
    assert std.to_dict() == {"mean": 1.5, "std": 2.0}
    assert Standardizer.from_dict(std.to_dict()) == std
    assert Standardizer.fit(np.ones((3, 2, 2, 2))).std == 1.0
    with pytest.raises(ValueError, match="std"):
        Standardizer(mean=0.0, std=0.0)
    with pytest.raises(ValueError, match="non-finite"):
        Standardizer.fit(np.array([[0.0, np.inf]]))


@pytest.mark.parametrize("kind", SYMMETRY_KINDS)
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("direction", [1, -1])
def test_each_symmetry_permutes_voxels(kind: str, axis: int, direction: int) -> None:
    sample = _grids(1)[0]
    before = sample.clone()
    out = apply_symmetry(sample, kind, axis, direction)  # type: ignore[arg-type]
    assert out.shape == sample.shape
    assert torch.equal(torch.sort(out.flatten()).values, torch.sort(sample.flatten()).values)
    assert torch.equal(sample, before)
    assert (kind == "identity") == torch.equal(out, sample)


def test_symmetries_match_definitions() -> None:
    s = _grids(1)[0]
    assert torch.equal(apply_symmetry(s, "rotation", 2, 1), torch.rot90(s, 1, dims=(1, 2)))
    assert torch.equal(apply_symmetry(s, "rotation", 0, -1), torch.rot90(s, -1, dims=(2, 3)))
    assert torch.equal(apply_symmetry(s, "flip", 1), s.flip(2))
    assert torch.equal(apply_symmetry(s, "transpose", 1), s.transpose(1, 3))
    with pytest.raises(ValueError, match="unknown symmetry"):
        apply_symmetry(s, "shear")  # type: ignore[arg-type]


def test_random_symmetry_permutes_each_sample_without_in_place_changes() -> None:
    batch = _grids(64)
    before = batch.clone()
    out = random_symmetry(batch, torch.Generator().manual_seed(3))
    assert out.shape == batch.shape
    assert torch.equal(batch, before)
    assert torch.equal(out.flatten(1).sort(dim=1).values, batch.flatten(1).sort(dim=1).values)
    changed = sum(not torch.equal(out[i], batch[i]) for i in range(64))
    assert 32 <= changed < 64  # about 3/4 of samples change, identity keeps the rest


def test_random_symmetry_is_deterministic_for_a_seed() -> None:
    batch = _grids(16)
    a = random_symmetry(batch, torch.Generator().manual_seed(7))
    b = random_symmetry(batch, torch.Generator().manual_seed(7))
    c = random_symmetry(batch, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("shape", [(2, 5, 5, 5), (2, 2, 5, 5, 5), (2, 1, 5, 5, 4)])
def test_random_symmetry_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        random_symmetry(torch.zeros(shape), torch.Generator().manual_seed(0))


def test_standardizer_clips_before_standardizing() -> None:
    grids = np.ones((2, 5, 5, 5), dtype=np.float32)
    grids[0, 0, 0, 0] = 1e6  # one strongly binding pocket
    clipped = Standardizer.fit(grids, clip=10.0)
    unclipped = Standardizer.fit(grids)
    assert clipped.std < unclipped.std / 100
    out = clipped(grids)
    assert out.max() == pytest.approx((10.0 - clipped.mean) / clipped.std, rel=1e-6)
    assert torch.allclose(clipped(torch.from_numpy(grids)), torch.from_numpy(out), rtol=1e-5)
    assert Standardizer.from_dict(clipped.to_dict()) == clipped
    assert "clip" not in unclipped.to_dict()


def test_random_translation_rolls_each_sample_without_in_place_changes() -> None:
    batch = _grids(32)
    before = batch.clone()
    out = random_translation(batch, torch.Generator().manual_seed(3))
    assert torch.equal(batch, before)
    n = batch.shape[-1]
    for i in range(32):  # each sample is its original rolled by some shift in [0, n)³
        assert any(torch.equal(out[i], torch.roll(batch[i], shifts=k, dims=(1, 2, 3)))
                   for k in np.ndindex(n, n, n))
    assert sum(not torch.equal(out[i], batch[i]) for i in range(32)) >= 30
    assert torch.equal(out, random_translation(batch, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="cubic one-channel"):
        random_translation(torch.zeros(2, 1, 5, 5, 4), torch.Generator())


def test_translation_is_the_grid_of_the_translated_crystal() -> None:
    """Moving every atom by k/n of the supercell rolls the energy grid by k voxels: an exact symmetry."""
    params = VoxelParams(grid_size=10)
    crystal = load_crystal(CIFS / "SAYTUJ_clean.cif")
    shift = np.array([3, 0, 7])
    moved = replace(crystal, frac_coords=crystal.frac_coords
                    + shift * supercell_scale(crystal, params.cutoff) / params.grid_size)
    grid = torch.from_numpy(energy_grid(crystal, params))
    expected = torch.roll(grid, shifts=tuple(shift.tolist()), dims=(0, 1, 2))
    assert torch.allclose(torch.from_numpy(energy_grid(moved, params)), expected, rtol=1e-9, atol=1e-6)
