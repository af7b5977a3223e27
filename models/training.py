"""Training and batched inference for RetNet (tensor in, tensor out; no IO).

DESIGN.md §4, thesis recipe: MSE loss on the raw labels, Adam (lr 1e-3, betas
0.9/0.999, eps 1e-8), batch 64, 50 epochs, StepLR (step 10, gamma 0.5),
Kaiming-normal Linear init, output bias initialised to the training-label
mean, optional symmetry augmentation. Inputs are standardized with the training
set's scalar mean and std. Runs are reproducible for a given seed on CPU: the
seed drives the weight init, the validation split, the shuffling, the dropout
masks and the augmentation.

Choices not fixed by the thesis
-------------------------------
- A last mini-batch of a single sample is dropped for that epoch (BatchNorm
  cannot train on one sample); shuffling changes which sample it is.
- ``val_r2`` is the R² averaged uniformly over the outputs.
- With ``patience`` the weights of the best validation epoch are returned;
  without it, the weights of the last epoch.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from models.retnet import FINGERPRINT_SIZE, RetNet, freeze
from models.transforms import Standardizer, random_symmetry, random_translation

#: One per-epoch record: {"epoch", "epochs", "train_loss", "val_loss", "val_r2"}.
EpochEvent = dict[str, Any]
ProgressCallback = Callable[[EpochEvent], None]


#: Default upper bound of input Boltzmann factors (exp(−V/T) = 100 ⇔ V ≈ −1372 K at 298 K): above it lie
#: 0.002 % of the voxels of CoRE MOF 2019, but a single structure can reach 10⁶ and swamp the statistics.
DEFAULT_INPUT_CLIP = 100.0


class TrainConfig(BaseModel):
    """Hyper-parameters of one RetNet training run (thesis defaults).

    Attributes
    ----------
    epochs : int
        Passes over the training set.
    batch_size : int
        Samples per optimizer step.
    learning_rate : float
        Adam learning rate at epoch 1.
    betas : tuple of float
        Adam β₁, β₂.
    eps : float
        Adam ε.
    step_size : int
        StepLR period in epochs.
    gamma : float
        StepLR multiplicative decay.
    augment : bool
        Replace each training sample by a random grid symmetry each epoch.
    translate : bool
        Also shift each training sample by a random periodic translation each epoch
        (:func:`models.transforms.random_translation`; exact for any cell). Off in the
        thesis recipe.
    val_fraction : float
        Fraction of the training data split off (with ``seed``, by :func:`train_val_split`)
        for validation when no explicit validation set is given; 0 for none.
    patience : int or None
        Early stopping: stop after this many epochs without a lower validation loss and
        return the best weights. Needs a validation set.
    seed : int
        Seed of every random choice of the run.
    device : str or None
        Torch device ("cpu", "cuda", "cuda:1"); None: CUDA when available.
    freeze : {None, "conv", "all-but-output"}
        Parts kept fixed while fine-tuning (see :func:`models.retnet.freeze`).
    threads : int or None
        ``torch.set_num_threads`` during the run (restored afterwards); None: unchanged.
    input_clip : float or None
        Voxel values are clipped at this bound before standardization (see
        :class:`models.transforms.Standardizer`); None: no clipping.
    fine_tune_clip : float or None
        Fine-tuning only: clip the Boltzmann factors at this bound instead of the base model's clip (a strong binding
        site counts as saturated above it). With a few hundred labels, 5 (with vibration copies) fine-tuned the
        shipped backbone to the Extra Trees' R² at 50 labels, where the backbone's clip of 100 diverged (README,
        "Physics pre-training and vibration: learning curves"). None: the base model's standardization as it is.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=2)
    learning_rate: float = Field(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.5, gt=0.0)
    augment: bool = True
    translate: bool = False
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    patience: int | None = Field(None, ge=1)
    seed: int = 0
    device: str | None = None
    freeze: Literal["conv", "all-but-output"] | None = None
    threads: int | None = Field(None, ge=1)
    input_clip: float | None = Field(DEFAULT_INPUT_CLIP, gt=0.0)
    fine_tune_clip: float | None = Field(None, gt=0.0)

    @model_validator(mode="after")
    def _valid_betas(self) -> TrainConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"Adam betas must lie in [0, 1), got {self.betas}")
        return self


