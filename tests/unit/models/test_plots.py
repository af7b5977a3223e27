"""Unit tests for models.plots: each figure is written as a non-empty, valid PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.metrics import regression_metrics
from models.plots import history_plot, learning_curve_plot, parity_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_parity_plot_with_and_without_metrics(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.gamma(3.0, 1.0, 40)
    p = y + rng.normal(0, 0.3, 40)
    metrics = regression_metrics(y, p, n_boot=200)
    out = parity_plot(y, p, tmp_path / "sub" / "parity.png", title="CH4 uptake", unit="mol/kg", metrics=metrics)
    assert out == tmp_path / "sub" / "parity.png"
    _assert_png(out)
    dumped = {k: v.model_dump() for k, v in metrics.items()}
    _assert_png(parity_plot(y, p, tmp_path / "dicts.png", title="t", unit="", metrics=dumped))
    _assert_png(parity_plot(y, p, tmp_path / "plain.png", title="t", unit="mol/kg"))
    with pytest.raises(ValueError, match="sizes differ"):
        parity_plot(y, p[:-1], tmp_path / "bad.png", title="t", unit="")


def test_learning_curve_plot(tmp_path: Path) -> None:
    curves = {
        "RetNet": [(50, 0.6, 0.5, 0.7), (100, 0.7, 0.62, 0.78), (300, 0.85, 0.8, 0.9)],
        "RF histogram": [(300, 0.8, 0.75, 0.85), (50, 0.55, 0.4, 0.65)],
    }
    _assert_png(learning_curve_plot(curves, tmp_path / "lc.png"))
    _assert_png(learning_curve_plot(curves, tmp_path / "lc_mae.png", ylabel="test MAE (mol/kg)"))


def test_history_plot_with_and_without_validation(tmp_path: Path) -> None:
    with_val = [
        {"epoch": e, "epochs": 5, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_r2": 0.1 * e} for e in range(1, 6)
    ]
    _assert_png(history_plot(with_val, tmp_path / "h1.png"))
    no_val = [{**e, "val_loss": None, "val_r2": None} for e in with_val]
    _assert_png(history_plot(no_val, tmp_path / "h2.png"))
