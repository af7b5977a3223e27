"""Infinite-dilution adsorption from a probe-energy grid: Henry coefficient and heat of adsorption (pure arithmetic).

A grid of raw probe energies V (K, ``VoxelParams(boltzmann=False)``) over the supercell samples the cell
uniformly, so its mean Boltzmann factor is the Widom insertion average ⟨exp(−V/T)⟩ of a rigid probe. With the
framework density ρ (kg/m³) and the gas constant R:

- Henry coefficient K_H = ⟨exp(−V/T)⟩ / (R T ρ), mol/(kg·Pa); reported as log10 of mol/(kg·bar);
- isosteric heat of adsorption at infinite dilution Q_st⁰ = R T − R ⟨V exp(−V/T)⟩ / ⟨exp(−V/T)⟩, kJ/mol
  (Vlugt et al., J. Chem. Theory Comput. 4, 1107 (2008), eq. 9 for a rigid probe).

They are cheap physics targets for pre-training (no GCMC): :data:`CH4_PROBE` is TraPPE's united-atom methane
(ε = 148 K, σ = 3.73 Å; Martin & Siepmann, J. Phys. Chem. B 102, 2569 (1998)).

Examples
--------
>>> import numpy as np
>>> empty = np.zeros((4, 4, 4))          # a probe that feels nothing: K_H = 1 / (R T ρ)
>>> round(henry_coefficient_mol_kg_pa(empty, 298.0, 1.0) * 8.314462618 * 298.0 * 1000.0, 6)
1.0
>>> round(heat_of_adsorption_kj_mol(empty, 298.0), 4)    # only the R T term: 2.478 kJ/mol
2.4777
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from models.params import VoxelParams
from models.units import GAS_CONSTANT_J_PER_MOL_K

if TYPE_CHECKING:
    from models.structure import Crystal

#: TraPPE united-atom CH4 probe on a finer grid than the model's (32³ over the supercell: 0.8–1.5 Å spacing for
#: CoRE MOF supercells), raw energies, 298 K. That spacing undersamples narrow wells, so K_H and Q_st⁰ are noisy
#: estimates: good pre-training targets, not reference values (the unit test checks the formulas at 0.33 Å).
CH4_PROBE = VoxelParams(grid_size=32, probe_epsilon=148.0, probe_sigma=3.73, temperature=298.0, boltzmann=False)
#: The probe of the ``ch4_widom`` descriptors that hybrid trees read (:func:`ch4_widom_descriptors`): the same
#: TraPPE methane on the model's own 25³ points per supercell. It costs half the 32³ grid (9 ms against 17 ms per
#: CoRE MOF on one core, ``bench/crystal_blocks.py``) and gave the trees the same accuracy (cross-validated inside
#: the CH4 training + validation structures, ±0.002 R² at 50–1,000 labels; log10 K_H correlates 0.994 with 32³'s).
CH4_BLOCK_PROBE = CH4_PROBE.model_copy(update={"grid_size": 25})
#: Pascal per bar.
PA_PER_BAR = 1.0e5
#: Floor of log10 K_H, mol/(kg·bar), in :func:`descriptor_row` (a closed framework has −∞; CoRE MOFs reach −44).
LOG10_HENRY_FLOOR = -30.0


def _weights(energies_k: np.ndarray, temperature_k: float) -> tuple[np.ndarray, float, np.ndarray]:
    """(finite energies, their minimum, exp(−(V − V_min)/T)): Boltzmann weights without overflow."""
    v = np.asarray(energies_k, dtype=np.float64).ravel()
    v = np.where(np.isfinite(v), v, np.inf)
    v_min = float(v.min())
    if not np.isfinite(v_min):  # no accessible point at all
        return v, v_min, np.zeros_like(v)
    return v, v_min, np.exp(-(v - v_min) / temperature_k)


def mean_boltzmann_factor(energies_k: np.ndarray, temperature_k: float) -> float:
    """⟨exp(−V/T)⟩ over the grid (dimensionless); 0 when no point is accessible."""
    with np.errstate(over="ignore"):  # beyond float64 (a well deeper than ~700 T): inf, said so
        return float(np.exp(log_mean_boltzmann_factor(energies_k, temperature_k)))


def log_mean_boltzmann_factor(energies_k: np.ndarray, temperature_k: float) -> float:
    """ln ⟨exp(−V/T)⟩, computed without overflow (−inf when no point is accessible)."""
    _, v_min, w = _weights(energies_k, temperature_k)
    return float(-v_min / temperature_k + np.log(w.mean())) if np.isfinite(v_min) else float("-inf")


def henry_coefficient_mol_kg_pa(energies_k: np.ndarray, temperature_k: float, density_g_cm3: float) -> float:
    """Henry coefficient K_H, mol/(kg·Pa), of a rigid probe in a framework of density ``density_g_cm3``."""
    if not density_g_cm3 > 0:
        raise ValueError(f"the framework density must be positive, got {density_g_cm3} g/cm³")
    density_kg_m3 = density_g_cm3 * 1000.0
    return mean_boltzmann_factor(energies_k, temperature_k) / (GAS_CONSTANT_J_PER_MOL_K * temperature_k
                                                               * density_kg_m3)


def heat_of_adsorption_kj_mol(energies_k: np.ndarray, temperature_k: float) -> float:
    """Isosteric heat of adsorption at infinite dilution Q_st⁰, kJ/mol (positive: exothermic adsorption).

    NaN when no grid point is accessible (the Boltzmann-weighted mean energy is undefined).
    """
    v, v_min, w = _weights(energies_k, temperature_k)
    if not np.isfinite(v_min) or w.sum() == 0:
        return float("nan")
    accessible = w > 0
    mean_energy_k = float((v[accessible] * w[accessible]).sum() / w.sum())
    return GAS_CONSTANT_J_PER_MOL_K * (temperature_k - mean_energy_k) / 1000.0


def widom_targets(energies_k: np.ndarray, temperature_k: float, density_g_cm3: float) -> dict[str, float]:
    """``log10_henry_mol_kg_bar`` and ``qst_kj_mol`` of one grid (−inf / NaN for a closed framework)."""
    if not density_g_cm3 > 0:
        raise ValueError(f"the framework density must be positive, got {density_g_cm3} g/cm³")
    log_henry = (log_mean_boltzmann_factor(energies_k, temperature_k)
                 - np.log(GAS_CONSTANT_J_PER_MOL_K * temperature_k * density_g_cm3 * 1000.0) + np.log(PA_PER_BAR))
    return {"log10_henry_mol_kg_bar": float(log_henry / np.log(10.0)),
            "qst_kj_mol": heat_of_adsorption_kj_mol(energies_k, temperature_k)}


def crystal_widom_targets(crystal: Crystal, probe: VoxelParams = CH4_PROBE, *, threads: int | None = 1
                          ) -> dict[str, float]:
    """:func:`widom_targets` of ``probe`` (raw energies) in ``crystal``, its grid computed on the CPU."""
    from models.units import crystal_density_g_cm3
    from models.voxels import compute_voxels

    if probe.boltzmann:
        raise ValueError("Widom averages need the probe's raw energies (boltzmann=False)")
    energies = compute_voxels(crystal, probe, device="cpu", threads=threads)
    return widom_targets(energies, probe.temperature, crystal_density_g_cm3(crystal))


def descriptor_row(targets: Mapping[str, float]) -> np.ndarray:
    """The ``ch4_widom`` descriptors of :func:`widom_targets`' values, float64 (2,): log10 K_H (mol/(kg·bar)),
    floored at :data:`LOG10_HENRY_FLOOR`, and Q_st⁰ (kJ/mol), 0 where undefined (no accessible point): finite for
    every crystal, as tree inputs must be."""
    log_henry = float(targets["log10_henry_mol_kg_bar"])
    qst = float(targets["qst_kj_mol"])
    log_henry = max(log_henry, LOG10_HENRY_FLOOR) if not np.isnan(log_henry) else LOG10_HENRY_FLOOR
    return np.array([log_henry, qst if np.isfinite(qst) else 0.0])


def ch4_widom_descriptors(crystal: Crystal, *, threads: int | None = 1) -> np.ndarray:
    """The ``ch4_widom`` descriptor block of one crystal (:func:`descriptor_row` of :data:`CH4_BLOCK_PROBE`),
    float64 (2,).

    Examples
    --------
    >>> from models.structure import Crystal
    >>> argon = Crystal("Ar", np.eye(3) * 12.0, np.zeros((1, 3)), ((("Ar", 1.0),),))
    >>> log_henry, qst = ch4_widom_descriptors(argon)
    >>> bool(-3.0 < log_henry < 1.0), bool(qst > 2.47)      # weakly attractive: Q_st⁰ above R T
    (True, True)
    """
    return descriptor_row(crystal_widom_targets(crystal, CH4_BLOCK_PROBE, threads=threads))
