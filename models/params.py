"""Voxel parameters and the Lennard-Jones force-field table.

Every number that changes a voxel grid lives in :class:`VoxelParams`; its
:meth:`VoxelParams.params_hash` is half of the voxel cache key (the other half
is the structure hash), so grids computed with different parameters never mix.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Grid points along each supercell axis (thesis value).
GRID_SIZE = 25
#: Lennard-Jones cut-off radius in Å.
CUTOFF = 10.0
#: Probe ε in K (a methane-like united atom).
PROBE_EPSILON = 50.0
#: Probe σ in Å.
PROBE_SIGMA = 2.5
#: Temperature of the Boltzmann factor in K.
TEMPERATURE = 298.0
#: Name of the shipped force field (UFF ε/σ per element).
FORCE_FIELD = "UFF"


class VoxelParams(BaseModel):
    """All parameters of an energy-voxel grid (immutable, hashable).

    Attributes
    ----------
    grid_size : int
        Points per axis *n*; the grid has n³ points.
    cutoff : float
        Lennard-Jones cut-off radius r_c in Å.
    probe_epsilon : float
        Probe ε in K.
    probe_sigma : float
        Probe σ in Å.
    temperature : float
        Temperature *T* in K of the Boltzmann factor exp(-V/T).
    boltzmann : bool
        True: voxel = exp(-V/T) (dimensionless). False: raw energy V in K.
    cubic_box : float or None
        None: grid over the minimum-image supercell (fractional k/n).
        A number L: Cartesian grid over a cube of side L Å centred at the origin.
    force_field : str
        Name of the per-element ε/σ table.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    grid_size: int = Field(GRID_SIZE, ge=2, le=128)
    cutoff: float = Field(CUTOFF, gt=0.0, le=30.0)
    probe_epsilon: float = Field(PROBE_EPSILON, gt=0.0)
    probe_sigma: float = Field(PROBE_SIGMA, gt=0.0)
    temperature: float = Field(TEMPERATURE, gt=0.0)
    boltzmann: bool = True
    cubic_box: float | None = Field(None, gt=0.0)
    force_field: str = FORCE_FIELD

    @model_validator(mode="after")
    def _known_force_field(self) -> VoxelParams:
        if self.force_field != FORCE_FIELD:
            raise ValueError(f"unknown force field {self.force_field!r}; available: {FORCE_FIELD}")
        return self

    def params_hash(self) -> str:
        """Return a short sha256 of every parameter (part of the voxel cache key)."""
        payload = json.dumps(self.model_dump(), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def uff_table() -> dict[str, tuple[float, float]]:
    """Return UFF Lennard-Jones parameters as ``{element: (epsilon_K, sigma_angstrom)}``."""
    raw: dict[str, Any] = json.loads(resources.files("models.data").joinpath("uff.json").read_text())
    return {el: (float(v["epsilon"]), float(v["sigma"])) for el, v in raw["elements"].items()}
