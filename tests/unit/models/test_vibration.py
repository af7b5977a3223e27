"""Vibration augmentation (models.vibration): thermally jittered, reproducible, separately cached copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.structure import load_crystal
from models.vibration import DEFAULT_AMPLITUDE, vibrate, vibrated_copies, vibration_hash, with_vibrated

CIF = Path(__file__).resolve().parents[2] / "data" / "cifs" / "KEGZOL04_clean.cif"


def _cartesian_shift(a, b) -> np.ndarray:  # noqa: ANN001
    d = (b.frac_coords - a.frac_coords + 0.5) % 1.0 - 0.5  # minimum image
    return d @ a.lattice


def test_displacements_have_the_requested_rms_and_keep_the_cell() -> None:
    crystal = load_crystal(CIF)
    copy = vibrate(crystal, 0.2, seed=3)
    shift = _cartesian_shift(crystal, copy)
    assert np.sqrt(np.mean(shift**2)) == pytest.approx(0.2, rel=0.15)
    assert np.abs(shift.mean(axis=0)).max() < 0.1
    np.testing.assert_array_equal(copy.lattice, crystal.lattice)
    assert copy.species == crystal.species and copy.name == crystal.name


def test_copies_are_reproducible_distinct_and_hashed_from_the_content() -> None:
    crystal = load_crystal(CIF)
    a, b = vibrated_copies(crystal, 2)
    again = vibrated_copies(crystal, 2)
    np.testing.assert_array_equal(a.frac_coords, again[0].frac_coords)
    assert not np.allclose(a.frac_coords, b.frac_coords)
    assert a.sha256 == vibration_hash(crystal.sha256, DEFAULT_AMPLITUDE, 0) != b.sha256 != crystal.sha256
    assert vibrate(crystal, 0.0).frac_coords == pytest.approx(np.mod(crystal.frac_coords, 1.0))


def test_amplitude_is_bounded() -> None:
    with pytest.raises(ValueError, match="amplitude"):
        vibrate(load_crystal(CIF), 0.8)


def test_with_vibrated_appends_copies_with_their_labels() -> None:
    x = np.zeros((3, 2, 2, 2), np.float32)
    y = np.array([[1.0], [2.0], [3.0]])
    copies = np.ones((3, 2, 2, 2, 2), np.float32)
    x2, y2 = with_vibrated(x, y, copies)
    assert x2.shape == (9, 2, 2, 2) and y2[:, 0].tolist() == [1, 2, 3, 1, 1, 2, 2, 3, 3]
    assert with_vibrated(x, y, None)[0] is x


def test_load_dataset_voxelizes_each_copy_under_its_own_hash() -> None:
    from models.training_job import load_dataset

    keys: list[str] = []

    def grid_for(crystal) -> np.ndarray:  # noqa: ANN001
        keys.append(crystal.sha256)
        return np.full((5, 5, 5), float(len(keys)), np.float32)

    other = CIF.parent / "SAYTUJ_clean.cif"
    data = load_dataset([("KEGZOL04_clean", CIF.read_bytes()), ("SAYTUJ_clean", other.read_bytes())],
                        b"name,ch4\nKEGZOL04_clean,1.8\nSAYTUJ_clean,0.6\n", ["ch4"],
                        grid_for=grid_for, vibration_copies=3)
    assert data.vibrated is not None and data.vibrated.shape == (2, 3, 5, 5, 5)
    assert len(set(keys)) == 8  # each structure and its 3 copies, each cached under its own key
