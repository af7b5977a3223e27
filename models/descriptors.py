"""Exact crystal descriptors fed to RetNet beside its energy image (pure arithmetic, no IO).

The 25³ grid spans the supercell in *fractional* coordinates: it carries no absolute length scale and no
framework mass, while an uptake in mol/kg divides by that mass. A descriptor model (a card with
``descriptors``) therefore also reads a few numbers that are exact and cheap for any crystal:

``log_density``
    ln(ρ / (g/cm³)), ρ = cell mass / cell volume from the CIF (:func:`models.units.crystal_density_g_cm3`).
``energy_histogram``
    The fraction of grid points per probe-energy bin (K, :data:`ENERGY_BINS`, Bucior et al. 2019) and
    ln of the mean Boltzmann factor: 14 numbers read off the model's own (unclipped) grid.
``gravimetric_grid``
    The grid's per-volume quantities made per mass by dividing by ρ (g/cm³), so cm³/g: the mean Boltzmann factor
    ⟨e^{−V/T}⟩/ρ (a Henry coefficient up to R T), the attractive volume (fraction of points with V < 0)/ρ and
    the open volume (fraction with V < :data:`OPEN_ENERGY_K`)/ρ; and the Boltzmann-weighted probe energy
    ⟨V e^{−V/T}⟩/⟨e^{−V/T}⟩ (K, a heat of adsorption at infinite dilution up to R T). 4 numbers. Trees cannot
    form a ratio of two of their inputs, and an uptake in mol/kg is such a ratio (a per-volume quantity over ρ).
``ch4_widom``
    log10 K_H (mol/(kg·bar)) and Q_st⁰ (kJ/mol) of the gas itself, a TraPPE united-atom CH4 probe at 298 K, from
    its own 25³ raw-energy grid over the supercell (:func:`compute_crystal_blocks`, ~9 ms per
    structure on one core). The model's grid uses a generic probe (ε = 50 K, σ = 2.5 Å), so these carry what it
    cannot. Computed from the crystal, not from the model's grid: a *crystal block* (:data:`CRYSTAL_BLOCKS`), which
    the caller supplies (``crystal_blocks``), as it supplies the density.

Which descriptors a model reads, and their training-set mean and standard deviation, are in its card
(:class:`DescriptorSpec`); serving computes exactly the same numbers from the structure's density and grid.

Examples
--------
>>> import numpy as np
>>> spec = DescriptorSpec(names=("log_density",), mean=(0.0,), std=(1.0,))
>>> spec.width
1
>>> spec.transform(descriptor_matrix(("log_density",), np.ones((2, 25, 25, 25)), np.array([1.0, np.e])))
array([[0.],
       [1.]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from models.structure import Crystal

#: Probe-energy bin edges, K (−∞ … 1000 K … +∞): 13 bins.
ENERGY_BINS = (-np.inf, -4000.0, -3000.0, -2500.0, -2000.0, -1500.0, -1250.0, -1000.0, -750.0, -500.0, -250.0,
               0.0, 1000.0, np.inf)
#: Temperature of the Boltzmann factors the histogram inverts, K (DESIGN.md §3).
GRID_TEMPERATURE_K = 298.0
#: Probe energy (K) below which a grid point counts as open volume in ``gravimetric_grid`` (e^{−V/T} > 1e-3).
OPEN_ENERGY_K = -GRID_TEMPERATURE_K * float(np.log(1e-3))
#: Descriptor blocks computed from the crystal itself rather than from the model's grid, and their widths.
CRYSTAL_BLOCKS = {"ch4_widom": 2}
#: Width of each known descriptor block.
DESCRIPTOR_WIDTHS = {"log_density": 1, "energy_histogram": len(ENERGY_BINS), "gravimetric_grid": 4,
                     **CRYSTAL_BLOCKS}
#: Descriptor blocks that need the crystal density.
NEEDS_DENSITY = frozenset({"log_density", "gravimetric_grid"})


class MissingDescriptorError(ValueError):
    """A descriptor cannot be computed for a structure (e.g. no crystal density is known for it)."""


def energy_histogram(grids: np.ndarray, temperature: float = GRID_TEMPERATURE_K) -> np.ndarray:
    """Fraction of grid points per probe-energy bin (K) and the mean Boltzmann factor; shape (N, 14).

    Parameters
    ----------
    grids : array (N, n, n, n)
        Boltzmann factors exp(−V/T) (0 inside atoms).
    temperature : float
        T of the Boltzmann factors, K.
    """
    if len(grids) == 0:
        return np.zeros((0, len(ENERGY_BINS)))
    flat = np.asarray(grids, dtype=np.float64).reshape(len(grids), -1)
    with np.errstate(divide="ignore"):
        energy = -temperature * np.log(flat)
    counts = np.stack([np.histogram(e, bins=np.array(ENERGY_BINS))[0] for e in energy]) / flat.shape[1]
    return np.column_stack([counts, flat.mean(axis=1)])


def gravimetric_grid(grids: np.ndarray, densities_g_cm3: np.ndarray,
                     temperature: float = GRID_TEMPERATURE_K) -> np.ndarray:
    """Per-mass quantities of the grids, shape (N, 4): ⟨e^{−V/T}⟩/ρ, (fraction V < 0)/ρ, (fraction
    V < :data:`OPEN_ENERGY_K`)/ρ, all cm³/g, and ⟨V e^{−V/T}⟩/⟨e^{−V/T}⟩ in K (0 for a grid without open points).

    Parameters
    ----------
    grids : array (N, n, n, n)
        Boltzmann factors exp(−V/T) (0 inside atoms), not clipped.
    densities_g_cm3 : array (N,)
        Crystal densities, g/cm³ (finite, positive).
    temperature : float
        T of the Boltzmann factors, K.
    """
    if len(grids) == 0:
        return np.zeros((0, DESCRIPTOR_WIDTHS["gravimetric_grid"]))
    flat = np.asarray(grids, dtype=np.float64).reshape(len(grids), -1)
    rho = np.asarray(densities_g_cm3, dtype=np.float64)
    mean = flat.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        b_log_b = np.where(flat > 0, flat * np.log(np.where(flat > 0, flat, 1.0)), 0.0).mean(axis=1)
        weighted_energy = np.where(mean > 0, -temperature * b_log_b / np.where(mean > 0, mean, 1.0), 0.0)
    attractive = (flat > 1.0).mean(axis=1)
    open_volume = (flat > np.exp(-OPEN_ENERGY_K / temperature)).mean(axis=1)
    return np.column_stack([mean / rho, attractive / rho, open_volume / rho, weighted_energy])


def crystal_blocks_of(names: Sequence[str]) -> tuple[str, ...]:
    """The crystal blocks (:data:`CRYSTAL_BLOCKS`) among descriptor blocks ``names``, in their order."""
    return tuple(n for n in names if n in CRYSTAL_BLOCKS)


def card_crystal_blocks(card: Mapping[str, Any]) -> tuple[str, ...]:
    """The crystal blocks a model card (as a dict) reads: its trees' (a network reads none)."""
    return crystal_blocks_of((card.get("trees") or {}).get("features") or [])


