"""Unit tests for models.units: mol/kg ↔ cm³(STP)/cm³ and the crystal density, against hand-computed crystals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.structure import Crystal, parse_cif
from models.units import (
    MOLAR_VOLUME_STP_CM3,
    atomic_mass_g_mol,
    cell_mass_g_mol,
    cm3_stp_per_cm3_to_mol_per_kg,
    convert_uptake,
    crystal_density_g_cm3,
    mol_per_kg_to_cm3_stp_per_cm3,
)

# Standard atomic weights (IUPAC, as in pymatgen's table), g/mol.
M_H, M_C, M_CU = 1.00794, 12.0107, 63.546
N_A = 6.02214076e23  # 1/mol, exact

# Copper, fcc, a = 3.615 Å (room temperature), conventional cell with 4 atoms, written as a P1 CIF.
CU_A = 3.615
COPPER_CIF = f"""\
data_copper
_cell_length_a {CU_A}
_cell_length_b {CU_A}
_cell_length_c {CU_A}
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_symmetry_equiv_pos_as_xyz
x,y,z
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Cu1 Cu 0.0 0.0 0.0
Cu2 Cu 0.5 0.5 0.0
Cu3 Cu 0.5 0.0 0.5
Cu4 Cu 0.0 0.5 0.5
"""


def _cube(a: float, sites: list[tuple[tuple[str, float], ...]]) -> Crystal:
    """A cubic cell of side a Å with the given sites spread along the body diagonal."""
    n = len(sites)
    frac = np.array([[i / (n + 1)] * 3 for i in range(n)], dtype=np.float64)
    return Crystal(name="cube", lattice=np.eye(3) * a, frac_coords=frac, species=tuple(sites))


# --- constants --------------------------------------------------------------------------------------------


def test_molar_volume_is_r_t0_over_p0() -> None:
    # CODATA 2018 lists the molar volume of an ideal gas at 273.15 K and 101.325 kPa as 22.413 969 54 L/mol.
    assert MOLAR_VOLUME_STP_CM3 == pytest.approx(22413.96954, abs=1e-5)
    # and it is not the rounded 22.4 L/mol: using that would be off by 0.06 %
    assert abs(MOLAR_VOLUME_STP_CM3 - 22400.0) > 13.0


# --- conversion -------------------------------------------------------------------------------------------


def test_conversion_by_hand() -> None:
    # 2 mol/kg in a 0.5 g/cm³ crystal: 1 cm³ of crystal weighs 0.5 g = 5e-4 kg and holds 1e-3 mol of CH4,
    # which at STP takes 1e-3 mol × 22 413.97 cm³/mol = 22.41397 cm³.
    assert mol_per_kg_to_cm3_stp_per_cm3(2.0, 0.5) == pytest.approx(22.41396954, rel=1e-9)
    assert isinstance(mol_per_kg_to_cm3_stp_per_cm3(2.0, 0.5), float)
    assert mol_per_kg_to_cm3_stp_per_cm3(0.0, 1.3) == 0.0


def test_conversion_is_linear_in_uptake_and_density_and_inverts() -> None:
    rng = np.random.default_rng(0)
    uptake, density = rng.uniform(0, 20, size=50), rng.uniform(0.1, 3.0, size=50)
    volumetric = mol_per_kg_to_cm3_stp_per_cm3(uptake, density)
    assert volumetric.shape == (50,)
    np.testing.assert_allclose(volumetric, uptake * density * MOLAR_VOLUME_STP_CM3 / 1000.0, rtol=1e-12)
    np.testing.assert_allclose(mol_per_kg_to_cm3_stp_per_cm3(2 * uptake, density), 2 * volumetric, rtol=1e-12)
    np.testing.assert_allclose(cm3_stp_per_cm3_to_mol_per_kg(volumetric, density), uptake, rtol=1e-12)
    # one density broadcast over a whole isotherm (4 pressures)
    curve = np.array([0.1, 0.6, 2.8, 3.5])
    np.testing.assert_allclose(mol_per_kg_to_cm3_stp_per_cm3(curve, 0.8), curve * 0.8 * 22.41396954, rtol=1e-9)


@pytest.mark.parametrize("density", [0.0, -1.0, math.nan, math.inf])
def test_conversion_refuses_a_bad_density(density: float) -> None:
    with pytest.raises(ValueError, match="density"):
        mol_per_kg_to_cm3_stp_per_cm3(1.0, density)


def test_convert_uptake_by_unit_name() -> None:
    assert convert_uptake(1.7, "mol/kg") == 1.7
    assert convert_uptake(1.0, "cm3(STP)/cm3", density_g_cm3=1.0) == pytest.approx(22.41396954)
    with pytest.raises(ValueError, match="needs the crystal density"):
        convert_uptake(1.0, "cm3(STP)/cm3")
    with pytest.raises(ValueError, match="unknown uptake unit"):
        convert_uptake(1.0, "g/g")


# --- density of hand-computed crystals --------------------------------------------------------------------


def test_density_of_one_methane_in_a_10_angstrom_cube() -> None:
    # Cell mass: C + 4 H = 12.0107 + 4 × 1.00794 = 16.04246 g/mol; volume 10³ Å³ = 1e-21 cm³.
    # Density = 16.04246 / 6.02214076e23 / 1e-21 = 16.04246 / 602.214076 = 0.0266391… g/cm³.
    crystal = _cube(10.0, [(("C", 1.0),)] + [(("H", 1.0),)] * 4)
    assert cell_mass_g_mol(crystal) == pytest.approx(16.04246, abs=1e-9)
    assert crystal_density_g_cm3(crystal) == pytest.approx(16.04246 / 602.214076, rel=1e-12)
    assert crystal_density_g_cm3(crystal) == pytest.approx(0.0266391, abs=1e-7)


def test_partial_occupancy_counts_by_weight() -> None:
    # A 5 Å cube with one Cu site half occupied and one C site: mass 0.5 × 63.546 + 12.0107 = 43.7837 g/mol,
    # volume 125 Å³ = 1.25e-22 cm³, density 43.7837 / (6.02214076e23 × 1.25e-22) = 0.581636… g/cm³.
    crystal = _cube(5.0, [(("Cu", 0.5),), (("C", 1.0),)])
    assert cell_mass_g_mol(crystal) == pytest.approx(0.5 * M_CU + M_C, abs=1e-9)
    assert crystal_density_g_cm3(crystal) == pytest.approx((0.5 * M_CU + M_C) / (N_A * 125e-24), rel=1e-12)
    assert crystal_density_g_cm3(crystal) == pytest.approx(0.581636, abs=1e-6)


def test_density_of_copper_from_its_cif() -> None:
    # 4 Cu × 63.546 = 254.184 g/mol in (3.615 Å)³ = 47.2416… Å³: 254.184 / (6.02214076e23 × 47.2416e-24)
    # = 8.9346… g/cm³; handbook copper is 8.96 g/cm³ (the 3.615 Å lattice constant is rounded).
    crystal = parse_cif(COPPER_CIF, name="copper")
    assert crystal.n_atoms == 4
    expected = 4 * M_CU / (N_A * CU_A**3 * 1e-24)
    assert crystal_density_g_cm3(crystal) == pytest.approx(expected, rel=1e-12)
    assert crystal_density_g_cm3(crystal) == pytest.approx(8.96, rel=0.005)
    # 1 mol/kg of CH4 in copper would be 8.9346 × 22.41397 = 200.26 cm³(STP)/cm³
    assert mol_per_kg_to_cm3_stp_per_cm3(1.0, crystal_density_g_cm3(crystal)) == pytest.approx(
        expected * 22.41396954, rel=1e-9
    )


def test_density_of_a_real_mof_matches_pymatgen(cif_dir) -> None:  # type: ignore[no-untyped-def]
    from pymatgen.io.cif import CifParser

    path = cif_dir / "KEGZOL04_clean.cif"
    ours = crystal_density_g_cm3(parse_cif(path.read_bytes(), name=path.stem))
    theirs = CifParser(str(path)).parse_structures(primitive=False)[0].density
    assert ours == pytest.approx(float(theirs), rel=1e-6)
    assert 0.1 < ours < 3.0  # a MOF


def test_density_needs_atoms() -> None:
    empty = Crystal(name="empty", lattice=np.eye(3) * 5.0, frac_coords=np.zeros((0, 3)), species=())
    with pytest.raises(ValueError, match="density needs atoms"):
        crystal_density_g_cm3(empty)


def test_atomic_mass_lookup() -> None:
    assert atomic_mass_g_mol("H") == pytest.approx(M_H)
    with pytest.raises(ValueError, match="not an element"):
        atomic_mass_g_mol("Qq")
