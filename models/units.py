"""Uptake units: gravimetric mol/kg ↔ volumetric cm³(STP)/cm³, with the crystal density.

Volumetric uptake is the volume the adsorbed gas would take as an ideal gas at STP (T₀ = 273.15 K,
p₀ = 1 atm = 101325 Pa), per volume of crystal. One mole of ideal gas at STP takes

    V_m = R · T₀ / p₀ = 22 413.969… cm³,   R = N_A · k_B (exact since the 2019 SI),

so an uptake of n mol per kg of framework in a crystal of density ρ (g/cm³) is

    n · (ρ / 1000 kg per cm³ of crystal) · V_m  =  n · ρ · V_m / 1000   cm³(STP)/cm³.

The density is the unit cell's mass over its volume: Σ occupancy × standard atomic weight (g/mol)
/ N_A over the cell volume (Å³ = 10⁻²⁴ cm³). Everything here is pure arithmetic on numbers, arrays
and :class:`models.structure.Crystal` objects.

Examples
--------
>>> round(MOLAR_VOLUME_STP_CM3, 4)
22413.9695
>>> round(mol_per_kg_to_cm3_stp_per_cm3(1.0, 1.0), 6)
22.41397
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from models.structure import Crystal

#: Avogadro constant, 1/mol (exact, SI 2019).
AVOGADRO_PER_MOL = 6.02214076e23
#: Boltzmann constant, J/K (exact, SI 2019).
BOLTZMANN_J_PER_K = 1.380649e-23
#: Molar gas constant R = N_A · k_B, J/(mol·K).
GAS_CONSTANT_J_PER_MOL_K = AVOGADRO_PER_MOL * BOLTZMANN_J_PER_K
#: STP temperature, K (IUPAC before 1982, and what "cm³(STP)" means in the adsorption literature).
STP_TEMPERATURE_K = 273.15
#: STP pressure, Pa (1 atm).
STP_PRESSURE_PA = 101325.0
#: Molar volume of an ideal gas at STP, cm³/mol: R · T₀ / p₀ (m³ → cm³: × 10⁶).
MOLAR_VOLUME_STP_CM3 = GAS_CONSTANT_J_PER_MOL_K * STP_TEMPERATURE_K / STP_PRESSURE_PA * 1e6
#: cm³ per Å³.
CM3_PER_ANGSTROM3 = 1e-24

#: Unit names as the API and CLI spell them.
MOL_PER_KG = "mol/kg"
CM3_STP_PER_CM3 = "cm3(STP)/cm3"
#: Deliverable capacity of CH4 storage: uptake at the storage pressure minus uptake at the delivery pressure, bar
#: (the US DOE adsorbed-natural-gas metric, 298 K).
DELIVERY_HIGH_BAR = 65.0
DELIVERY_LOW_BAR = 5.8
UNITS = (MOL_PER_KG, CM3_STP_PER_CM3)

_Value = TypeVar("_Value", float, np.ndarray)


def mol_per_kg_to_cm3_stp_per_cm3(uptake_mol_per_kg: _Value, density_g_cm3: float | np.ndarray) -> _Value:
    """Gravimetric uptake (mol/kg framework) → volumetric uptake (cm³(STP) per cm³ of crystal).

    Parameters
    ----------
    uptake_mol_per_kg : float or ndarray
        Uptake, mol per kg of framework (any shape; broadcast against the density).
    density_g_cm3 : float or ndarray
        Crystal density, g/cm³ (see :func:`crystal_density_g_cm3`); must be positive.

    Returns
    -------
    float or ndarray
        ``uptake · density · V_m / 1000`` with V_m = :data:`MOLAR_VOLUME_STP_CM3`.

    Examples
    --------
    >>> round(mol_per_kg_to_cm3_stp_per_cm3(2.0, 0.5), 6)  # 2 mol/kg in a 0.5 g/cm³ crystal
    22.41397
    """
    density = _positive_density(density_g_cm3)
    value = np.asarray(uptake_mol_per_kg, dtype=np.float64) * density * (MOLAR_VOLUME_STP_CM3 / 1000.0)
    return _like(uptake_mol_per_kg, density_g_cm3, value)


def cm3_stp_per_cm3_to_mol_per_kg(uptake_cm3_stp_per_cm3: _Value, density_g_cm3: float | np.ndarray) -> _Value:
    """Volumetric uptake (cm³(STP)/cm³) → gravimetric uptake (mol/kg); the inverse of the function above."""
    density = _positive_density(density_g_cm3)
    value = np.asarray(uptake_cm3_stp_per_cm3, dtype=np.float64) * 1000.0 / (MOLAR_VOLUME_STP_CM3 * density)
    return _like(uptake_cm3_stp_per_cm3, density_g_cm3, value)


def convert_uptake(value_mol_per_kg: _Value, unit: str, density_g_cm3: float | None = None) -> _Value:
    """An uptake in mol/kg expressed in ``unit`` (one of :data:`UNITS`); the density is needed for cm³(STP)/cm³.

    Examples
    --------
    >>> convert_uptake(1.5, "mol/kg")
    1.5
    >>> round(convert_uptake(1.0, "cm3(STP)/cm3", density_g_cm3=1.0), 3)
    22.414
    """
    if unit == MOL_PER_KG:
        return value_mol_per_kg
    if unit == CM3_STP_PER_CM3:
        if density_g_cm3 is None:
            raise ValueError("converting to cm3(STP)/cm3 needs the crystal density (g/cm3)")
        return mol_per_kg_to_cm3_stp_per_cm3(value_mol_per_kg, density_g_cm3)
    raise ValueError(f"unknown uptake unit {unit!r}; expected one of {', '.join(UNITS)}")


@cache
def atomic_mass_g_mol(element: str) -> float:
    """Standard atomic weight of an element, g/mol (pymatgen's periodic table).

    Raises
    ------
    ValueError
        Not an element symbol.
    """
    from pymatgen.core.periodic_table import Element

    try:
        mass = Element(element).atomic_mass
    except ValueError as exc:
        raise ValueError(f"{element!r} is not an element symbol") from exc
    if mass is None:
        raise ValueError(f"no atomic mass for element {element!r}")
    return float(mass)


def cell_mass_g_mol(crystal: Crystal) -> float:
    """Mass of the unit-cell contents, g/mol (= daltons per cell): Σ over sites of occupancy × atomic mass."""
    return float(sum(occupancy * atomic_mass_g_mol(element) for site in crystal.species for element, occupancy in site))


def crystal_density_g_cm3(crystal: Crystal) -> float:
    """Crystal density, g/cm³: cell mass / (N_A · cell volume).

    Parameters
    ----------
    crystal : Crystal
        A parsed crystal (:func:`models.structure.parse_cif`): its ``species`` (element, occupancy) per site
        and ``volume`` in Å³.

    Returns
    -------
    float
        Density, g/cm³.

    Raises
    ------
    ValueError
        The crystal has no atoms or no volume.
    """
    volume_cm3 = crystal.volume * CM3_PER_ANGSTROM3
    mass_g = cell_mass_g_mol(crystal) / AVOGADRO_PER_MOL
    if not (volume_cm3 > 0 and mass_g > 0):
        raise ValueError(f"{crystal.name}: density needs atoms and a cell volume (got {crystal.volume} Å³)")
    return mass_g / volume_cm3


def _positive_density(density_g_cm3: float | np.ndarray) -> np.ndarray:
    density = np.asarray(density_g_cm3, dtype=np.float64)
    if not np.all(np.isfinite(density) & (density > 0)):
        raise ValueError(f"the crystal density must be positive and finite (g/cm3), got {density_g_cm3!r}")
    return density


def _like(first: object, second: object, value: np.ndarray) -> _Value:
    """A plain float when both inputs were scalars, else the array."""
    if np.ndim(first) == 0 and np.ndim(second) == 0:
        return float(value)  # type: ignore[return-value]
    return value  # type: ignore[return-value]


__all__ = [
    "AVOGADRO_PER_MOL",
    "BOLTZMANN_J_PER_K",
    "CM3_PER_ANGSTROM3",
    "CM3_STP_PER_CM3",
    "GAS_CONSTANT_J_PER_MOL_K",
    "MOLAR_VOLUME_STP_CM3",
    "MOL_PER_KG",
    "STP_PRESSURE_PA",
    "STP_TEMPERATURE_K",
    "UNITS",
    "atomic_mass_g_mol",
    "cell_mass_g_mol",
    "cm3_stp_per_cm3_to_mol_per_kg",
    "convert_uptake",
    "crystal_density_g_cm3",
    "mol_per_kg_to_cm3_stp_per_cm3",
]
