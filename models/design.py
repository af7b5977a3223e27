"""Inverse design by screening: which known structures come closest to a target uptake or isotherm?

Pure computation. Candidates are rows of predicted quantities (e.g. ``uptake_5.8bar``, ``uptake_65bar``,
``deliverable_65_5.8bar``, in one unit) with their σ; a target gives a value for some of those quantities and a
tolerance (same unit). Each candidate gets

- ``distance``: the root mean square of (predicted − target) over the target's quantities;
- ``within_tolerance``: whether every predicted quantity lies within ± tolerance of its target;
- ``p_within``: the probability that the *true* values all lie within tolerance, if each true value is
  Normal(predicted, σ) and the quantities are independent (None without σ): a candidate with a close but
  uncertain prediction scores lower than an equally close, confident one.

Candidates are ranked by distance (then by ``p_within``, higher first). The library of CoRE MOF predictions
that the service ranks besides its own predictions is a small table (``library.csv.gz`` in a model folder,
made by ``scripts/design_library.py``): one row per structure, no grids.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: File name of a model's library of predictions (inside its folder / storage prefix).
LIBRARY_FILE = "library.csv.gz"
#: Suffix of a quantity's σ column in a library table.
SIGMA_SUFFIX = "_sigma"
#: The library's fingerprints (``names``, ``fingerprints`` float16), beside it: nearest real structures of designs.
LIBRARY_FINGERPRINTS = "library_fingerprints.npz"


def design_grid_key(job_id: str, index: int) -> str:
    """Storage key of a design job's generated grid ``index`` (``.npy``)."""
    return f"designs/{job_id}/{index}.npy"


def quantities_of(values: np.ndarray, sigma: np.ndarray | None, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantities ``values @ matrix`` (N, m) of outputs (N, k), and their σ combining the outputs' σ as if
    independent (NaN without σ). ``matrix`` (k, m): e.g. :meth:`app.services.outputs.Outputs.quantity_matrix`."""
    values = np.asarray(values, dtype=np.float64)
    out = values @ matrix
    if sigma is None:
        return out, np.full_like(out, np.nan)
    return out, np.sqrt((np.asarray(sigma, dtype=np.float64) ** 2) @ (matrix ** 2))


@dataclass(frozen=True)
class Ranking:
    """The top candidates, best first.

    Attributes
    ----------
    index : np.ndarray of int
        Rows of the candidate table.
    distance : np.ndarray
        RMS deviation from the target, in the target's unit.
    within_tolerance : np.ndarray of bool
    p_within : np.ndarray or None
    """

    index: np.ndarray
    distance: np.ndarray
    within_tolerance: np.ndarray
    p_within: np.ndarray | None


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def rank_candidates(values: np.ndarray, target: Sequence[float], tolerance: Sequence[float], *,
                    sigma: np.ndarray | None = None, top_k: int = 10, eligible: np.ndarray | None = None) -> Ranking:
    """Rank candidates by their distance to a target.

    Parameters
    ----------
    values : np.ndarray, shape (N, m)
        Predicted quantities of N candidates (the target's m quantities, in its unit); NaN rows never rank.
    target, tolerance : sequence of float, length m
        Target values and half-widths (> 0) of the acceptable band, same unit.
    sigma : np.ndarray, shape (N, m), optional
        One standard deviation of each prediction.
    top_k : int
        How many to return (fewer when fewer candidates are eligible).
    eligible : np.ndarray of bool, shape (N,), optional
        Candidates allowed to rank (e.g. only those in the applicability domain).
    """
    values = np.asarray(values, dtype=np.float64)
    t, tol = np.asarray(target, dtype=np.float64), np.asarray(tolerance, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(t) or len(tol) != len(t):
        raise ValueError(f"values {values.shape}, target {t.shape} and tolerance {tol.shape} do not match")
    if not len(t) or (tol <= 0).any() or not np.isfinite(np.concatenate([t, tol])).all():
        raise ValueError("need at least one target quantity, finite targets and tolerances > 0")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    deviation = values - t
    distance = np.sqrt(np.mean(deviation**2, axis=1))
    ok = np.isfinite(distance) if eligible is None else np.isfinite(distance) & np.asarray(eligible, dtype=bool)
    p_within = None
    if sigma is not None:
        s = np.maximum(np.asarray(sigma, dtype=np.float64), 1e-12)
        inside = _normal_cdf((t + tol - values) / s) - _normal_cdf((t - tol - values) / s)
        p_within = np.prod(np.clip(inside, 0.0, 1.0), axis=1)
    candidates = np.flatnonzero(ok)
    secondary = -p_within[candidates] if p_within is not None else np.zeros(len(candidates))
    order = candidates[np.lexsort((secondary, distance[candidates]))][:top_k]
    within = (np.abs(deviation[order]) <= tol).all(axis=1)
    return Ranking(order, distance[order], within, None if p_within is None else p_within[order])


def read_library(source: str | Path | bytes) -> pd.DataFrame:
    """A library table (a ``.csv.gz`` path or its bytes): ``name``, ``sha256``, ``density_g_cm3``, ``in_domain``,
    then a value and a ``_sigma`` column per predicted quantity (mol/kg)."""
    table = pd.read_csv(io.BytesIO(source), compression="gzip") if isinstance(source, bytes) else pd.read_csv(source)
    missing = {"name", "sha256", "density_g_cm3"} - set(table.columns)
    if missing:
        raise ValueError(f"library lacks column(s) {', '.join(sorted(missing))}")
    return table


def library_quantities(table: pd.DataFrame) -> list[str]:
    """The predicted quantities of a library table (its value columns, in file order)."""
    fixed = {"name", "sha256", "density_g_cm3", "in_domain"}
    return [c for c in table.columns if c not in fixed and not c.endswith(SIGMA_SUFFIX)]


def target_arrays(target: Mapping[str, float], tolerance: float | Mapping[str, float]) -> tuple[list[str], list[float],
                                                                                               list[float]]:
    """(quantities, values, tolerances) of a target, the tolerance given once or per quantity."""
    keys = list(target)
    tol = [float(tolerance[k]) if isinstance(tolerance, Mapping) else float(tolerance) for k in keys]
    return keys, [float(target[k]) for k in keys], tol


__all__ = ["LIBRARY_FILE", "LIBRARY_FINGERPRINTS", "Ranking", "SIGMA_SUFFIX", "design_grid_key", "library_quantities",
           "quantities_of", "rank_candidates", "read_library", "target_arrays"]
