"""Unit tests for models.gcmc: the RASPA2 input of DESIGN.md §6, the unit-cell rule, output parsing, and
(``slow``, needs ``pip install .[gcmc]``) short real RASPA2 simulations."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from models.datasets import CH4_LABELS
from models.gcmc import (
    LABEL_COLUMNS,
    GcmcResult,
    RaspaOutputError,
    parse_loading,
    raspa_available,
    raspa_input,
    simulate_ch4,
    unit_cells_for,
)
from models.structure import parse_cif

DATA = Path(__file__).resolve().parents[2] / "data"
EXCERPT = DATA / "raspa_output_excerpt.txt"
REFERENCE_CSV = CH4_LABELS

# Real output (SAYTUJ_clean, 700 + 300 cycles, 4x3x2 cells), "Number of molecules" block; reference 0.611 ± 0.054.
EXCERPT_MOL_KG, EXCERPT_MOL_KG_ERR = 0.6293888121, 0.0718261537
EXCERPT_PER_UC, EXCERPT_PER_UC_ERR = 0.5115476190, 0.0583780601

needs_raspa = pytest.mark.skipif(
    not raspa_available(), reason="RASPA2 is not installed (optional dependency: pip install '.[gcmc]')"
)

# DESIGN.md §6, verbatim, with UnitCells 2 2 3.
DESIGN_SCRIPT = """\
SimulationType MonteCarlo
NumberOfCycles 700
NumberOfInitializationCycles 300
PrintEvery 100000
Forcefield GenericMOFs
CutOffVDW 12.0
ChargeMethod None
UseChargesFromCIFFile no
Framework 0
FrameworkName streamed
InputFileType cif
UnitCells 2 2 3
HeliumVoidFraction 1.0
ExternalTemperature 298.0
ExternalPressure 580000.0

Component 0 MoleculeName methane
            MoleculeDefinition TraPPE
            TranslationProbability 0.5
            ReinsertionProbability 0.5
            SwapProbability 1.0
            CreateNumberOfMolecules 0