def crystal_block_tag(name: str) -> str:
    """A crystal block's name and the hash of what computes it (its probe's voxel parameters), for the stored
    copies: a block computed another way is never read as this one."""
    from models.widom import CH4_BLOCK_PROBE

    computed_by = {"ch4_widom": CH4_BLOCK_PROBE.params_hash()[:12]}
    return f"{name}-{computed_by[name]}"


def stack_crystal_blocks(names: Sequence[str], rows: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-structure crystal blocks (each row {block: (width,) or (1, width)}) stacked into {block: float64
    (N, width)}; N may be 0."""
    return {b: np.asarray([np.ravel(r[b]) for r in rows], dtype=np.float64).reshape(len(rows), CRYSTAL_BLOCKS[b])
            for b in crystal_blocks_of(names)}


def compute_crystal_blocks(names: Sequence[str], crystals: Sequence[Crystal], *, threads: int | None = 1
                           ) -> dict[str, np.ndarray]:
    """The crystal blocks among descriptor blocks ``names`` of each crystal: {block: float64 (N, width)}."""
    from models.widom import ch4_widom_descriptors

    computers = {"ch4_widom": ch4_widom_descriptors}
    names = crystal_blocks_of(names)
    return stack_crystal_blocks(names, [{n: computers[n](c, threads=threads) for n in names} for c in crystals])


def descriptor_matrix(names: Sequence[str], grids: np.ndarray, densities_g_cm3: Sequence[float | None] | np.ndarray
                      | None, crystal_blocks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The raw (unstandardized) descriptors of N structures, float64 (N, width), blocks in ``names``' order.

    Parameters
    ----------
    names : sequence of str
        Descriptor blocks (keys of :data:`DESCRIPTOR_WIDTHS`).
    grids : array (N, n, n, n)
        The structures' raw grids (Boltzmann factors, not clipped).
    densities_g_cm3 : sequence of float, optional
        Crystal densities, g/cm³; needed by ``log_density`` and ``gravimetric_grid``.
    crystal_blocks : mapping of str to array (N, width), optional
        The crystal blocks among ``names`` (:data:`CRYSTAL_BLOCKS`), one row per structure.

    Raises
    ------
    MissingDescriptorError
        A needed density or crystal block is missing, not finite (or, for a density, not positive).
    """
    unknown = [n for n in names if n not in DESCRIPTOR_WIDTHS]
    if unknown:
        raise ValueError(f"unknown descriptor(s) {unknown}; known: {sorted(DESCRIPTOR_WIDTHS)}")
    blocks = []
    for name in names:
        if name == "log_density":
            blocks.append(np.log(_densities(densities_g_cm3, len(grids)))[:, None])
        elif name == "gravimetric_grid":
            blocks.append(gravimetric_grid(grids, _densities(densities_g_cm3, len(grids))))
        elif name in CRYSTAL_BLOCKS:
            blocks.append(_crystal_block(crystal_blocks, name, len(grids)))
        else:
            histogram = energy_histogram(grids)
            blocks.append(np.column_stack([histogram[:, :-1], np.log(np.maximum(histogram[:, -1], 1e-300))]))
    return np.column_stack(blocks) if blocks else np.zeros((len(grids), 0))


def _densities(values: Sequence[float | None] | np.ndarray | None, n: int) -> np.ndarray:
    if values is None:
        raise MissingDescriptorError("this model needs the crystal density of each structure, and none was given")
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if out.shape != (n,):
        raise ValueError(f"expected {n} densities, got {out.shape[0]}")
    bad = ~(np.isfinite(out) & (out > 0))
    if bad.any():
        raise MissingDescriptorError(f"this model needs the crystal density; {int(bad.sum())} of {n} structure(s) "
                                     "have none")
    return out


def _crystal_block(blocks: Mapping[str, np.ndarray] | None, name: str, n: int) -> np.ndarray:
    if blocks is None or name not in blocks:
        raise MissingDescriptorError(f"this model needs the {name} descriptors of each structure, and none were "
                                     "given")
    out = np.asarray(blocks[name], dtype=np.float64)
    if out.shape != (n, CRYSTAL_BLOCKS[name]):
        raise ValueError(f"expected {name} descriptors of shape {(n, CRYSTAL_BLOCKS[name])}, got {out.shape}")
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise MissingDescriptorError(f"this model needs the {name} descriptors; {int(bad.sum())} of {n} "
                                     "structure(s) have none")
    return out


@dataclass(frozen=True)
class DescriptorSpec:
    """Which descriptors a model reads and how they are standardized (stored in the model card).

    Attributes
    ----------
    names : tuple of str
        Descriptor blocks, in input order.
    mean, std : tuple of float
        Training-set mean and standard deviation of each input column (std > 0).
    """

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        width = sum(DESCRIPTOR_WIDTHS[n] for n in self.names)
        if len(self.mean) != width or len(self.std) != width:
            raise ValueError(f"descriptors {list(self.names)} have {width} columns; got {len(self.mean)} means and "
                             f"{len(self.std)} stds")
        if any(not s > 0 for s in self.std):
            raise ValueError("descriptor standard deviations must be positive")
        if crystal_blocks_of(self.names):
            raise ValueError(f"a network reads its grid's descriptors and the density, not "
                             f"{crystal_blocks_of(self.names)}")

    @property
    def width(self) -> int:
        """Number of input columns."""
        return len(self.mean)

    @property
    def needs_density(self) -> bool:
        """Whether serving needs each structure's crystal density."""
        return bool(NEEDS_DENSITY & set(self.names))

    @classmethod
    def fit(cls, names: Sequence[str], raw: np.ndarray) -> DescriptorSpec:
        """Mean and std of raw training descriptors (a constant column gets std 1)."""
        raw = np.asarray(raw, dtype=np.float64)
        std = raw.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(tuple(names), tuple(float(v) for v in raw.mean(axis=0)), tuple(float(v) for v in std))

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Standardized descriptors, float32 (N, width)."""
        return ((np.asarray(raw, dtype=np.float64) - np.array(self.mean)) / np.array(self.std)).astype(np.float32)

    def compute(self, grids: np.ndarray, densities_g_cm3: Sequence[float | None] | np.ndarray | None = None
                ) -> np.ndarray:
        """Standardized descriptors of raw grids (and densities), float32 (N, width)."""
        return self.transform(descriptor_matrix(self.names, grids, densities_g_cm3))

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DescriptorSpec:
        return cls(tuple(data["names"]), tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))


def card_reads_density(card: Mapping[str, Any]) -> bool:
    """Whether a model card (as a dict: its ``descriptors`` and ``trees``) needs each structure's crystal density."""
    descriptors, trees = card.get("descriptors"), card.get("trees")
    return ((descriptors is not None and DescriptorSpec.from_dict(descriptors).needs_density)
            or (trees is not None and bool(NEEDS_DENSITY & set(trees.get("features", [])))))


def training_descriptors(names: Sequence[str], grids: np.ndarray,
                         densities_g_cm3: Sequence[float | None] | np.ndarray | None, train_idx: np.ndarray,
                         base: DescriptorSpec | None = None) -> tuple[DescriptorSpec, np.ndarray]:
    """(spec, standardized descriptors of every structure) for a training run.

    The spec is fitted on the ``train_idx`` rows, unless ``base`` (a fine-tuned model's) reads the same
    descriptors: its weights were learnt with its standardization, which is then kept.
    """
    raw = descriptor_matrix(names, grids, densities_g_cm3)
    keep = base is not None and tuple(base.names) == tuple(names)
    spec = base if keep else DescriptorSpec.fit(names, raw[train_idx])
    assert spec is not None
    return spec, spec.transform(raw)


def with_copy_descriptors(spec: DescriptorSpec, described: np.ndarray, copy_grids: np.ndarray,
                          densities_g_cm3: Sequence[float | None] | np.ndarray | None, per_copy: int) -> np.ndarray:
    """Standardized descriptors of training structures (N, m) followed by those of their jittered copies.

    ``copy_grids`` (N · per_copy, n, n, n) are the copies in the order of :func:`models.vibration.with_vibrated`
    (each structure's copies together). A copy keeps its original's density (same cell, same atoms) and gets the
    energy histogram of its own grid.
    """
    if per_copy == 0:
        return described
    densities = None if densities_g_cm3 is None else np.repeat(np.asarray(densities_g_cm3, dtype=np.float64),
                                                               per_copy)
    return np.concatenate([described, spec.compute(copy_grids, densities)])
