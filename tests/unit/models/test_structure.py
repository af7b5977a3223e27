"""CIF parsing, validation and the canonical structure hash (models.structure)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.errors import (
    DegenerateCellError,
    EmptyStructureError,
    InvalidCIFError,
    OverlappingAtomsError,
    StructureError,
    UnknownElementError,
)
from models.structure import Crystal, load_crystal, parse_cif, validate_crystal

DATA = Path(__file__).resolve().parents[2] / "data"
CIFS = DATA / "cifs"
BAD = DATA / "bad"

REAL = sorted(p for p in CIFS.glob("*_clean.cif"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.stem)
def test_real_fixtures_parse(path: Path) -> None:
    crystal = load_crystal(path)
    assert crystal.name == path.stem
    assert crystal.n_atoms > 0
    assert crystal.lattice.shape == (3, 3)
    assert crystal.frac_coords.shape == (crystal.n_atoms, 3)
    assert crystal.volume > 0
    assert all(occ == 1.0 for site in crystal.species for _, occ in site)
    assert len(crystal.sha256) == 64


def test_small_cell_needs_big_supercell() -> None:
    from models.voxels import supercell_scale

    crystal = load_crystal(CIFS / "FIGXAU_clean.cif")
    assert crystal.n_atoms == 13
    assert crystal.widths.max() < 10.0
    assert supercell_scale(crystal, 10.0).tolist() == [4, 4, 4]


def test_load_crystal_accepts_path_str_bytes_and_structure() -> None:
    path = CIFS / "SAYTUJ_clean.cif"
    from_path = load_crystal(path)
    from_str_path = load_crystal(str(path))
    from_bytes = load_crystal(path.read_bytes(), name="SAYTUJ_clean")
    from_text = load_crystal(path.read_text())
    assert from_path.sha256 == from_str_path.sha256 == from_bytes.sha256 == from_text.sha256
    assert from_bytes.name == "SAYTUJ_clean"
    assert load_crystal(from_path) is from_path

    from pymatgen.core import Structure

    structure = Structure(from_path.lattice, [s[0][0] for s in from_path.species], from_path.frac_coords)
    assert load_crystal(structure).sha256 == from_path.sha256


def test_formula_and_elements() -> None:
    crystal = load_crystal(CIFS / "FIGXAU_clean.cif")
    assert crystal.formula == "C3ErH3O6"
    assert crystal.elements == ["C", "Er", "H", "O"]


def test_oxidation_state_labels_map_to_elements() -> None:
    plain = load_crystal(CIFS / "KEGZOL04_clean.cif")
    charged = load_crystal(CIFS / "KEGZOL04_oxidation_states.cif")
    assert charged.elements == plain.elements == ["C", "Cu", "N", "Zn"]
    assert charged.species == plain.species
    assert charged.sha256 == plain.sha256


def test_deuterium_counts_as_hydrogen() -> None:
    plain = load_crystal(CIFS / "FIGXAU_clean.cif")
    heavy = load_crystal(CIFS / "FIGXAU_deuterated.cif")
    assert "D" not in heavy.elements
    assert heavy.species == plain.species
    assert heavy.sha256 == plain.sha256


def test_disordered_site_keeps_each_species_with_its_occupancy() -> None:
    crystal = load_crystal(CIFS / "FIGXAU_disordered.cif")
    assert crystal.n_atoms == 13  # the Er/Dy rows at one position merge into one site
    by_site = {tuple(np.round(xyz, 4)): site for xyz, site in zip(crystal.frac_coords, crystal.species, strict=True)}
    assert by_site[(0.0, 0.0, 0.0)] == (("Dy", 0.5), ("Er", 0.5))
    assert by_site[(0.5, 0.07, 0.07)] == (("H", 0.5),)
    assert crystal.formula == "C3Dy0.5Er0.5H2.5O6"


# --- the canonical hash --------------------------------------------------------------------------


def _toy() -> Crystal:
    lattice = np.array([[7.0, 0.0, 0.0], [1.5, 8.0, 0.0], [-0.7, 0.4, 9.0]])
    frac = np.array([[0.1, 0.2, 0.3], [0.6, 0.1, 0.9], [0.35, 0.75, 0.5]])
    species = ((("Zn", 1.0),), (("O", 1.0),), (("C", 0.5), ("N", 0.5)))
    return Crystal("toy", lattice, frac, species)


def test_hash_ignores_site_order_name_and_lattice_translations() -> None:
    toy = _toy()
    order = [2, 0, 1]
    permuted = Crystal("other-name", toy.lattice, toy.frac_coords[order], tuple(toy.species[i] for i in order))
    shifted = replace(toy, frac_coords=toy.frac_coords + np.array([1.0, -2.0, 3.0]), _hash="")
    assert permuted.sha256 == toy.sha256 == shifted.sha256


def test_hash_changes_with_the_structure() -> None:
    toy = _toy()
    moved = replace(toy, frac_coords=toy.frac_coords + np.array([0.01, 0.0, 0.0]), _hash="")
    swapped = replace(toy, species=((("Cu", 1.0),), *toy.species[1:]), _hash="")
    strained = replace(toy, lattice=toy.lattice * 1.01, _hash="")
    assert len({toy.sha256, moved.sha256, swapped.sha256, strained.sha256}) == 4


# --- refusals ------------------------------------------------------------------------------------

BAD_CASES = [
    ("not_a_cif.png", InvalidCIFError, "binary"),
    ("plain_text.cif", InvalidCIFError, "data_"),
    ("empty.cif", InvalidCIFError, "empty"),
    ("no_atoms.cif", EmptyStructureError, "no atom sites"),
    ("overlapping_atoms.cif", OverlappingAtomsError, "same position"),
    ("flat_cell.cif", DegenerateCellError, "degenerate unit cell"),
    ("coplanar_cell.cif", DegenerateCellError, "degenerate unit cell"),
]


@pytest.mark.parametrize(("filename", "error", "words"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_fixture_raises_its_error(filename: str, error: type[StructureError], words: str) -> None:
    path = BAD / filename
    with pytest.raises(error) as info:
        load_crystal(path)
    message = str(info.value)
    assert words in message
    assert message.startswith(path.stem), "the message names the structure"


def test_unknown_element_parses_then_fails_on_voxels() -> None:
    from models.params import VoxelParams
    from models.voxels import compute_voxels

    crystal = load_crystal(BAD / "unknown_element_Tc.cif")
    assert "Tc" in crystal.elements
    with pytest.raises(UnknownElementError) as info:
        compute_voxels(crystal, VoxelParams(grid_size=5), device="cpu")
    assert info.value.elements == ["Tc"]
    assert "Tc" in str(info.value)


def test_all_structure_errors_are_value_errors() -> None:
    # The service maps StructureError to HTTP 422; callers that only know ValueError still catch them.
    for error in (InvalidCIFError, EmptyStructureError, OverlappingAtomsError, DegenerateCellError):
        assert issubclass(error, StructureError) and issubclass(error, ValueError)


def test_unreadable_path_is_an_invalid_cif() -> None:
    with pytest.raises(InvalidCIFError, match="cannot read"):
        load_crystal(DATA / "does-not-exist.cif")


def test_near_duplicate_sites_overlap() -> None:
    toy = _toy()
    close = np.vstack([toy.frac_coords, toy.frac_coords[0] + [0.002, 0.0, 0.0]])  # 0.014 Å from site 1
    crowded = Crystal("crowded", toy.lattice, close, (*toy.species, (("O", 1.0),)))
    with pytest.raises(OverlappingAtomsError, match=r"crowded: atoms 1 \(Zn\) and 4 \(O\) overlap"):
        validate_crystal(crowded)


def test_overlap_across_the_cell_boundary() -> None:
    lattice = np.eye(3) * 10.0
    frac = np.array([[0.0005, 0.5, 0.5], [0.9995, 0.5, 0.5]])  # 0.01 Å apart through the periodic boundary
    crystal = Crystal("edge", lattice, frac, ((("C", 1.0),), (("C", 1.0),)))
    with pytest.raises(OverlappingAtomsError, match="overlap"):
        validate_crystal(crystal)


def test_close_but_distinct_atoms_are_accepted() -> None:
    # Real labelled CoRE MOF entries hold pairs 0.06-0.3 Å apart; pymoxel and RASPA accept them, so do we.
    lattice = np.eye(3) * 10.0
    frac = np.array([[0.2, 0.2, 0.2], [0.206, 0.2, 0.2]])  # 0.06 Å
    validate_crystal(Crystal("close", lattice, frac, ((("I", 1.0),), (("I", 1.0),))))


def test_disordered_sites_sharing_a_position_are_not_an_overlap() -> None:
    lattice = np.eye(3) * 10.0
    frac = np.array([[0.2, 0.2, 0.2], [0.205, 0.2, 0.2]])
    crystal = Crystal("split", lattice, frac, ((("C", 0.5),), (("N", 0.5),)))
    validate_crystal(crystal)


def test_parse_cif_from_text_with_crlf_line_endings() -> None:
    raw = (CIFS / "FIGXAU_clean.cif").read_bytes()
    assert b"\r\n" in raw
    assert parse_cif(raw, name="x").n_atoms == 13


# --- the fast P1 reader gives pymatgen's Crystal -------------------------------------------------


def _assert_same_crystal(fast: Crystal, slow: Crystal) -> None:
    np.testing.assert_array_equal(fast.lattice, slow.lattice)
    np.testing.assert_array_equal(fast.frac_coords, slow.frac_coords)
    assert fast.species == slow.species
    assert fast.sha256 == slow.sha256


@pytest.mark.parametrize("path", sorted(CIFS.glob("*.cif")), ids=lambda p: p.stem)
def test_fast_reader_equals_pymatgen_on_fixtures(path: Path) -> None:
    from models.structure import _parse_p1_fast

    data = path.read_bytes()
    _assert_same_crystal(parse_cif(data, path.stem), parse_cif(data, path.stem, fast=False))
    # Real CoRE MOF files take the fast path; the hand-made variants need pymatgen.
    taken = _parse_p1_fast(data.decode(), path.stem) is not None
    assert taken == path.stem.endswith("_clean")


def test_fast_reader_equals_pymatgen_on_the_benchmark_sample() -> None:
    import json

    from models.datasets import default_cache_dir

    folder = default_cache_dir() / "coremof-2019-ASR"
    results = Path(__file__).resolve().parents[3] / "bench" / "results" / "voxels.json"
    if not (folder / ".complete").exists() or not results.exists():
        pytest.skip("CoRE MOF 2019 not extracted here, or no benchmark results")
    names = [row["name"] for row in json.loads(results.read_text())["structures"]]
    assert len(names) >= 20
    for name in names:
        data = (folder / f"{name}.cif").read_bytes()
        _assert_same_crystal(parse_cif(data, name), parse_cif(data, name, fast=False))


def test_fast_reader_snaps_thirds_and_wraps_like_pymatgen() -> None:
    text = (CIFS / "SAYTUJ_clean.cif").read_text()
    edited = (text.replace("0.31771  0.97902  0.25108", "0.33334  -0.66668  1.25108")  # Cu1
              .replace("0.48033  0.36916  0.19657", "0.66670  0.36916  0.19657"))  # Cu2
    fast, slow = parse_cif(edited, "x"), parse_cif(edited, "x", fast=False)
    _assert_same_crystal(fast, slow)
    assert fast.frac_coords[0].tolist() == [1 / 3, -0.66668 - np.floor(-0.66668), 1.25108 - 1.0]
    assert fast.frac_coords[1, 0] == 2 / 3


def test_fast_reader_hands_symmetry_to_pymatgen() -> None:
    from models.structure import _parse_p1_fast

    text = (CIFS / "SAYTUJ_clean.cif").read_text().replace("'x, y, z'", "'x, y, z'\n  '-x, -y, -z'")
    assert _parse_p1_fast(text, "x") is None
    with pytest.raises(OverlappingAtomsError):  # its inversion images collide with the P1 atoms it already lists
        parse_cif(text, "x")