"""

SMALL_CIF = """\
data_cubic
_cell_length_a 10.0
_cell_length_b 10.0
_cell_length_c 10.0
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
Zn1 Zn 0.0 0.0 0.0
O1 O 0.5 0.5 0.5
"""


def _small_coremof_cif() -> Path:
    """SAYTUJ_clean (600-atom supercell, ~2 s for the full protocol): the test copy, else the core-mof archive."""
    local = DATA / "cifs" / "SAYTUJ_clean.cif"
    if local.exists():
        return local
    from models.datasets import coremof_cif

    return coremof_cif("SAYTUJ_clean")


# --- input script -------------------------------------------------------------------------------------------


def test_input_script_matches_design_line_by_line() -> None:
    script = raspa_input((2, 2, 3))
    assert script.splitlines() == DESIGN_SCRIPT.splitlines()
    assert script == DESIGN_SCRIPT


def test_input_script_parameters() -> None:
    lines = raspa_input([1, 4, 2], cycles=30, init_cycles=20, temperature=273.0, pressure_pa=1e5, cutoff=14.0)
    lines_list = lines.splitlines()
    assert "NumberOfCycles 30" in lines_list
    assert "NumberOfInitializationCycles 20" in lines_list
    assert "UnitCells 1 4 2" in lines_list
    assert "ExternalTemperature 273.0" in lines_list
    assert "ExternalPressure 100000.0" in lines_list
    assert "CutOffVDW 14.0" in lines_list
    assert len(lines_list) == len(DESIGN_SCRIPT.splitlines())


@pytest.mark.parametrize("cells", [(0, 1, 1), (1, 1), (1, -2, 1)])
def test_input_script_rejects_bad_unit_cells(cells: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="unit_cells"):
        raspa_input(cells)


# --- unit-cell rule -----------------------------------------------------------------------------------------


def test_unit_cells_orthorhombic() -> None:
    assert unit_cells_for(np.diag([10.0, 24.0, 30.0])) == (3, 1, 1)
    assert unit_cells_for(np.diag([12.0, 11.99, 7.9])) == (2, 3, 4)  # exactly 2 × 12 Å needs no extra cell
    assert unit_cells_for(np.diag([10.0, 10.0, 10.0]), cutoff=5.0) == (1, 1, 1)


def test_unit_cells_use_perpendicular_widths_not_lengths() -> None:
    # Hexagonal a = b = 13 Å, c = 30 Å: the width across a is 13·sin 120° = 11.26 Å < 12 Å, so 3 cells, not 2.
    a, c = 13.0, 30.0
    lattice = np.array([[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]])
    assert unit_cells_for(lattice) == (3, 3, 1)


def test_unit_cells_from_crystal_and_every_width_covers_twice_the_cutoff() -> None:
    crystal = parse_cif(_small_coremof_cif().read_bytes(), name="SAYTUJ_clean")
    cells = unit_cells_for(crystal)
    assert cells == unit_cells_for(crystal.lattice)
    widths = crystal.widths
    for n, w in zip(cells, widths, strict=True):
        assert n * w >= 24.0 and (n - 1) * w < 24.0
    # reference table: SAYTUJ_clean simulated with 600 framework atoms
    assert crystal.n_atoms * math.prod(cells) == 600


def test_unit_cells_reject_degenerate_lattice() -> None:
    with pytest.raises(ValueError):
        unit_cells_for(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="shape"):
        unit_cells_for(np.eye(2))


# --- output parsing -----------------------------------------------------------------------------------------


def test_parse_loading_real_output_excerpt() -> None:
    text = EXCERPT.read_text()
    assert parse_loading(text) == (EXCERPT_MOL_KG, EXCERPT_MOL_KG_ERR)
    assert parse_loading(text, unit="molecules/unit cell") == (EXCERPT_PER_UC, EXCERPT_PER_UC_ERR)


def test_excerpt_shows_the_supercell_rule_and_the_spurious_unit_cell_warning() -> None:
    text = EXCERPT.read_text()
    assert "Number of framework atoms: 600" in text
    # RASPA2 2.0.4 prints this even for a 50 Å box (its check runs before the box is set up): not a failure.
    assert "WARNING: INAPPROPRIATE NUMBER OF UNIT CELLS USED" in text


def test_parse_loading_missing_line_is_a_clear_error() -> None:
    truncated = EXCERPT.read_text().split("Average loading absolute")[0]
    with pytest.raises(RaspaOutputError, match=r"no 'Average loading absolute \[mol/kg framework\]' line"):
        parse_loading(truncated)
    with pytest.raises(RaspaOutputError, match="<empty>"):
        parse_loading("")


def test_parse_loading_non_numeric() -> None:
    with pytest.raises(RaspaOutputError):
        parse_loading("Average loading absolute [mol/kg framework]   nan +/-   0.1 [-]")


# --- results without RASPA2 ---------------------------------------------------------------------------------


def test_result_row_has_reference_columns() -> None:
    header = REFERENCE_CSV.read_text().splitlines()[0].split(",")
    assert header == LABEL_COLUMNS
    ok = GcmcResult(
        name="X",
        status="ok",
        uptake_mol_kg=1.2886534783,
        uptake_err=0.03,
        molecules_per_uc=0.9415476190,
        seconds=6.789,
        supercell_atoms=1344,
        unit_cells=(2, 2, 2),
    )
    assert ok.as_row() == {
        "name": "X",
        "ch4_uptake_mol_kg": "1.2886534783",
        "ch4_uptake_err": "0.0300000000",
        "ch4_molecules_per_uc": "0.9415476190",
        "seconds": "6.79",
        "supercell_atoms": "1344",
        "status": "ok",
    }
    skipped = GcmcResult(name="Y", status="skipped_large", supercell_atoms=3088).as_row()
    assert list(skipped) == LABEL_COLUMNS
    assert (skipped["ch4_uptake_mol_kg"], skipped["seconds"], skipped["supercell_atoms"]) == ("", "0.00", "3088")


def test_large_supercell_is_skipped_without_simulating() -> None:
    result = simulate_ch4(SMALL_CIF, name="cube", max_supercell_atoms=53)  # 2 atoms × 3³ cells = 54
    assert result.status == "skipped_large"
    assert (result.supercell_atoms, result.unit_cells, result.uptake_mol_kg) == (54, (3, 3, 3), None)
    assert "54 atoms" in result.message


def test_unreadable_cif_is_a_failed_result() -> None:
    result = simulate_ch4("data_x\n_cell_length_a 10\n", name="broken")
    assert result.status == "failed"
    assert result.name == "broken" and "CIF" in result.message


# --- real RASPA2 --------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_raspa
def test_short_real_simulation_gives_positive_uptake() -> None:
    path = _small_coremof_cif()
    result = simulate_ch4(path, cycles=30, init_cycles=20, timeout_s=60)
    assert result.status == "ok", result.message
    assert result.name == "SAYTUJ_clean"
    assert result.uptake_mol_kg is not None and result.uptake_err is not None
    assert math.isfinite(result.uptake_mol_kg) and result.uptake_mol_kg > 0
    assert result.uptake_err >= 0 and result.molecules_per_uc is not None and result.molecules_per_uc > 0
    assert result.supercell_atoms == 600 and 0 < result.seconds < 60


def _simulate_in_pool_worker(path: str) -> tuple[str, float | None]:
    result = simulate_ch4(path, cycles=10, init_cycles=5, timeout_s=60)
    return result.status, result.uptake_mol_kg


@pytest.mark.slow
@needs_raspa
def test_simulation_runs_inside_a_daemonic_worker() -> None:
    """multiprocessing.Pool workers are daemonic, like Celery prefork children: RASPA2.run_script fails there."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        status, uptake = pool.apply(_simulate_in_pool_worker, (str(_small_coremof_cif()),))
    assert status == "ok" and uptake is not None and uptake > 0


