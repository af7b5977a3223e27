"""Widom averages of a probe-energy grid (models.widom): hand-computed grids and one atom against a radial integral."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.params import VoxelParams, uff_table
from models.structure import Crystal
from models.units import GAS_CONSTANT_J_PER_MOL_K as R
from models.units import crystal_density_g_cm3
from models.voxels import compute_voxels
from models.widom import (
    CH4_BLOCK_PROBE,
    CH4_PROBE,
    LOG10_HENRY_FLOOR,
    ch4_widom_descriptors,
    descriptor_row,
    heat_of_adsorption_kj_mol,
    henry_coefficient_mol_kg_pa,
    log_mean_boltzmann_factor,
    mean_boltzmann_factor,
    widom_targets,
)

T = 298.0


def test_two_level_grid_by_hand() -> None:
    # half the cell at −1000 K, half closed (+inf): ⟨e^{−V/T}⟩ = e^{1000/298} / 2, Q = R (T + 1000 K)
    grid = np.concatenate([np.full(500, -1000.0), np.full(500, np.inf)])
    assert mean_boltzmann_factor(grid, T) == pytest.approx(math.exp(1000.0 / T) / 2)
    assert henry_coefficient_mol_kg_pa(grid, T, 0.5) == pytest.approx(math.exp(1000.0 / T) / 2 / (R * T * 500.0))
    assert heat_of_adsorption_kj_mol(grid, T) == pytest.approx(R * (T + 1000.0) / 1000.0)


def test_deep_wells_do_not_overflow_and_weigh_the_heat() -> None:
    grid = np.array([-300000.0, -200000.0, 1e30])  # e^{300000/298} overflows float64 unless shifted
    heat = heat_of_adsorption_kj_mol(grid, T)
    assert heat == pytest.approx(R * (T + 300000.0) / 1000.0, rel=1e-6)  # the deepest well dominates
    assert math.isinf(mean_boltzmann_factor(grid, T))  # honest: the average itself is beyond float64
    assert log_mean_boltzmann_factor(grid, T) == pytest.approx(300000.0 / T + math.log(1 / 3), rel=1e-9)
    expected = (300000.0 / T + math.log(1 / 3) - math.log(R * T * 1000.0) + math.log(1e5)) / math.log(10)
    assert widom_targets(grid, T, 1.0)["log10_henry_mol_kg_bar"] == pytest.approx(expected, rel=1e-9)


def test_a_closed_framework_has_no_henry_coefficient() -> None:
    targets = widom_targets(np.full((4, 4, 4), np.inf), T, 1.2)
    assert targets["log10_henry_mol_kg_bar"] == -math.inf
    assert math.isnan(targets["qst_kj_mol"])


def test_density_must_be_positive() -> None:
    with pytest.raises(ValueError, match="density"):
        henry_coefficient_mol_kg_pa(np.zeros(8), T, 0.0)
    with pytest.raises(ValueError, match="density"):
        widom_targets(np.zeros(8), T, -1.0)


def test_one_atom_in_a_large_cell_matches_the_radial_integral() -> None:
    """⟨e^{−V/T}⟩ − 1 of one Ar atom in a 24 Å cube equals (1/V_cell) ∫ (e^{−V(r)/T} − 1) 4πr² dr (no images
    within the 10 Å cut-off overlap), and Q_st⁰ the Boltzmann-weighted energy of the same integral."""
    side = 24.0
    crystal = Crystal("Ar", np.eye(3) * side, np.array([[0.0, 0.0, 0.0]]), ((("Ar", 1.0),),))
    params = CH4_PROBE.model_copy(update={"grid_size": 72})
    energies = compute_voxels(crystal, params, device="cpu").astype(np.float64)

    eps_ar, sigma_ar = uff_table()["Ar"]
    eps = math.sqrt(eps_ar * params.probe_epsilon)
    sigma = (sigma_ar + params.probe_sigma) / 2
    r = np.linspace(1e-3, params.cutoff, 400_001)
    v = 4 * eps * ((sigma / r) ** 12 - (sigma / r) ** 6)
    shell = 4 * np.pi * r**2
    excess = np.trapezoid((np.exp(-v / T) - 1) * shell, r)
    weighted = np.trapezoid(v * np.exp(-v / T) * shell, r)
    volume = side**3
    expected_mean = 1 + excess / volume
    expected_heat = R * (T - weighted / (volume * expected_mean)) / 1000.0

    assert mean_boltzmann_factor(energies, T) - 1 == pytest.approx(expected_mean - 1, rel=0.05)
    assert heat_of_adsorption_kj_mol(energies, T) == pytest.approx(expected_heat, rel=0.05)


def test_ch4_probe_is_trappe_methane_on_raw_energies() -> None:
    assert (CH4_PROBE.probe_epsilon, CH4_PROBE.probe_sigma, CH4_PROBE.boltzmann) == (148.0, 3.73, False)
    assert CH4_PROBE.params_hash() != VoxelParams().params_hash()


def test_descriptor_rows_are_finite_for_every_crystal() -> None:
    closed = descriptor_row(widom_targets(np.full((4, 4, 4), np.inf), T, 1.2))
    assert closed.tolist() == [LOG10_HENRY_FLOOR, 0.0]
    assert descriptor_row({"log10_henry_mol_kg_bar": -50.0, "qst_kj_mol": 30.0}).tolist() == [LOG10_HENRY_FLOOR, 30.0]
    assert descriptor_row({"log10_henry_mol_kg_bar": -0.3, "qst_kj_mol": 15.9}).tolist() == [-0.3, 15.9]


def test_a_crystals_ch4_widom_descriptors_are_its_trappe_grids_widom_averages() -> None:
    """The descriptors serving computes equal the Widom averages of the TraPPE CH4 grid (25³) of the same crystal."""
    a = 12.0
    open_cell = Crystal("open", np.eye(3) * a, np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]),
                        ((("Cu", 1.0),), (("O", 1.0),)))
    density = (63.546 + 15.999) / 6.02214076e23 / (a ** 3 * 1e-24)  # g/cm³: one Cu and one O in 12³ Å³
    assert crystal_density_g_cm3(open_cell) == pytest.approx(density, rel=1e-3)
    assert CH4_BLOCK_PROBE == CH4_PROBE.model_copy(update={"grid_size": 25})  # TraPPE methane on 25³ points
    expected = widom_targets(compute_voxels(open_cell, CH4_BLOCK_PROBE, device="cpu"), T,
                             crystal_density_g_cm3(open_cell))
    got = ch4_widom_descriptors(open_cell)
    assert got.tolist() == pytest.approx([expected["log10_henry_mol_kg_bar"], expected["qst_kj_mol"]])
    assert got[1] > R * T / 1000.0  # two atoms in an open cell attract the probe: Q_st⁰ above R T