@dataclass
class TrainResult:
    """Outcome of :func:`train_retnet`.

    Attributes
    ----------
    model : RetNet
        Trained model in eval mode, on the training device.
    standardizer : Standardizer
        Input standardization to apply before ``model`` (store it with the weights).
    history : list of dict
        One event per epoch run: {"epoch", "epochs", "train_loss", "val_loss", "val_r2"}
        (losses are MSE in label units², None without validation).
    best_epoch : int
        1-based epoch whose weights ``model`` holds.
    config : TrainConfig
        The configuration of the run.
    """

    model: RetNet
    standardizer: Standardizer
    history: list[EpochEvent] = field(default_factory=list)
    best_epoch: int = 0
    config: TrainConfig = field(default_factory=TrainConfig)
    #: The :class:`models.descriptors.DescriptorSpec` of a descriptor RetNet's inputs (set by whoever computed them).
    descriptors: Any = None

    @property
    def epochs_run(self) -> int:
        """Epochs actually run (fewer than ``config.epochs`` after early stopping)."""
        return len(self.history)


def resolve_device(device: torch.device | str | None) -> torch.device:
    """The given device, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _as_grid_tensor(grids: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, n, n, n) or (N, 1, n, n, n) → float32 CPU tensor (N, 1, n, n, n), without a copy when possible."""
    tensor = grids.detach() if isinstance(grids, torch.Tensor) else torch.from_numpy(np.asarray(grids))
    tensor = tensor.to(dtype=torch.float32)
    if tensor.dim() == 4:
        tensor = tensor.unsqueeze(1)
    if tensor.dim() != 5 or tensor.shape[1] != 1:
        raise ValueError(f"expected grids of shape (N, n, n, n) or (N, 1, n, n, n), got {tuple(tensor.shape)}")
    return tensor