# --- isotherm pressures (additive: the 5.8 bar protocol above is unchanged) ---------------------------------


def test_isotherm_pressures_in_the_input_script() -> None:
    from models.gcmc import ISOTHERM_PRESSURES_BAR, pressure_pa_from_bar

    lines = {
        p: raspa_input((2, 2, 3), pressure_pa=pressure_pa_from_bar(p)).splitlines() for p in ISOTHERM_PRESSURES_BAR
    }
    assert [line for p in ISOTHERM_PRESSURES_BAR for line in lines[p] if line.startswith("ExternalPressure")] == [
        "ExternalPressure 100000.0", "ExternalPressure 580000.0", "ExternalPressure 3500000.0",
        "ExternalPressure 6500000.0"]
    # at 5.8 bar the script is the reference script itself; the others differ in that one line only
    assert lines[5.8] == DESIGN_SCRIPT.splitlines()
    for p in ISOTHERM_PRESSURES_BAR:
        assert [a for a, b in zip(lines[p], DESIGN_SCRIPT.splitlines(), strict=True) if a != b] == (
            [] if p == 5.8 else [f"ExternalPressure {p * 1e5:.1f}"])


def test_pressure_conversion_and_csv_format() -> None:
    from models.gcmc import PRESSURE_PA, format_pressure_bar, pressure_bar_from_pa, pressure_pa_from_bar

    assert pressure_pa_from_bar(5.8) == PRESSURE_PA == 580000.0
    assert pressure_bar_from_pa(PRESSURE_PA) == 5.8
    for p in (0.1, 0.3, 1.0, 5.8, 35.0, 65.0, 12.345678):
        assert pressure_bar_from_pa(pressure_pa_from_bar(p)) == p
        assert float(format_pressure_bar(p)) == p
    assert [format_pressure_bar(p) for p in (1.0, 5.8, 65.0, 12.345678)] == ["1", "5.8", "65", "12.345678"]


def test_isotherm_row() -> None:
    from models.gcmc import ISOTHERM_COLUMNS, pressure_pa_from_bar

    result = GcmcResult(name="X", status="ok", uptake_mol_kg=3.98, uptake_err=0.1135, molecules_per_uc=3.2,
                        seconds=43.04, supercell_atoms=600, unit_cells=(4, 3, 2), pressure_pa=pressure_pa_from_bar(65))
    assert result.pressure_bar == 65.0
    assert result.as_isotherm_row() == {
        "name": "X", "pressure_bar": "65", "ch4_uptake_mol_kg": "3.9800000000", "ch4_uptake_err": "0.1135000000",
        "seconds": "43.04", "supercell_atoms": "600", "status": "ok"}
    assert list(result.as_isotherm_row()) == ISOTHERM_COLUMNS
    assert GcmcResult(name="Y", status="ok").pressure_bar == 5.8  # the default is the reference pressure


def test_skipped_and_failed_results_carry_the_pressure() -> None:
    skipped = simulate_ch4(SMALL_CIF, name="cube", max_supercell_atoms=53, pressure_pa=6.5e6)
    assert skipped.status == "skipped_large" and skipped.pressure_bar == 65.0
    failed = simulate_ch4("data_x\n_cell_length_a 10\n", name="broken", pressure_pa=1e5)
    assert failed.status == "failed" and failed.as_isotherm_row()["pressure_bar"] == "1"
