"""How a model's outputs are shown: the primary value, a curve's points, the deliverable capacity, sort keys, CSV.

One home for what a model card says about its outputs (``targets``, ``primary_output``): a single-output model
has one value; a curve model (every target at a pressure, increasing, e.g. ``retnet-ch4-isotherm``) has its
points ``uptake_<p>bar`` and, when it covers 5.8 and 65 bar, the deliverable capacity ``deliverable_65_5.8bar``
(65 bar minus 5.8 bar uptake, 298 K: the US DOE adsorbed-natural-gas metric). Screening results are ranked by
any of these keys (``sort=``), in SQL, so pagination stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement

from app.db.tables import Prediction, Structure
from app.schemas import CurvePoint
from app.services.errors import UnprocessableError
from models.units import CM3_STP_PER_CM3, DELIVERY_HIGH_BAR, DELIVERY_LOW_BAR, mol_per_kg_to_cm3_stp_per_cm3

#: The default sort key: the model's primary output (``Prediction.value``).
VALUE = "value"


def point_key(pressure_bar: float) -> str:
    """Sort key and CSV column of one curve point, e.g. ``uptake_5.8bar``."""
    return f"uptake_{pressure_bar:g}bar"


#: Sort key and CSV column of the deliverable capacity.
DELIVERABLE = f"deliverable_{DELIVERY_HIGH_BAR:g}_{DELIVERY_LOW_BAR:g}bar"


@dataclass(frozen=True)
class Outputs:
    """The outputs a model card describes.

    Attributes
    ----------
    names : list of str
        Target names, in output order.
    primary : int
        Index of the output reported as ``value`` (and ranked by default).
    pressures : tuple of float or None
        Each output's pressure (bar), increasing, for a curve model; None otherwise.
    """

    names: list[str]
    primary: int
    pressures: tuple[float, ...] | None

    @classmethod
    def of(cls, card: dict[str, Any] | None) -> Outputs:
        """From a model card (its JSON form, as stored in the registry)."""
        targets = (card or {}).get("targets") or [{}]
        names = [str(t.get("name") or f"output_{i}") for i, t in enumerate(targets)]
        primary = int((card or {}).get("primary_output") or 0)
        pressures = [t.get("pressure_bar") for t in targets]
        curve = None
        if len(pressures) >= 2 and all(isinstance(p, int | float) for p in pressures):
            values = tuple(float(p) for p in pressures)
            curve = values if all(b > a for a, b in zip(values, values[1:], strict=False)) else None
        return cls(names, primary if 0 <= primary < len(names) else 0, curve)

    def index(self, pressure: float) -> int | None:
        """Position of ``pressure`` (bar) among the curve's pressures, or None."""
        for i, p in enumerate(self.pressures or ()):
            if math.isclose(p, pressure, rel_tol=1e-9):
                return i
        return None

    @property
    def deliverable(self) -> tuple[int, int] | None:
        """(high, low) output indices of the deliverable capacity, when the curve has both pressures."""
        high, low = self.index(DELIVERY_HIGH_BAR), self.index(DELIVERY_LOW_BAR)
        return None if high is None or low is None else (high, low)

    @property
    def sort_keys(self) -> list[str]:
        """Every key results can be ranked by."""
        keys = [VALUE]
        if self.pressures:
            keys += [point_key(p) for p in self.pressures]
        if self.deliverable:
            keys.append(DELIVERABLE)
        return keys

    @property
    def csv_columns(self) -> list[str]:
        """The per-output CSV columns (beyond ``value``): a curve's points and its deliverable capacity."""
        return self.sort_keys[1:]

    def check_sort(self, key: str | None) -> str:
        """``key`` when results can be ranked by it (None: ``value``), else a 422 naming the keys that exist."""
        key = key or VALUE
        if key not in self.sort_keys:
            raise UnprocessableError(f"cannot sort by {key!r}: this job's model gives {', '.join(self.sort_keys)}")
        return key

    def quantity_matrix(self, keys: list[str]) -> np.ndarray:
        """(k outputs, m keys) weights: ``outputs @ matrix`` gives each key's quantity (for the generator's search)."""
        matrix = np.zeros((len(self.names), len(keys)))
        for j, key in enumerate(self.check_sort(k) for k in keys):
            if key == VALUE:
                matrix[self.primary, j] = 1.0
            elif key == DELIVERABLE and self.deliverable:
                matrix[self.deliverable[0], j], matrix[self.deliverable[1], j] = 1.0, -1.0
            else:
                matrix[self.sort_keys.index(key) - 1, j] = 1.0
        return matrix

    def sort_expression(self, key: str, volumetric: bool) -> ColumnElement[Any]:
        """The SQL expression of ``key`` (in cm³(STP)/cm³ when ``volumetric``: times the structure's density)."""
        key = self.check_sort(key)
        if key == VALUE:
            shown: ColumnElement[Any] = Prediction.value
        elif key == DELIVERABLE and self.deliverable:
            high, low = self.deliverable
            shown = _element(high) - _element(low)
        else:
            shown = _element(self.sort_keys.index(key) - 1)
        return shown * Structure.density_g_cm3 if volumetric else shown

    def present(self, values: list[float], uncertainties: list[float] | None, factor: float) -> dict[str, Any]:
        """``values`` / ``deliverable_capacity`` fields of a prediction, already multiplied by the unit ``factor``.

        A curve gives its points in increasing pressure; another multi-output model a ``{name: value}`` map; a
        single output nothing. The deliverable capacity's σ combines the two points' σ as if independent (their
        errors are positively correlated in practice, so it is on the safe side).
        """
        out: dict[str, Any] = {"values": None, "deliverable_capacity": None, "deliverable_capacity_uncertainty": None}
        if len(values) < 2:
            return out
        sigma = list(uncertainties) if uncertainties and len(uncertainties) == len(values) else None
        if self.pressures and len(self.pressures) == len(values):
            out["values"] = [CurvePoint(pressure_bar=p, value=v * factor,
                                        uncertainty=None if sigma is None else sigma[i] * factor)
                             for i, (p, v) in enumerate(zip(self.pressures, values, strict=True))]
            if self.deliverable:
                high, low = self.deliverable
                out["deliverable_capacity"] = (values[high] - values[low]) * factor
                if sigma is not None:
                    out["deliverable_capacity_uncertainty"] = math.hypot(sigma[high], sigma[low]) * factor
        else:
            out["values"] = {name: v * factor for name, v in zip(self.names + [f"output_{i}" for i in
                                                                                range(len(self.names), len(values))],
                                                                     values, strict=False)}
        return out


def _element(i: int) -> ColumnElement[Any]:
    """Element ``i`` of the ``Prediction.values`` JSON list, as a float, on SQLite and PostgreSQL."""
    return Prediction.values[i].as_float()


def unit_factor(units: str, density_g_cm3: float | None) -> float | None:
    """Multiplier from the model's mol/kg to ``units`` for a structure (None: it has no density to convert with)."""
    if units != CM3_STP_PER_CM3:
        return 1.0
    if not density_g_cm3:
        return None
    return float(mol_per_kg_to_cm3_stp_per_cm3(1.0, density_g_cm3))


__all__ = ["DELIVERABLE", "VALUE", "Outputs", "point_key", "unit_factor"]
