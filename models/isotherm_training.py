"""Fitting the isotherm heads of an :class:`models.isotherm.IsothermEnsemble` on a frozen backbone's fingerprints.

Isotherm labels are scarce and incomplete: every labelled structure has its 5.8 bar uptake, far fewer have the
whole curve (GCMC at 35 and 65 bar costs 4-5 times as much). The heads are therefore fitted on a **masked** loss:
a missing point (NaN) contributes nothing, each pressure's squared error is divided by that pressure's label
variance (so 65 bar, with uptakes several times those at 1 bar, does not drown the others), and the loss is the
mean over the labelled points. The backbone is frozen, so its fingerprints are computed once and the heads train
on them alone: thousands of epochs take seconds on a CPU.

Each member's head sees a bootstrap resample of the training structures (seeded), so the members' spread also
reflects how much the heads depend on the few complete curves. Early stopping on the validation loss (masked the
same way) picks each head's epoch.

Pure computation: arrays in, trained heads and a history out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from models.isotherm import IsothermEnsemble


@dataclass(frozen=True)
class HeadFitConfig:
    """Optimisation of the heads.

    Attributes
    ----------
    epochs : int
        Full-batch Adam steps at most.
    lr : float
        Adam learning rate.
    weight_decay : float
        L2 penalty on the heads' weights (AdamW decoupled decay).
    patience : int
        Stop a head after this many steps without a better validation loss.
    early_stopping : bool
        Keep each head at its best validation step (True) or at the last of ``epochs`` steps (False: no
        validation data needed, as for out-of-fold fits whose held-out fold must not choose anything).
    bootstrap : bool
        Train each member's head on its own bootstrap resample of the training structures.
    seed : int
    """

    epochs: int = 4000
    lr: float = 1e-2
    weight_decay: float = 1e-3
    patience: int = 400
    early_stopping: bool = True
    bootstrap: bool = True
    seed: int = 0


@dataclass
class HeadFitResult:
    """What fitting the heads gave: per member, the chosen step and the loss curves (masked, standardized)."""

    best_epochs: list[int] = field(default_factory=list)
    best_val_loss: list[float] = field(default_factory=list)
    train_loss: list[list[float]] = field(default_factory=list)
    val_loss: list[list[float]] = field(default_factory=list)


def pressure_scales(labels: np.ndarray) -> np.ndarray:
    """Standard deviation of each pressure's labels (NaN ignored; 1 where fewer than 2 labels or zero spread)."""
    labels = np.asarray(labels, dtype=np.float64)
    scales = np.ones(labels.shape[1])
    for j in range(labels.shape[1]):
        column = labels[:, j][np.isfinite(labels[:, j])]
        if len(column) >= 2 and float(np.std(column)) > 0:
            scales[j] = float(np.std(column))
    return scales