def _as_target_tensor(targets: np.ndarray | torch.Tensor, n_samples: int) -> torch.Tensor:
    """(N,) or (N, k) labels → float32 tensor (N, k)."""
    tensor = targets.detach().cpu() if isinstance(targets, torch.Tensor) else torch.from_numpy(np.asarray(targets))
    tensor = tensor.to(dtype=torch.float32)
    if tensor.dim() == 1:
        tensor = tensor.unsqueeze(1)
    if tensor.dim() != 2 or tensor.shape[0] != n_samples:
        raise ValueError(f"expected targets of shape ({n_samples},) or ({n_samples}, k), got {tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError("targets contain NaN or infinite values")
    return tensor


def _as_descriptor_tensor(descriptors: np.ndarray | torch.Tensor | None, n_samples: int) -> torch.Tensor | None:
    """float32 (N, m) descriptors, or None."""
    if descriptors is None:
        return None
    d = torch.as_tensor(np.asarray(descriptors) if not isinstance(descriptors, torch.Tensor) else descriptors,
                        dtype=torch.float32)
    if d.dim() != 2 or len(d) != n_samples:
        raise ValueError(f"expected descriptors of shape ({n_samples}, m), got {tuple(d.shape)}")
    if not torch.isfinite(d).all():
        raise ValueError("descriptors must be finite")
    return d


@contextlib.contextmanager
def _reproducible(device: torch.device, threads: int | None) -> Iterator[None]:
    """Deterministic kernels (cheap ones) and a thread count for the run; restores global state."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old_cudnn


def n_validation(n_samples: int, val_fraction: float) -> int:
    """How many of ``n_samples`` :func:`train_val_split` puts in validation.

    ``round(val_fraction · n)`` (Python's ``round``: halves go to even, 6 × 0.25 = 1.5 → 2 and
    10 × 0.25 = 2.5 → 2; 6 × 0.34 = 2.04 → 2), then, when ``val_fraction > 0``, clamped to
    [1, n − 1] so that each side holds at least one sample; 0 when ``val_fraction == 0``.

    Raises
    ------
    ValueError
        ``val_fraction`` outside [0, 1), or ``val_fraction > 0`` with fewer than 2 samples.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return 0
    if n_samples < 2:
        raise ValueError(f"{n_samples} sample(s) cannot be split into training and validation")
    return min(n_samples - 1, max(1, int(round(val_fraction * n_samples))))


def train_val_split(n_samples: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The project's one seeded train/validation split: sorted index arrays (train, validation).

    The samples are ordered by ``np.random.default_rng(seed).permutation(n_samples)``; the first
    :func:`n_validation` of that order are the validation set, the rest training; both are returned
    sorted. Used by :func:`train_retnet` (``TrainConfig.val_fraction``), ``retnet train`` and the
    service's training jobs, so a given (n, fraction, seed) selects the same structures everywhere.
    It is the split ``scripts/ch4_model.py`` relies on through ``TrainConfig.val_fraction`` (pre-training);
    that script's test / validation / training split of the CH4 labels is its own, fixed since the first
    release (a seeded three-way permutation of the reference labels plus
    :func:`models.datasets.hash_split` for added labels) so that the published test set never moves.

    Raises
    ------
    ValueError
        As :func:`n_validation`.
    """
    n_val = n_validation(n_samples, val_fraction)
    order = np.random.default_rng(seed).permutation(n_samples)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _build_model(
    n_outputs: int, base_model: Any, mode: Literal["conv", "all-but-output"] | None, n_descriptors: int = 0
) -> tuple[RetNet, bool]:
    """New RetNet (seeded init) or a copy of ``base_model``; returns (model, output_is_new).

    A base model's output layer is kept when it has the same number of outputs, its descriptor input when it reads
    the same number of descriptors; anything else keeps the new model's seeded init.
    """
    model = RetNet(n_outputs, n_descriptors=n_descriptors)
    if base_model is None:
        return freeze(model, mode), True
    base = getattr(base_model, "model", base_model)
    if not isinstance(base, RetNet):
        raise TypeError(f"base_model must be a RetNet or a LoadedModel, got {type(base_model).__name__}")
    state = {name: value.detach().cpu().clone() for name, value in base.state_dict().items()}
    same_outputs = base.n_outputs == n_outputs
    same_descriptors = base.n_descriptors == n_descriptors
    if not same_outputs:
        state = {name: value for name, value in state.items() if not name.startswith("output.")}
    if not same_descriptors:
        state = {name: value for name, value in state.items() if not name.startswith("descriptor_input.")}
    model.load_state_dict(state, strict=same_outputs and same_descriptors)
    return freeze(model, mode), not same_outputs


def _batches(n_samples: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one sample is dropped (BatchNorm needs ≥ 2)."""
    order = torch.randperm(n_samples, generator=generator)
    batches = list(torch.split(order, batch_size))
    if len(batches[-1]) < 2:
        batches.pop()
    return batches


def _r2(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    """R² averaged uniformly over output columns (1 for a perfect fit of constant labels, else 0)."""
    ss_res = ((y_true - y_pred) ** 2).sum(dim=0)
    ss_tot = ((y_true - y_true.mean(dim=0)) ** 2).sum(dim=0)
    perfect = ss_res == 0
    r2 = torch.where(ss_tot > 0, 1.0 - ss_res / ss_tot.clamp_min(1e-300), perfect.to(ss_res.dtype))
    return float(r2.mean())


def _train_epoch(
    model: RetNet,
    optimizer: torch.optim.Optimizer,
    grids: torch.Tensor,
    targets: torch.Tensor,
    standardizer: Standardizer,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    descriptors: torch.Tensor | None = None,
) -> float:
    """One pass over the training set; returns the sample-weighted mean MSE."""
    model.train()
    total, count = 0.0, 0
    for index in _batches(len(grids), config.batch_size, generator):
        x = standardizer(grids[index].to(device))
        if config.augment:
            x = random_symmetry(x, generator)
        if config.translate:
            x = random_translation(x, generator)
        y = targets[index].to(device)
        d = None if descriptors is None else descriptors[index].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x, d), y)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(index)
        count += len(index)
    return total / max(count, 1)


def _evaluate(
    model: RetNet, grids: torch.Tensor, targets: torch.Tensor, standardizer: Standardizer, device: torch.device,
    descriptors: torch.Tensor | None = None,
) -> tuple[float, float]:
    """(MSE, mean R²) of ``model`` on a labelled set."""
    pred = torch.from_numpy(predict_grids(model, standardizer, grids, device=device, descriptors=descriptors))
    y = targets.to(torch.float64)
    return float(((pred - y) ** 2).mean()), _r2(y, pred)


def train_retnet(
    grids: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    config: TrainConfig | None = None,
    *,
    val: tuple[np.ndarray | torch.Tensor, ...] | None = None,
    base_model: Any = None,
    progress: ProgressCallback | None = None,
    standardizer: Standardizer | None = None,
    descriptors: np.ndarray | torch.Tensor | None = None,
) -> TrainResult:
    """Train a RetNet on voxel grids (thesis recipe).

    Parameters
    ----------
    grids : array, shape (N, 25, 25, 25) or (N, 1, 25, 25, 25)
        Raw (unstandardized) voxel grids, float32.
    targets : array, shape (N,) or (N, k)
        Raw labels (e.g. mol/kg); not standardized.
    config : TrainConfig, optional
        Hyper-parameters; defaults to the thesis recipe.
    val : (grids, targets) or (grids, targets, descriptors), optional
        Explicit validation set; excludes ``config.val_fraction`` > 0. Its descriptors are required exactly
        when ``descriptors`` are given.
    base_model : RetNet or LoadedModel, optional
        Fine-tuning start: its weights are copied (never modified). If its number of
        outputs differs from k, the output layer is re-created and its bias set to the
        label mean. ``config.freeze`` is applied to the copy.
    progress : callable, optional
        Called after each epoch with {"epoch", "epochs", "train_loss", "val_loss", "val_r2"}.
    standardizer : Standardizer, optional
        Input standardization to use. Default: the base model's (a LoadedModel) when
        fine-tuning, else fitted on the training grids.
    descriptors : array, shape (N, m), optional
        Standardized crystal descriptors (:class:`models.descriptors.DescriptorSpec`) of the training grids:
        the model becomes a descriptor RetNet with ``n_descriptors`` = m.

    Returns
    -------
    TrainResult
    """
    config = config or TrainConfig()
    x_all = _as_grid_tensor(grids)
    y_all = _as_target_tensor(targets, len(x_all))
    d_all = _as_descriptor_tensor(descriptors, len(x_all))
    if val is not None and config.val_fraction > 0.0:
        raise ValueError("give either an explicit validation set or val_fraction > 0, not both")
    d_train, d_val = d_all, None
    if val is not None:
        x_train, y_train = x_all, y_all
        x_val = _as_grid_tensor(val[0])
        y_val: torch.Tensor | None = _as_target_tensor(val[1], len(x_val))
        if y_val.shape[1] != y_train.shape[1]:
            raise ValueError(f"validation targets have {y_val.shape[1]} outputs, training targets {y_train.shape[1]}")
        if (len(val) > 2 and val[2] is not None) != (d_all is not None):
            raise ValueError("give descriptors for both the training and the validation set, or for neither")
        d_val = _as_descriptor_tensor(val[2], len(x_val)) if d_all is not None else None
    else:
        x_train, y_train, x_val, y_val = x_all, y_all, None, None  # type: ignore[assignment]
        if config.val_fraction > 0.0:
            split = train_val_split(len(x_all), config.val_fraction, config.seed)
            train_idx, val_idx = (torch.from_numpy(i) for i in split)
            x_train, y_train, x_val, y_val = x_all[train_idx], y_all[train_idx], x_all[val_idx], y_all[val_idx]
            if d_all is not None:
                d_train, d_val = d_all[train_idx], d_all[val_idx]
    if len(x_train) < 2:
        raise ValueError(f"need at least 2 training samples, got {len(x_train)}")
    if config.patience is not None and y_val is None:
        raise ValueError("patience (early stopping) needs a validation set: pass val= or val_fraction > 0")

    device = resolve_device(config.device)
    with _reproducible(device, config.threads):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        if standardizer is None:
            standardizer = getattr(base_model, "standardizer", None) or Standardizer.fit(x_train, config.input_clip)
            if config.fine_tune_clip is not None and base_model is not None:
                standardizer = replace(standardizer, clip=config.fine_tune_clip)
        model, output_is_new = _build_model(y_train.shape[1], base_model, config.freeze,
                                            0 if d_train is None else d_train.shape[1])
        if output_is_new:
            model.init_output_bias(y_train.to(torch.float64).mean(dim=0).numpy())
        model.to(device)
        optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.learning_rate,
            betas=config.betas,
            eps=config.eps,
        )
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        result = TrainResult(model=model, standardizer=standardizer, config=config)
        best_loss, best_state = math.inf, None
        for epoch in range(1, config.epochs + 1):
            train_loss = _train_epoch(model, optimizer, x_train, y_train, standardizer, config, generator, device,
                                      d_train)
            scheduler.step()
            val_loss = val_r2 = None
            if y_val is not None:
                val_loss, val_r2 = _evaluate(model, x_val, y_val, standardizer, device, d_val)
            event: EpochEvent = {
                "epoch": epoch,
                "epochs": config.epochs,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_r2": val_r2,
            }
            result.history.append(event)
            if progress is not None:
                progress(dict(event))
            if config.patience is None:
                result.best_epoch = epoch
                continue
            assert val_loss is not None
            if val_loss < best_loss:
                best_loss, best_state, result.best_epoch = val_loss, copy.deepcopy(model.state_dict()), epoch
            elif epoch - result.best_epoch >= config.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return result


