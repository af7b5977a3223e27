"""Report figures: parity plot, learning curves and training history (PNG, matplotlib Agg).

Figures are built with the object-oriented API (:class:`matplotlib.figure.Figure`),
never through pyplot's global figure registry, so plotting is safe in worker
threads and leaks no open figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Resolution of saved PNGs (dots per inch).
DPI = 150
#: Labels of the metrics written on a parity plot.
_METRIC_LABELS = {"r2": "R²", "mae": "MAE", "rmse": "RMSE", "spearman": "Spearman ρ"}


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png", bbox_inches="tight")
    return out


def _field(metric: Any, name: str) -> float:
    """Read value / ci_low / ci_high from a Metric or a plain dict."""
    return float(metric[name] if isinstance(metric, Mapping) else getattr(metric, name))


def _metrics_text(metrics: Mapping[str, Any], unit: str) -> str:
    lines = []
    for key, label in _METRIC_LABELS.items():
        if key not in metrics:
            continue
        value, low, high = (_field(metrics[key], f) for f in ("value", "ci_low", "ci_high"))
        suffix = f" {unit}" if key in ("mae", "rmse") and unit else ""
        ci = f" [{low:.3g}, {high:.3g}]" if np.isfinite([low, high]).all() else ""
        lines.append(f"{label} = {value:.3g}{ci}{suffix}")
    return "\n".join(lines)


def parity_plot(
    y_true: np.ndarray | Sequence[float],
    y_pred: np.ndarray | Sequence[float],
    path: str | Path,
    *,
    title: str,
    unit: str,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Scatter predicted against true values with the y = x line.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n,)
        Labels and predictions in ``unit``.
    path : str or Path
        PNG file to write (parent folders are created).
    title : str
        Figure title, e.g. the property and model reference.
    unit : str
        Unit of both axes, e.g. "mol/kg".
    metrics : mapping, optional
        Output of :func:`models.metrics.regression_metrics` (Metric objects or dicts),
        written in the upper-left corner with the 95% intervals.

    Returns
    -------
    Path
        The written file.
    """
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred sizes differ: {t.size} vs {p.size}")
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    ax.scatter(t, p, s=14, alpha=0.7, edgecolors="none")
    both = np.concatenate([t, p]) if t.size else np.array([0.0, 1.0])
    low, high = float(both.min()), float(both.max())
    pad = 0.05 * (high - low or 1.0)
    limits = (low - pad, high + pad)
    ax.plot(limits, limits, color="black", linewidth=1, linestyle="--", label="y = x")
    ax.set(xlim=limits, ylim=limits, aspect="equal", title=title)
    ax.set_xlabel(f"true ({unit})" if unit else "true")
    ax.set_ylabel(f"predicted ({unit})" if unit else "predicted")
    if metrics:
        ax.text(0.03, 0.97, _metrics_text(metrics, unit), transform=ax.transAxes, va="top", fontsize=9,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})
    return _save(fig, path)


