"""How sure a prediction is: a calibrated standard deviation and the applicability domain.

Pure numpy, no I/O besides :meth:`Domain.save` / :meth:`Domain.load`.

* **Uncertainty.** ``σ = scale · sqrt(base² + (gain · spread)²)`` per output, where ``spread`` is the standard
  deviation of the ensemble members' predictions (a single network has none: σ is then a constant). ``base``
  and ``gain`` maximise the Gaussian likelihood of the validation errors; ``scale`` then makes
  ``|y − ŷ| ≤ z·σ`` hold for the requested fraction of the validation set (z = 1.96 for 95 %). σ is in the
  prediction's unit (mol/kg for ``retnet-ch4``).
* **Applicability domain.** Each grid's fingerprint (the members' penultimate-layer features, concatenated) is
  standardized with the training set's mean and standard deviation. Its *domain score* is the mean Euclidean
  distance to its k = 5 nearest training structures; a structure is ``in_domain`` when its score is at most
  the threshold, the 95th percentile of the validation structures' scores (so about 95 % of structures like
  the training data are in domain, and a framework unlike any of them is not).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import norm

#: Fraction of errors the ±z·σ interval should cover.
DEFAULT_LEVEL = 0.95
#: Nearest training structures reported and averaged into the domain score.
DEFAULT_NEIGHBOURS = 5
#: Quantile of the validation domain scores used as the in-domain threshold.
DEFAULT_DOMAIN_QUANTILE = 0.95


def z_value(level: float = DEFAULT_LEVEL) -> float:
    """Two-sided normal quantile: 1.96 for 0.95."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return float(norm.ppf(0.5 + level / 2.0))