def masked_loss(pred: torch.Tensor, target: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Mean of ((pred - target) / scale)² over the finite entries of ``target`` (0 when there are none)."""
    mask = torch.isfinite(target)
    if not bool(mask.any()):
        return pred.sum() * 0.0
    diff = (pred - torch.nan_to_num(target)) / scales
    return (diff[mask] ** 2).mean()


def mean_curve(labels: np.ndarray) -> np.ndarray:
    """Mean label per pressure (NaN ignored), made non-decreasing: the heads' starting curve."""
    labels = np.asarray(labels, dtype=np.float64)
    means = np.array([np.nanmean(labels[:, j]) if np.isfinite(labels[:, j]).any() else 0.0
                      for j in range(labels.shape[1])])
    return np.maximum.accumulate(means)


def fit_heads(
    model: IsothermEnsemble,
    train_fingerprints: np.ndarray,
    train_labels: np.ndarray,
    val_fingerprints: np.ndarray,
    val_labels: np.ndarray,
    config: HeadFitConfig | None = None,
) -> HeadFitResult:
    """Fit every member's head in place (the backbone is not touched).

    Parameters
    ----------
    model : IsothermEnsemble
    train_fingerprints, val_fingerprints : np.ndarray, shape (n_members, N, 20)
        The frozen backbone's member fingerprints (``model.backbone.member_fingerprints`` of standardized grids).
    train_labels, val_labels : np.ndarray, shape (N, k)
        Uptakes at the model's pressures, label units (mol/kg); NaN where a point is not labelled.
    config : HeadFitConfig, optional

    Returns
    -------
    HeadFitResult
    """
    config = config or HeadFitConfig()
    k = model.n_outputs
    n_members = len(model.heads)
    for name, fps, labels in (("train", train_fingerprints, train_labels), ("val", val_fingerprints, val_labels)):
        if fps.ndim != 3 or fps.shape[0] != n_members or labels.shape != (fps.shape[1], k):
            raise ValueError(f"{name}: expected fingerprints ({n_members}, N, 20) and labels (N, {k}), got "
                             f"{fps.shape} and {labels.shape}")
    if not np.isfinite(train_labels).any():
        raise ValueError("no finite training label")
    scales = torch.as_tensor(pressure_scales(train_labels), dtype=torch.float32)
    start_curve = mean_curve(train_labels)
    rng = np.random.default_rng(config.seed)
    result = HeadFitResult()
    y_val = torch.as_tensor(val_labels, dtype=torch.float32)
    for i, head in enumerate(model.heads):
        rows = (rng.integers(0, train_labels.shape[0], train_labels.shape[0]) if config.bootstrap
                else np.arange(train_labels.shape[0]))
        x = torch.as_tensor(train_fingerprints[i][rows], dtype=torch.float32)
        y = torch.as_tensor(train_labels[rows], dtype=torch.float32)
        x_val = torch.as_tensor(val_fingerprints[i], dtype=torch.float32)
        torch.manual_seed(config.seed + i)
        head.init_bias(start_curve)
        optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        best_state, best_loss, best_epoch = copy.deepcopy(head.state_dict()), float("inf"), 0
        train_curve: list[float] = []
        val_curve: list[float] = []
        head.train()
        for epoch in range(1, config.epochs + 1):
            optimizer.zero_grad()
            loss = masked_loss(head(x), y, scales)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                val = float(masked_loss(head(x_val), y_val, scales)) if len(x_val) else float(loss)
            train_curve.append(loss.item())
            val_curve.append(val)
            if not config.early_stopping:
                best_loss, best_epoch = val, epoch
                continue
            if val < best_loss - 1e-9:
                best_state, best_loss, best_epoch = copy.deepcopy(head.state_dict()), val, epoch
            elif epoch - best_epoch >= config.patience:
                break
        if config.early_stopping:
            head.load_state_dict(best_state)
        head.eval()
        result.best_epochs.append(best_epoch)
        result.best_val_loss.append(best_loss)
        result.train_loss.append(train_curve)
        result.val_loss.append(val_curve)
    return result


def fold_assignment(n: int, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0 … folds − 1) of each of n structures: a seeded permutation, as even as n allows."""
    if n < folds:
        raise ValueError(f"need at least {folds} structures for {folds} folds, got {n}")
    return np.random.default_rng(seed).permutation(n) % folds


def out_of_fold_curves(
    template: IsothermEnsemble,
    fingerprints: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int = 5,
    epochs: int,
    config: HeadFitConfig | None = None,
    seed: int = 0,
    assignment: np.ndarray | None = None,
) -> np.ndarray:
    """Member curves (n_members, N, k) of every structure from heads that never saw it (k-fold, seeded).

    Each fold's heads are fitted on the other folds for exactly ``epochs`` steps (no early stopping: the
    held-out fold chooses nothing), so the residuals are honest material for calibrating σ when the
    validation split alone holds too few complete curves. ``template`` is copied, never modified. The folds are
    ``assignment`` (N,) when given (so other out-of-fold predictions, e.g. a hybrid's trees, can share them),
    else :func:`fold_assignment` (``folds``, ``seed``).
    """
    config = config or HeadFitConfig()
    n = labels.shape[0]
    assignment = fold_assignment(n, folds, seed) if assignment is None else np.asarray(assignment)
    if assignment.shape != (n,):
        raise ValueError(f"need one fold per structure ({n}), got {assignment.shape}")
    out = np.full((len(template.heads), n, template.n_outputs), np.nan)
    for fold in np.unique(assignment):
        held, kept = assignment == fold, assignment != fold
        model = copy.deepcopy(template)
        fold_config = HeadFitConfig(epochs=epochs, lr=config.lr, weight_decay=config.weight_decay,
                                    patience=epochs, early_stopping=False, bootstrap=config.bootstrap,
                                    seed=config.seed + 1000 * (fold + 1))
        empty = np.zeros((len(template.heads), 0, fingerprints.shape[2]))
        fit_heads(model, fingerprints[:, kept], labels[kept], empty, np.zeros((0, labels.shape[1])), fold_config)
        with torch.no_grad():
            curves = model.curves_from_fingerprints(torch.as_tensor(fingerprints[:, held], dtype=torch.float32))
        out[:, held] = curves.double().numpy()
    return out


__all__ = ["HeadFitConfig", "HeadFitResult", "fit_heads", "fold_assignment", "masked_loss", "mean_curve",
           "out_of_fold_curves", "pressure_scales"]