def learning_curve_plot(
    curves: Mapping[str, Sequence[tuple[int, float, float, float]]],
    path: str | Path,
    *,
    ylabel: str = "test R²",
) -> Path:
    """Plot test metric against training-set size, one line per model.

    Parameters
    ----------
    curves : mapping of str to list of (size, value, ci_low, ci_high)
        Per model (e.g. "RetNet", "RF on energy histogram"), points with the
        training-set size and the metric with its confidence interval.
    path : str or Path
        PNG file to write.
    ylabel : str
        Label of the metric axis.

    Returns
    -------
    Path
        The written file.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for label, points in curves.items():
        data = np.asarray(sorted(points), dtype=np.float64).reshape(-1, 4)
        if not len(data):
            continue
        sizes, values, lows, highs = data.T
        errors = np.vstack([values - lows, highs - values]).clip(min=0.0)
        ax.errorbar(sizes, values, yerr=errors, marker="o", markersize=4, capsize=3, label=label)
    ax.set_xscale("log")
    ticks: list[int] = []
    for size in sorted({int(p[0]) for points in curves.values() for p in points}):
        if not ticks or size > 1.2 * ticks[-1]:  # labelled sizes, none crowding the previous one
            ticks.append(size)
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel("training-set size")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def history_plot(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Plot training (and validation) MSE per epoch, and validation R² when present.

    Parameters
    ----------
    history : sequence of dict
        ``TrainResult.history``: {"epoch", "train_loss", "val_loss", "val_r2"} per epoch.
    path : str or Path
        PNG file to write.

    Returns
    -------
    Path
        The written file.
    """
    epochs = [int(e["epoch"]) for e in history]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(epochs, [e["train_loss"] for e in history], marker=".", label="train loss")
    val = [(ep, e.get("val_loss"), e.get("val_r2")) for ep, e in zip(epochs, history, strict=True)]
    val_loss = [(ep, v) for ep, v, _ in val if v is not None]
    if val_loss:
        ax.plot(*zip(*val_loss, strict=True), marker=".", label="validation loss")
    losses = [e["train_loss"] for e in history] + [v for _, v in val_loss]
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (label units²)")
    handles, labels = ax.get_legend_handles_labels()
    val_r2 = [(ep, r) for ep, _, r in val if r is not None]
    if val_r2:
        twin = ax.twinx()
        twin.plot(*zip(*val_r2, strict=True), color="tab:green", marker=".", label="validation R²")
        twin.set_ylabel("validation R²")
        # The first epochs' R² can be hugely negative; below −1 the curve says nothing but squashes the rest.
        low = min(r for _, r in val_r2)
        if low < -1.0:
            twin.set_ylim(bottom=-1.0)
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    if handles:
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=len(handles),
                  fontsize="small", frameon=False)
    return _save(fig, path)


def calibration_plot(curve: Sequence[Mapping[str, float]], path: str | Path, *, unit: str = "",
                     coverage: float | None = None, title: str = "Uncertainty calibration") -> Path:
    """Predicted σ against the observed RMSE in bins of equal count (a calibrated σ lies on the diagonal)."""
    sigma = np.array([p["sigma"] for p in curve], dtype=float)
    rmse = np.array([p["rmse"] for p in curve], dtype=float)
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.subplots()
    top = float(max(sigma.max(initial=0.0), rmse.max(initial=0.0)) * 1.1 or 1.0)
    ax.plot([0, top], [0, top], color="0.6", lw=1, ls="--", label="ideal")
    ax.plot(sigma, rmse, "o-", color="C0", label="binned test structures")
    suffix = f" ({unit})" if unit else ""
    ax.set_xlabel(f"predicted σ{suffix}")
    ax.set_ylabel(f"observed RMSE{suffix}")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_title(title)
    if coverage is not None:
        ax.text(0.04, 0.94, f"±1.96σ coverage: {coverage:.0%}", transform=ax.transAxes, va="top")
    ax.legend(loc="lower right", frameon=False)
    return _save(fig, path)


def isotherm_plot(pressures_bar: Sequence[float], simulated: Sequence[Sequence[float]],
                  predicted: Sequence[Sequence[float]], sigma: Sequence[Sequence[float]] | None,
                  names: Sequence[str], path: str | Path, *, unit: str = "mol/kg",
                  title: str = "Predicted and simulated isotherms") -> Path:
    """Simulated (GCMC, markers) against predicted (lines, ±1.96σ band) isotherms, one colour per structure."""
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.subplots()
    p = np.asarray(pressures_bar, dtype=float)
    for i, name in enumerate(names):
        color = f"C{i % 10}"
        pred = np.asarray(predicted[i], dtype=float)
        ax.plot(p, pred, "-", color=color, lw=1.5, label=name)
        if sigma is not None:
            s = 1.96 * np.asarray(sigma[i], dtype=float)
            ax.fill_between(p, pred - s, pred + s, color=color, alpha=0.15, lw=0)
        ax.plot(p, np.asarray(simulated[i], dtype=float), "o", color=color, ms=5, mfc="white")
    ax.set_xlabel("pressure (bar)")
    ax.set_ylabel(f"CH4 uptake ({unit})")
    ax.set_xlim(0, float(p.max()) * 1.05 if len(p) else 1.0)
    ax.set_ylim(bottom=0)
    ax.set_title(title + "\nlines: predicted (±1.96σ), circles: GCMC", fontsize=9)
    if names:
        ax.legend(loc="upper left", frameon=False, fontsize=7)
    return _save(fig, path)