def _as_2d(values: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{what} must be (N,) or (N, k), got shape {array.shape}")
    return array


@dataclass(frozen=True)
class SpreadCalibration:
    """``σ = scale · sqrt(base² + (gain · spread)² + (distance_gain · distance)²)`` per output, fitted on a validation
    set (tuples of length k).

    ``spread`` is the members' standard deviation, ``distance`` the structure's domain score (mean distance to
    its nearest training structures, :meth:`Domain.score`). ``base``, ``gain`` and ``distance_gain`` maximise the
    Gaussian likelihood of the validation errors (members that disagree, or a structure far from the training
    data, raise σ only as much as the errors bear out); ``scale`` then makes ±z·σ cover ``level`` of the
    validation errors exactly (finite-sample corrected).

    Attributes
    ----------
    base : tuple of float
        In the prediction's unit.
    gain, scale : tuple of float
        Dimensionless.
    distance_gain : tuple of float
        Prediction unit per unit of domain score (0: the distance is not used).
    level : float
        Intended coverage of ±z·σ.
    method : str
        ``"ensemble_spread"`` (member standard deviation) or ``"constant"`` (one network: gain 0).
    val_coverage : tuple of float
        Coverage of ±z·σ on the validation set it was fitted on (≈ level by construction).
    n_val : int
    """

    base: tuple[float, ...]
    gain: tuple[float, ...]
    scale: tuple[float, ...]
    distance_gain: tuple[float, ...] = ()
    level: float = DEFAULT_LEVEL
    method: str = "ensemble_spread"
    val_coverage: tuple[float, ...] = ()
    n_val: int = 0

    def sigma(self, spread: np.ndarray, distance: np.ndarray | None = None) -> np.ndarray:
        """Calibrated σ (N, k) from member spreads (N, k) (for ``"constant"``, any array of that shape) and domain
        scores (N,) (ignored when the calibration does not use them)."""
        spread = _as_2d(spread, "spread")
        base, gain = np.asarray(self.base), np.asarray(self.gain)
        if self.method == "constant":
            spread = np.zeros_like(spread)
        var = base**2 + (gain * spread) ** 2
        if self.distance_gain and distance is not None:
            var = var + (np.asarray(self.distance_gain) * np.asarray(distance, dtype=np.float64)[:, None]) ** 2
        return np.asarray(self.scale) * np.sqrt(var)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the model card (``card.uncertainty``)."""
        return {"method": self.method, "level": self.level, "base": list(self.base), "gain": list(self.gain),
                "distance_gain": list(self.distance_gain), "scale": list(self.scale),
                "val_coverage": list(self.val_coverage), "n_val": self.n_val,
                "formula": "sigma = scale * sqrt(base^2 + (gain * member_std)^2 + (distance_gain * domain_score)^2); "
                           "base, gains: Gaussian likelihood of validation errors; scale: +-z(level)*sigma covers "
                           "`level` of them"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpreadCalibration:
        """Inverse of :meth:`to_dict`."""
        def floats(key: str) -> tuple[float, ...]:
            return tuple(float(x) for x in data.get(key, ()))

        return cls(base=floats("base"), gain=floats("gain"), scale=floats("scale"),
                   distance_gain=floats("distance_gain"),
                   level=float(data.get("level", DEFAULT_LEVEL)), method=str(data.get("method", "ensemble_spread")),
                   val_coverage=floats("val_coverage"), n_val=int(data.get("n_val", 0)))


def _fit_variance(residual: np.ndarray, features: list[np.ndarray]) -> list[float]:
    """Maximum-likelihood ``[base, gain_1, ...]`` of ``residual ~ N(0, base² + Σ gain_i² · feature_i²)``."""
    from scipy.optimize import minimize

    r2 = residual**2
    rms = float(np.sqrt(np.mean(r2))) or 1.0
    f2 = [f**2 / max(float(np.mean(f**2)), 1e-18) for f in features]  # features scaled to mean square 1

    def nll(log_params: np.ndarray) -> float:
        w = np.exp(2 * log_params)
        var = rms**2 * (w[0] + sum(wi * fi for wi, fi in zip(w[1:], f2, strict=True)))
        return float(np.sum(np.log(var) + r2 / var))

    starts = [np.full(1 + len(f2), 0.5)] + [np.array([1.0] + [1e-3 if i != j else 1.0 for i in range(len(f2))])
                                            for j in range(len(f2))] + [np.array([1.0] + [1e-3] * len(f2))]
    best = min((minimize(nll, np.log(x), method="Nelder-Mead", options={"maxiter": 4000}) for x in starts),
               key=lambda res: res.fun)
    w = np.exp(best.x)
    return [float(w[0] * rms)] + [float(wi * rms / np.sqrt(max(float(np.mean(f**2)), 1e-18)))
                                  for wi, f in zip(w[1:], features, strict=True)]


def calibrate_spread(y_true: np.ndarray, y_pred: np.ndarray, spread: np.ndarray | None,
                     level: float = DEFAULT_LEVEL, distance: np.ndarray | None = None) -> SpreadCalibration:
    """Fit the calibration on validation labels, predictions, member spreads ((N,) or (N, k)) and, optionally, the
    structures' domain scores (N,).

    ``spread=None`` (one network) leaves the members' term out (gain 0; ``"constant"`` without a distance).
    A NaN label (an output not labelled for that structure, e.g. an isotherm point not simulated) is left out of
    that output's fit; every output needs at least 2 labels.
    """
    y, p = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred")
    if y.shape != p.shape or len(y) < 2:
        raise ValueError(f"need ≥ 2 matching labels and predictions, got {y.shape} and {p.shape}")
    method = "constant" if spread is None else "ensemble_spread"
    s = np.zeros_like(p) if spread is None else _as_2d(spread, "spread")
    if s.shape != p.shape:
        raise ValueError(f"spread shape {s.shape} differs from the predictions' {p.shape}")
    d = None if distance is None else np.asarray(distance, dtype=np.float64).reshape(len(y))
    labelled = np.isfinite(y)
    if (labelled.sum(axis=0) < 2).any():
        raise ValueError(f"every output needs ≥ 2 finite labels, got {labelled.sum(axis=0).tolist()}")
    base, gain, distance_gain, scale = [], [], [], []
    for j in range(p.shape[1]):
        rows = labelled[:, j]
        residual = y[rows, j] - p[rows, j]
        features = ([] if spread is None else [s[rows, j]]) + ([] if d is None else [d[rows]])
        fitted = _fit_variance(residual, features) if features else [float(np.sqrt(np.mean(residual ** 2)))]
        # a floor under σ: a quarter of the validation RMSE (near-duplicates of training structures still err)
        base.append(max(fitted[0], 0.25 * float(np.sqrt(np.mean(residual ** 2)))))
        gain.append(fitted[1] if spread is not None else 0.0)
        distance_gain.append(fitted[-1] if d is not None else 0.0)
        var = base[-1] ** 2 + (gain[-1] * (0.0 if spread is None else s[rows, j])) ** 2
        if d is not None:
            var = var + (distance_gain[-1] * d[rows]) ** 2
        ratio = np.abs(residual) / np.sqrt(var)
        q = min(1.0, level * (len(residual) + 1) / len(residual))
        scale.append(float(max(np.quantile(ratio, q, method="higher") / z_value(level), 1e-9)))
    dg = tuple(distance_gain) if d is not None else ()
    fitted_cal = SpreadCalibration(tuple(base), tuple(gain), tuple(scale), dg, level, method, n_val=len(y))
    return SpreadCalibration(tuple(base), tuple(gain), tuple(scale), dg, level, method,
                             tuple(coverage(y, p, fitted_cal.sigma(s, d), level)), len(y))


def coverage(y_true: np.ndarray, y_pred: np.ndarray, sigma: np.ndarray, level: float = DEFAULT_LEVEL) -> list[float]:
    """Fraction of |y − ŷ| ≤ z(level)·σ, per output, over the finite labels (NaN: not labelled)."""
    y, p, s = _as_2d(y_true, "y_true"), _as_2d(y_pred, "y_pred"), _as_2d(sigma, "sigma")
    inside = np.abs(y - p) <= z_value(level) * s
    labelled = np.isfinite(y)
    return [float(inside[labelled[:, j], j].mean()) if labelled[:, j].any() else float("nan")
            for j in range(y.shape[1])]


def calibration_curve(y_true: np.ndarray, y_pred: np.ndarray, sigma: np.ndarray, bins: int = 8
                      ) -> list[dict[str, float]]:
    """Predicted σ against observed RMSE in bins of equal count (output 0): the calibration plot's points."""
    y, p, s = _as_2d(y_true, "y_true")[:, 0], _as_2d(y_pred, "y_pred")[:, 0], _as_2d(sigma, "sigma")[:, 0]
    order = np.argsort(s)
    out = []
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            out.append({"sigma": float(np.sqrt(np.mean(s[chunk] ** 2))),
                        "rmse": float(np.sqrt(np.mean((y[chunk] - p[chunk]) ** 2))), "n": int(len(chunk))})
    return out


@dataclass
class Neighbour:
    """One training structure near a query: its name, the distance (standardized fingerprint units), its label."""

    name: str
    distance: float
    label: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "distance": round(self.distance, 4), "label": self.label}


