"""Energy voxels (models.voxels): parity with the reference package, engines, options and physics."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from models.errors import StructureError, UnknownElementError
from models.params import VoxelParams, uff_table
from models.structure import Crystal, load_crystal
from models.voxels import boltzmann, compute_voxels, compute_voxels_batch, energy_grid, supercell_scale

DATA = Path(__file__).resolve().parents[2] / "data"
CIFS = DATA / "cifs"
BAD = DATA / "bad"

#: Parity set: skewed triclinic, small cell with a 4×4×4 supercell, many hydrogens, an ordinary one.
PARITY = ["c5cc04223b_c5cc04223b2_clean", "FIGXAU_clean", "BUKRUW01_clean", "SAYTUJ_clean"]


def _reference_package(optional_module) -> object:  # type: ignore[no-untyped-def]
    """The reference package (pymoxel, dev extra): the parity tests skip without it locally and FAIL in CI."""
    return optional_module("moxel.utils", "pymoxel (the reference voxelizer the parity tests compare with)")


@cache
def _moxel(moxel_utils: object, name: str, grid_size: int = 25, cubic_box: float | None = None) -> np.ndarray:
    """Raw energies (K) from the reference package (slow: ~3 s for 25³ with one process)."""
    return moxel_utils.voxels_from_file(  # type: ignore[attr-defined]
        str(CIFS / f"{name}.cif"), grid_size=grid_size, cubic_box=cubic_box, n_jobs=1)


def _reference_boltzmann(raw: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(-raw.astype(np.float64) / 298.0).astype(np.float32)


def _assert_same_grid(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape and ours.dtype == np.float32
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(reference))
    np.testing.assert_array_equal(ours == 0, reference == 0)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


# --- parity with pymoxel -------------------------------------------------------------------------


@pytest.mark.parametrize("name", PARITY)
def test_matches_pymoxel(name: str, optional_module) -> None:  # type: ignore[no-untyped-def]
    reference = _moxel(_reference_package(optional_module), name)
    crystal = load_crystal(CIFS / f"{name}.cif")
    ours = compute_voxels(crystal, VoxelParams(), device="cpu")
    _assert_same_grid(ours, _reference_boltzmann(reference))
    assert (ours == 0).any(), "every framework grid hits atoms"


@pytest.mark.parametrize(("name", "box", "n"), [("c5cc04223b_c5cc04223b2_clean", 30.0, 14),
                                                ("FIGXAU_clean", 24.0, 12)])
def test_cubic_box_matches_pymoxel(name: str, box: float, n: int, optional_module) -> None:  # type: ignore[no-untyped-def]
    reference = _moxel(_reference_package(optional_module), name, n, box)
    crystal = load_crystal(CIFS / f"{name}.cif")
    ours = compute_voxels(crystal, VoxelParams(grid_size=n, cubic_box=box), device="cpu")
    _assert_same_grid(ours, _reference_boltzmann(reference))


def test_raw_energy_option_matches_pymoxel(optional_module) -> None:  # type: ignore[no-untyped-def]
    name = "FIGXAU_clean"
    reference = _moxel(_reference_package(optional_module), name)
    ours = compute_voxels(load_crystal(CIFS / f"{name}.cif"), VoxelParams(boltzmann=False), device="cpu")
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(reference))
    finite = np.isfinite(reference)
    np.testing.assert_allclose(ours[finite], reference[finite], rtol=1e-5, atol=1e-3)


# --- engines and options -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["c5cc04223b_c5cc04223b2_clean", "FIGXAU_clean", "FIGXAU_disordered"])
def test_torch_engine_equals_numba_engine(name: str) -> None:
    crystal = load_crystal(CIFS / f"{name}.cif")
    params = VoxelParams(grid_size=16)
    numba_grid = energy_grid(crystal, params, device="cpu", engine="auto")
    torch_grid = energy_grid(crystal, params, device="cpu", engine="torch")
    single_thread = energy_grid(crystal, params, device="cpu", threads=1)
    assert numba_grid.dtype == torch_grid.dtype == np.float64
    np.testing.assert_array_equal(np.isposinf(numba_grid), np.isposinf(torch_grid))
    np.testing.assert_allclose(numba_grid, torch_grid, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(numba_grid, single_thread, rtol=1e-12, atol=1e-9)


def test_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="engine"):
        energy_grid(_argon(8.0), VoxelParams(grid_size=5), device="cpu", engine="fortran")
    with pytest.raises(ValueError, match="engine"):
        energy_grid(_argon(8.0), VoxelParams(grid_size=5, cubic_box=10.0), device="cpu", engine="fortran")


def test_boltzmann_false_returns_raw_energies() -> None:
    crystal = load_crystal(CIFS / "SAYTUJ_clean.cif")
    raw = compute_voxels(crystal, VoxelParams(grid_size=8, boltzmann=False), device="cpu")
    factors = compute_voxels(crystal, VoxelParams(grid_size=8), device="cpu")
    expected = energy_grid(crystal, VoxelParams(grid_size=8), device="cpu")
    np.testing.assert_array_equal(raw, expected.astype(np.float32))
    np.testing.assert_array_equal(factors, boltzmann(expected, 298.0))
    assert (raw < 0).any() and np.isposinf(raw).any()  # attractive pockets and atoms


def test_temperature_and_probe_change_the_grid() -> None:
    crystal = load_crystal(CIFS / "SAYTUJ_clean.cif")
    base = compute_voxels(crystal, VoxelParams(grid_size=6), device="cpu")
    for change in ({"temperature": 77.0}, {"probe_epsilon": 148.0}, {"probe_sigma": 3.73}, {"cutoff": 12.0}):
        assert not np.allclose(compute_voxels(crystal, VoxelParams(grid_size=6, **change), device="cpu"), base)


def test_batch_stacks_grids() -> None:
    crystals = [load_crystal(CIFS / "SAYTUJ_clean.cif"), _argon(9.0)]
    params = VoxelParams(grid_size=6)
    batch = compute_voxels_batch(crystals, params, device="cpu")
    assert batch.shape == (2, 6, 6, 6) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], compute_voxels(crystals[1], params, device="cpu"))
    assert compute_voxels_batch([], params).shape == (0, 6, 6, 6)


# --- physics on tiny synthetic crystals ----------------------------------------------------------


def _argon(side: float, frac: tuple[float, float, float] = (0.0, 0.0, 0.0), occupancy: float = 1.0) -> Crystal:
    return Crystal("Ar", np.eye(3) * side, np.array([frac]), ((("Ar", occupancy),),))


def _skewed() -> Crystal:
    lattice = np.array([[6.0, 0.0, 0.0], [2.5, 5.5, 0.0], [-1.2, 1.7, 7.0]])
    frac = np.array([[0.1, 0.2, 0.3], [0.6, 0.15, 0.85], [0.4, 0.7, 0.55]])
    species = ((("Zn", 1.0),), (("O", 1.0),), (("C", 1.0),))
    return Crystal("skewed", lattice, frac, species)


def _brute_force(crystal: Crystal, params: VoxelParams) -> np.ndarray:
    """Direct periodic sum over explicit lattice images (independent of the minimum-image method)."""
    table = uff_table()
    scale = supercell_scale(crystal, params.cutoff)
    supercell = crystal.lattice * scale[:, None]
    n = params.grid_size
    axis = np.arange(n) / n
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) @ supercell
    reach = np.ceil(params.cutoff / crystal.widths).astype(int) + 1
    shifts = np.array(list(itertools.product(*(range(-r, r + s + 1) for r, s in zip(reach, scale, strict=True)))))
    energy = np.zeros(len(points))
    for xyz, site in zip(crystal.frac_coords, crystal.species, strict=True):
        images = (xyz + shifts) @ crystal.lattice
        r = np.linalg.norm(points[:, None, :] - images[None, :, :], axis=-1)
        for element, occupancy in site:
            eps, sig = table[element]
            x = 0.5 * (sig + params.probe_sigma) / r
            e = occupancy * 4 * math.sqrt(eps * params.probe_epsilon) * (x ** 12 - x ** 6)
            energy += np.where(r <= params.cutoff, e, 0.0).sum(axis=1)
            energy[(r < 1e-3).any(axis=1)] = np.inf
    return energy.reshape(n, n, n)


@pytest.mark.parametrize("n", [5, 6, 7, 8])
def test_matches_a_brute_force_periodic_sum(n: int) -> None:
    crystal = _skewed()
    params = VoxelParams(grid_size=n, cutoff=8.0)
    expected = _brute_force(crystal, params)
    ours = energy_grid(crystal, params, device="cpu")
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(expected))
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-8)


def test_infinite_energy_on_an_atom() -> None:
    # An 8 Å cube needs a 3×3×3 supercell: grid spacing 4 Å, so every other point sits on an atom image.
    grid = energy_grid(_argon(8.0), VoxelParams(grid_size=6), device="cpu")
    on_atom = np.zeros((6, 6, 6), dtype=bool)
    on_atom[::2, ::2, ::2] = True
    np.testing.assert_array_equal(np.isposinf(grid), on_atom)
    assert compute_voxels(_argon(8.0), VoxelParams(grid_size=6), device="cpu")[0, 0, 0] == 0.0


def test_zero_energy_beyond_the_cutoff() -> None:
    # One atom at the origin of a 40 Å cube: no supercell, and the centre is 34.6 Å from every image.
    crystal = _argon(40.0)
    params = VoxelParams(grid_size=8)
    assert supercell_scale(crystal, params.cutoff).tolist() == [1, 1, 1]
    energy = energy_grid(crystal, params, device="cpu")
    assert energy[4, 4, 4] == 0.0
    assert compute_voxels(crystal, params, device="cpu")[4, 4, 4] == 1.0
    assert energy[1, 0, 0] != 0.0  # 5 Å from the atom: inside the cut-off
    r = 5.0 * np.array([[i, j, k] for i in range(8) for j in range(8) for k in range(8)], dtype=float)
    r = np.minimum(r, 40.0 - r)
    beyond = (np.linalg.norm(r, axis=1) > params.cutoff).reshape(8, 8, 8)
    assert (energy[beyond] == 0.0).all() and (energy[~beyond] != 0.0).all()


def test_translation_by_a_lattice_vector_changes_nothing() -> None:
    crystal = _skewed()
    params = VoxelParams(grid_size=7)
    moved = replace(crystal, frac_coords=crystal.frac_coords + np.array([[1, 0, -2], [0, 3, 0], [-1, -1, 1]]),
                    _hash="")
    np.testing.assert_allclose(energy_grid(moved, params, device="cpu"), energy_grid(crystal, params, device="cpu"),
                               rtol=1e-12, atol=1e-10)
    assert moved.sha256 == crystal.sha256


def test_site_order_changes_nothing() -> None:
    crystal = _skewed()
    order = [2, 0, 1]
    permuted = Crystal("p", crystal.lattice, crystal.frac_coords[order], tuple(crystal.species[i] for i in order))
    params = VoxelParams(grid_size=7)
    np.testing.assert_allclose(energy_grid(permuted, params, device="cpu"),
                               energy_grid(crystal, params, device="cpu"), rtol=1e-12, atol=1e-10)
    assert permuted.sha256 == crystal.sha256


def test_partial_occupancy_scales_the_site_energy() -> None:
    params = VoxelParams(grid_size=6)
    full = energy_grid(_argon(9.0, (0.1, 0.2, 0.3)), params, device="cpu")
    third = energy_grid(_argon(9.0, (0.1, 0.2, 0.3), occupancy=1 / 3), params, device="cpu")
    finite = np.isfinite(full)
    np.testing.assert_allclose(third[finite], full[finite] / 3, rtol=1e-12)
    np.testing.assert_array_equal(np.isposinf(third), ~finite)


def test_disordered_fixture_is_the_occupancy_weighted_mixture() -> None:
    # Er 0.5 + Dy 0.5 on one site and H3 at 0.5 = ½·(Er site, H3 present) + ½·(Dy site, no H3).
    disordered = load_crystal(CIFS / "FIGXAU_disordered.cif")
    clean = load_crystal(CIFS / "FIGXAU_clean.cif")
    metal = next(i for i, s in enumerate(clean.species) if s[0][0] == "Er")
    h3 = int(np.argmin(np.linalg.norm(clean.frac_coords - [0.5, 0.07, 0.07], axis=1)))
    species = list(clean.species)
    species[metal] = (("Dy", 1.0),)
    keep = [i for i in range(clean.n_atoms) if i != h3]
    dy_no_h3 = Crystal("dy", clean.lattice, clean.frac_coords[keep], tuple(species[i] for i in keep))
    params = VoxelParams(grid_size=8)
    mixed = energy_grid(disordered, params, device="cpu")
    expected = 0.5 * energy_grid(clean, params, device="cpu") + 0.5 * energy_grid(dy_no_h3, params, device="cpu")
    np.testing.assert_array_equal(np.isposinf(mixed), np.isposinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(mixed[finite], expected[finite], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("variant", "original"), [("KEGZOL04_oxidation_states", "KEGZOL04_clean"),
                                                   ("FIGXAU_deuterated", "FIGXAU_clean")])
def test_oxidation_states_and_deuterium_grid_like_the_element(variant: str, original: str) -> None:
    params = VoxelParams(grid_size=8)
    np.testing.assert_array_equal(compute_voxels(load_crystal(CIFS / f"{variant}.cif"), params, device="cpu"),
                                  compute_voxels(load_crystal(CIFS / f"{original}.cif"), params, device="cpu"))


def test_huge_sigma_gives_infinite_repulsion_everywhere_near_atoms() -> None:
    grid = compute_voxels(_argon(8.0), VoxelParams(grid_size=5, probe_sigma=40.0), device="cpu")
    assert (grid == 0.0).all() or (grid < 1e-30).all()


# --- refusals: never a grid of zeros -------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(BAD.iterdir()), ids=lambda p: p.name)
def test_bad_fixtures_never_give_a_grid(path: Path) -> None:
    with pytest.raises(StructureError) as info:
        compute_voxels(load_crystal(path), VoxelParams(grid_size=5), device="cpu")
    assert str(info.value).startswith(f"{path.stem}: ")


def test_unknown_element_error_names_the_element() -> None:
    crystal = replace(_skewed(), species=((("Os", 1.0),), (("O", 1.0),), (("Tc", 0.5), ("C", 0.5))), _hash="")
    with pytest.raises(UnknownElementError) as info:
        compute_voxels(crystal, VoxelParams(grid_size=5), device="cpu")
    assert info.value.elements == ["Os", "Tc"]
    assert "Os" in str(info.value) and "Tc" in str(info.value)


# --- parameters ----------------------------------------------------------------------------------


def test_params_hash_changes_with_every_parameter() -> None:
    base = VoxelParams()
    changes = {"grid_size": 32, "cutoff": 12.0, "probe_epsilon": 148.0, "probe_sigma": 3.73,
               "temperature": 77.0, "boltzmann": False, "cubic_box": 30.0}
    assert set(changes) | {"force_field"} == set(VoxelParams.model_fields)
    hashes = {base.params_hash()} | {VoxelParams(**{k: v}).params_hash() for k, v in changes.items()}
    assert len(hashes) == len(changes) + 1
    assert VoxelParams().params_hash() == base.params_hash()
    assert len(base.params_hash()) == 16
    with pytest.raises(ValueError, match="force field"):
        VoxelParams(force_field="DREIDING")


def test_params_are_validated() -> None:
    for bad in ({"grid_size": 1}, {"cutoff": 0.0}, {"temperature": -1.0}, {"cubic_box": 0.0}, {"nonsense": 1}):
        with pytest.raises(ValueError):
            VoxelParams(**bad)


def test_warm_up_compiles_the_kernel() -> None:
    from models._lj_kernel import scatter_lj
    from models.voxels import warm_up

    warm_up()
    assert scatter_lj.signatures, "the numba kernel has no compiled signature after warm_up()"