def _batched(
    apply: Callable[..., torch.Tensor],
    model: RetNet,
    standardizer: Standardizer,
    grids: np.ndarray | torch.Tensor,
    width: int,
    batch_size: int,
    device: torch.device | str | None,
    descriptors: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Run ``apply(grids, descriptors)`` over standardized batches in eval mode; returns float64 (N, width)."""
    x = _as_grid_tensor(grids)
    d = _as_descriptor_tensor(descriptors, len(x))
    target = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        if target != next(model.parameters()).device:
            model.to(target)
        out = np.empty((len(x), width), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(x), batch_size):
                batch = standardizer(x[start : start + batch_size].to(target))
                described = None if d is None else d[start : start + batch_size].to(target)
                # a grid-only module (e.g. an IsothermEnsemble) is called with the grids alone
                result = apply(batch) if described is None else apply(batch, described)
                out[start : start + len(batch)] = result.double().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def predict_grids(
    model: RetNet,
    standardizer: Standardizer,
    grids: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    descriptors: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Predict labels for raw grids.

    Parameters
    ----------
    model : RetNet
        Evaluated in eval mode under ``torch.inference_mode`` (its mode is restored);
        moved to ``device`` if one is given.
    standardizer : Standardizer
        The model's input standardization.
    grids : array, shape (N, n, n, n) or (N, 1, n, n, n)
        Raw voxel grids.
    batch_size : int
        Grids per forward pass.
    device : torch.device or str, optional
        Default: the model's device.
    descriptors : array, shape (N, m), optional
        Standardized crystal descriptors, for a descriptor RetNet.

    Returns
    -------
    np.ndarray, float64, shape (N, k)
        Predictions in label units.
    """
    return _batched(model, model, standardizer, grids, model.n_outputs, batch_size, device, descriptors)


def fingerprint_grids(
    model: RetNet,
    standardizer: Standardizer,
    grids: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    descriptors: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Return the 20-dimensional fingerprints, float64 (N, 20); arguments as :func:`predict_grids`."""
    return _batched(model.fingerprint, model, standardizer, grids, FINGERPRINT_SIZE, batch_size, device,
                    descriptors)


def member_outputs_grids(
    model: RetNet,
    standardizer: Standardizer,
    grids: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    descriptors: np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every member's predictions and fingerprints in one pass (arguments as :func:`predict_grids`).

    Returns
    -------
    predictions : np.ndarray, float64, shape (n_members, N, k)
        In label units (a single RetNet is one member).
    fingerprints : np.ndarray, float64, shape (N, n_members · 20)
        The members' fingerprints side by side.
    """
    members = len(getattr(model, "members", [model]))
    k = model.n_outputs

    def apply(batch: torch.Tensor, *described: torch.Tensor) -> torch.Tensor:
        fingerprints, predictions = model.member_outputs(batch, *described)
        return torch.cat([predictions.permute(1, 0, 2).reshape(len(batch), -1),
                          fingerprints.permute(1, 0, 2).reshape(len(batch), -1)], dim=1)

    out = _batched(apply, model, standardizer, grids, members * (k + FINGERPRINT_SIZE), batch_size, device,
                   descriptors)
    predictions = out[:, : members * k].reshape(len(out), members, k).transpose(1, 0, 2)
    return np.ascontiguousarray(predictions), out[:, members * k:]