@dataclass
class Domain:
    """Training fingerprints, their names and labels, and the in-domain threshold (see the module docstring)."""

    fingerprints: np.ndarray  # (n, d), already standardized
    mean: np.ndarray  # (d,)
    std: np.ndarray  # (d,)
    names: list[str]
    labels: np.ndarray  # (n,) first target, in the prediction's unit
    threshold: float
    k: int = DEFAULT_NEIGHBOURS
    quantile: float = DEFAULT_DOMAIN_QUANTILE
    summary: dict[str, Any] = field(default_factory=dict)

    def standardize(self, fingerprints: np.ndarray) -> np.ndarray:
        return (np.asarray(fingerprints, dtype=np.float64) - self.mean) / self.std

    def nearest(self, fingerprints: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Distances and indices (N, k) of the k nearest training structures, nearest first (``chunk`` queries at
        a time, so memory stays at chunk × n_train distances)."""
        q = self.standardize(np.atleast_2d(fingerprints))
        k = min(self.k, len(self.fingerprints))
        norms = np.sum(self.fingerprints**2, axis=1)[None, :]
        dists, idxs = [], []
        for start in range(0, max(len(q), 1), chunk):
            part_q = q[start:start + chunk]
            # the product in torch, on its thread pool: numpy's BLAS pool would spin beside torch's between
            # forward passes and slow the next convolutions by ~15 % (measured on 2 cores)
            product = (torch.from_numpy(part_q) @ torch.from_numpy(self.fingerprints).T).numpy()
            dist = np.sqrt(np.maximum(np.sum(part_q**2, axis=1)[:, None] + norms - 2.0 * product, 0.0))
            idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
            part = np.take_along_axis(dist, idx, axis=1)
            order = np.argsort(part, axis=1)
            dists.append(np.take_along_axis(part, order, axis=1))
            idxs.append(np.take_along_axis(idx, order, axis=1))
        return np.concatenate(dists), np.concatenate(idxs)

    def score(self, fingerprints: np.ndarray) -> np.ndarray:
        """Mean distance to the k nearest training structures, (N,)."""
        return self.nearest(fingerprints)[0].mean(axis=1)

    def assess(self, fingerprints: np.ndarray) -> tuple[np.ndarray, list[list[Neighbour]]]:
        """``in_domain`` (N,) bool and the neighbours of each query."""
        dist, idx = self.nearest(fingerprints)
        inside = dist.mean(axis=1) <= self.threshold
        neighbours = [[Neighbour(self.names[j], float(d), float(self.labels[j])) for d, j in zip(row_d, row_i,
                                                                                                 strict=True)]
                      for row_d, row_i in zip(dist, idx, strict=True)]
        return inside, neighbours

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` (no pickles)."""
        with open(path, "wb") as handle:
            np.savez_compressed(handle, fingerprints=self.fingerprints.astype(np.float32), mean=self.mean,
                                std=self.std, names=np.asarray(self.names, dtype=str), labels=self.labels,
                                threshold=np.float64(self.threshold), k=np.int64(self.k),
                                quantile=np.float64(self.quantile))

    @classmethod
    def load(cls, path: str | Path) -> Domain:
        """Read what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as data:
            return cls(fingerprints=data["fingerprints"].astype(np.float64), mean=data["mean"], std=data["std"],
                       names=[str(n) for n in data["names"]], labels=data["labels"].astype(np.float64),
                       threshold=float(data["threshold"]), k=int(data["k"]), quantile=float(data["quantile"]))

    def card_summary(self) -> dict[str, Any]:
        """What the model card says about the domain (``card.domain``)."""
        return {"file": DOMAIN_FILE, "k": self.k, "quantile": self.quantile, "threshold": self.threshold,
                "n_train": len(self.names), "fingerprint_dims": int(self.fingerprints.shape[1]),
                "space": "members' 20-d penultimate features, concatenated, standardized on the training set",
                "score": "mean Euclidean distance to the k nearest training structures",
                **self.summary}


#: File name of the domain inside a model folder.
DOMAIN_FILE = "domain.npz"


def fit_domain(train_fingerprints: np.ndarray, names: list[str], labels: np.ndarray, val_fingerprints: np.ndarray,
               *, k: int = DEFAULT_NEIGHBOURS, quantile: float = DEFAULT_DOMAIN_QUANTILE) -> Domain:
    """Standardize on the training fingerprints and set the threshold at the validation scores' ``quantile``."""
    train = np.asarray(train_fingerprints, dtype=np.float64)
    if train.ndim != 2 or len(train) != len(names) or len(train) != len(labels):
        raise ValueError(f"fingerprints {train.shape}, {len(names)} names and {len(labels)} labels must agree")
    if len(train) < k:
        raise ValueError(f"need at least k={k} training structures, got {len(train)}")
    mean = train.mean(axis=0)
    std = np.maximum(train.std(axis=0), 1e-6)
    domain = Domain((train - mean) / std, mean, std, list(names), np.asarray(labels, dtype=np.float64)[:],
                    threshold=np.inf, k=k, quantile=quantile)
    val_scores = domain.score(val_fingerprints)
    domain.threshold = float(np.quantile(val_scores, quantile))
    domain.summary = {"val_in_domain": float(np.mean(val_scores <= domain.threshold)), "n_val": int(len(val_scores))}
    return domain
