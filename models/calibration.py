"""Fit a trained model's uncertainty calibration and applicability domain, and score them on held-out data.

Shared by the shipped model's recipe (``scripts/ch4_model.py calibrate``) and service training jobs
(:mod:`models.training_job`): σ is calibrated on the validation split, the domain is built from the training
split's fingerprints with its threshold set on the validation split, and both are *scored* on the test split
(the coverage of ±1.96σ, the share in domain, and the error inside vs outside the domain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.hybrid import HybridTrees
from models.training import member_outputs_grids
from models.uncertainty import (
    DEFAULT_LEVEL,
    Domain,
    SpreadCalibration,
    calibrate_spread,
    calibration_curve,
    coverage,
    fit_domain,
)


@dataclass
class Calibration:
    """A fitted calibration and domain, with their held-out scores.

    Attributes
    ----------
    spread : SpreadCalibration
    domain : Domain
    test : dict
        ``coverage`` (per output), ``in_domain`` (fraction), ``mae_in_domain`` / ``mae_out_of_domain``
        (mol/kg or the model's unit; None when a side is empty), ``n``; empty without a test split.
    curve : list of dict
        Predicted σ against observed RMSE in bins (on the test split, else the validation split).
    """

    spread: SpreadCalibration
    domain: Domain
    test: dict[str, Any]
    curve: list[dict[str, float]]

    def card_fields(self) -> dict[str, Any]:
        """``uncertainty`` and ``domain`` of the model card."""
        uncertainty = {**self.spread.to_dict(), "test_coverage": self.test.get("coverage"),
                       "curve": self.curve, "curve_split": "test" if self.test else "validation"}
        domain = {**self.domain.card_summary(), **{f"test_{k}": v for k, v in self.test.items() if k != "coverage"}}
        return {"uncertainty": uncertainty, "domain": domain}


def _outputs(model: Any, standardizer: Any, grids: np.ndarray, descriptors: np.ndarray | None = None,
             trees: HybridTrees | None = None, tree_rows: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Mean (N, k), member spread (N, k) or None for one network, fingerprints (N, d); a hybrid model's blend
    and spread (:meth:`models.hybrid.HybridTrees.combine`) when ``trees`` and their rows are given."""
    members, fingerprints = member_outputs_grids(model, standardizer, grids, descriptors=descriptors)
    if trees is not None and tree_rows is not None:
        return (*trees.combine(members, tree_rows), fingerprints)
    spread = members.std(axis=0, ddof=1) if len(members) > 1 else None
    return members.mean(axis=0), spread, fingerprints


def calibrate_model(model: Any, standardizer: Any, *, train_x: np.ndarray, train_y: np.ndarray,
                    train_names: list[str], val_x: np.ndarray, val_y: np.ndarray,
                    test_x: np.ndarray | None = None, test_y: np.ndarray | None = None,
                    level: float = DEFAULT_LEVEL, descriptors: dict[str, np.ndarray] | None = None,
                    trees: HybridTrees | None = None, tree_rows: dict[str, np.ndarray] | None = None) -> Calibration:
    """Calibrate σ on the validation split, build the domain, score both on the test split.

    Grids are raw (N, 25, 25, 25); labels (N,) or (N, k) in the model's unit. ``descriptors`` (a descriptor
    model's standardized inputs) maps ``"train"``, ``"val"`` and ``"test"`` to each split's (N, m) array;
    ``tree_rows`` maps ``"val"`` and ``"test"`` to a hybrid model's tree inputs (``trees``), whose blend is then
    what σ is calibrated and scored on.
    """
    d = descriptors or {}
    rows = tree_rows or {}
    needed = ["val"] + (["test"] if test_x is not None else [])
    if trees is not None and any(rows.get(split) is None for split in needed):
        raise ValueError(f"a hybrid model's calibration needs the trees' rows of the {' and '.join(needed)} split")
    val_y = np.asarray(val_y, dtype=np.float64).reshape(len(val_x), -1)
    train_y = np.asarray(train_y, dtype=np.float64).reshape(len(train_x), -1)
    val_mean, val_spread, val_fp = _outputs(model, standardizer, val_x, d.get("val"), trees, rows.get("val"))
    _, _, train_fp = _outputs(model, standardizer, train_x, d.get("train"))
    domain = fit_domain(train_fp, list(train_names), train_y[:, 0], val_fp)
    val_score = domain.score(val_fp)
    spread = calibrate_spread(val_y, val_mean, val_spread, level, distance=val_score)
    test: dict[str, Any] = {}
    curve_y, curve_p = val_y, val_mean
    curve_s = spread.sigma(val_mean if val_spread is None else val_spread, val_score)
    if test_x is not None and test_y is not None and len(test_x) >= 2:
        test_y = np.asarray(test_y, dtype=np.float64).reshape(len(test_x), -1)
        mean, member_spread, fp = _outputs(model, standardizer, test_x, d.get("test"), trees, rows.get("test"))
        sigma = spread.sigma(mean if member_spread is None else member_spread, domain.score(fp))
        inside, _ = domain.assess(fp)
        err = np.abs(test_y[:, 0] - mean[:, 0])
        test = {"coverage": coverage(test_y, mean, sigma, level), "in_domain": float(inside.mean()),
                "mae_in_domain": float(err[inside].mean()) if inside.any() else None,
                "mae_out_of_domain": float(err[~inside].mean()) if (~inside).any() else None, "n": int(len(test_x))}
        curve_y, curve_p, curve_s = test_y, mean, sigma
    return Calibration(spread, domain, test, calibration_curve(curve_y, curve_p, curve_s))
