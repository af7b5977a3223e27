"""The steps of a service training job, without IO: labelled CIFs → dataset → trained, evaluated model → card.

``worker.training.run_training`` is the thin IO shell around these: it reads the zip and the labels from
storage, supplies the voxel-grid cache (:data:`GridFor`), reports progress to the database and registers
the saved folder. Each step here takes and returns plain values, so it is tested on tiny data without a
database, a store or a worker.

1. :func:`load_dataset` — ``(name, CIF bytes)`` pairs + labels CSV bytes → :class:`LabelledDataset`
   (structures that cannot be used are listed in ``skipped`` with the reason, never dropped silently);
2. :func:`train_and_evaluate` — dataset + job parameters → :class:`TrainingOutcome` (the seeded split of
   :func:`models.training.train_val_split`, the trained model, its history, predictions and metrics on
   the validation split, or on the training set when no validation split is asked for);
3. :func:`build_card` — the :class:`models.artifacts.ModelCard` of the outcome;
4. :func:`save_job_model` — the model folder (weights, card, parity and history plots).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.params import VoxelParams

log = logging.getLogger(__name__)

#: Grid of one parsed structure (``models.structure.Crystal``) under the job's voxel parameters; the
#: service passes one that goes through its voxel cache. Default: :func:`models.voxels.compute_voxels`.
GridFor = Callable[[Any], np.ndarray]
#: Called after each labelled CIF: (CIFs done, CIFs to do, skipped so far).
DatasetProgress = Callable[[int, int, list[dict[str, str]]], None]
#: Called after each epoch with the epoch event (non-finite floats → None) plus "n_train" and "n_val".
EpochProgress = Callable[[dict[str, Any]], None]

NO_VALIDATION = "training set (no validation split requested)"
ON_VALIDATION = "validation split (no test split: none requested, or fewer than 10 structures)"
#: Fewest usable structures for which a job holds a test split out (``test_fraction``).
MIN_TEST_SPLIT = 10
ON_TEST = "test split"
#: Fewest validation (and training) structures to calibrate σ and fit the applicability domain.
MIN_CALIBRATION = 5
#: Bootstrap resamples of the card's confidence intervals (as the shipped model's).
N_BOOTSTRAP = 10_000


@dataclass
class LabelledDataset:
    """Voxelized labelled structures of a training job.

    Attributes
    ----------
    names : list of str
        Structure names (CIF file stems), in the order of ``x`` and ``y``.
    x : ndarray, float32, shape (N, n, n, n)
        Raw voxel grids.
    y : ndarray, float64, shape (N, k)
        Labels, columns in the order of ``targets``.
    targets : list of str
        Label columns.
    skipped : list of dict
        ``{"name", "error"}`` of each labelled CIF left out (missing label, bad structure).
    vibrated : ndarray, float32, shape (N, k, n, n, n), or None
        k thermally jittered copies of each structure (:mod:`models.vibration`), used for training structures
        only; None when vibration augmentation is off.
    densities : ndarray, float64, shape (N,), or None
        Crystal densities (g/cm³) from the CIFs: read by a descriptor model (``descriptors`` job parameter).
    crystal_blocks : dict of str to ndarray (N, width)
        The crystal blocks asked for (:func:`models.descriptors.compute_crystal_blocks`): read by hybrid trees.
    """

    names: list[str]
    x: np.ndarray
    y: np.ndarray
    targets: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    vibrated: np.ndarray | None = None
    densities: np.ndarray | None = None
    crystal_blocks: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class TrainingOutcome:
    """What :func:`train_and_evaluate` returns.

    Attributes
    ----------
    result : models.training.TrainResult
    train_idx, val_idx, test_idx : ndarray of int
        Indices into the dataset (sorted); the test split is held out of training and model selection.
    history : list of dict
        Epoch events, non-finite floats replaced by None (JSON-safe).
    evaluated_on : str
        "test split", "validation split" (no test split requested), or "training set (…)".
    eval_y, eval_pred : ndarray, float64, shape (M, k)
        Labels and predictions of the evaluated structures.
    metrics : dict
        :func:`models.metrics.regression_metrics` as JSON values (flat for one target, else per target);
        empty with fewer than 2 evaluated structures.
    calibration : models.calibration.Calibration or None
        σ calibrated on the validation split and the applicability domain (None without enough structures).
    trees : models.hybrid.HybridTrees or None
        A hybrid model's trees (job parameter ``trees``); then ``eval_pred`` and ``metrics`` are the blend's,
        ``network_metrics`` the network's alone, and ``trees_selection`` says how the weight was chosen.
    """

    result: Any
    train_idx: np.ndarray
    val_idx: np.ndarray
    history: list[dict[str, Any]]
    evaluated_on: str
    eval_y: np.ndarray
    eval_pred: np.ndarray
    metrics: dict[str, Any]
    test_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    calibration: Any = None
    trees: Any = None
    trees_selection: str = ""
    network_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        """Training structures."""
        return int(len(self.train_idx))

    @property
    def n_val(self) -> int:
        """Validation structures (0: none)."""
        return int(len(self.val_idx))

    @property
    def n_test(self) -> int:
        """Test structures (0: none)."""
        return int(len(self.test_idx))

    @property
    def last_epoch(self) -> dict[str, Any]:
        """The last epoch event ({} when none ran)."""
        return self.history[-1] if self.history else {}


def voxel_params_for(base_model: Any) -> VoxelParams:
    """Voxel parameters of a job: the base model's (fine-tuning), else the defaults."""
    card = getattr(base_model, "card", None)
    if card is not None and hasattr(card, "voxel_params"):
        return VoxelParams(**card.voxel_params.model_dump())
    return VoxelParams()


def read_label_table(labels_csv: bytes) -> Any:
    """The labels CSV as a DataFrame indexed by (string) name; the first row of a repeated name wins."""
    import pandas as pd

    table = pd.read_csv(io.BytesIO(labels_csv))
    table["name"] = table["name"].astype(str)
    return table.drop_duplicates("name").set_index("name")


def load_dataset(
    cifs: Iterable[tuple[str, bytes]],
    labels_csv: bytes,
    targets: list[str],
    voxel_params: VoxelParams | None = None,
    *,
    grid_for: GridFor | None = None,
    progress: DatasetProgress | None = None,
    threads: int | None = None,
    vibration_copies: int = 0,
    vibration_amplitude: float | None = None,
    crystal_blocks: Sequence[str] = (),
) -> LabelledDataset:
    """Parse and voxelize the labelled CIFs of a job.

    Parameters
    ----------
    cifs : iterable of (name, bytes)
        The CIFs (name = file stem); CIFs without a label row are ignored.
    labels_csv : bytes
        CSV with a ``name`` column and the ``targets`` columns.
    targets : list of str
        Label columns to learn.
    voxel_params : VoxelParams, optional
        Default: the thesis parameters.
    grid_for : callable(crystal) -> grid, optional
        Where grids come from (the service's cache); default: computed.
    progress : callable(done, total, skipped), optional
        Called after each labelled CIF.
    threads : int, optional
        CPU threads of the default grid computation.
    vibration_copies : int
        Thermally jittered copies per structure (:mod:`models.vibration`; 0: none). Their grids go through
        ``grid_for`` under the copy's own hash (content hash + amplitude + seed), so a cache keeps each once.
    vibration_amplitude : float, optional
        RMS displacement per axis (Å); default :data:`models.vibration.DEFAULT_AMPLITUDE`.
    crystal_blocks : sequence of str
        Crystal blocks to compute for each structure (what hybrid trees read beside the grid, e.g. ``ch4_widom``).

    Raises
    ------
    ValueError
        Fewer than 2 usable labelled structures.
    KeyError
        A target column is missing from the CSV.
    """
    from models.descriptors import compute_crystal_blocks, stack_crystal_blocks
    from models.errors import StructureError
    from models.structure import parse_cif
    from models.units import crystal_density_g_cm3

    params = voxel_params or VoxelParams()
    if grid_for is None:
        from models.voxels import compute_voxels

        def grid_for(crystal: Any) -> np.ndarray:
            return compute_voxels(crystal, params, threads=threads)

    from models.vibration import DEFAULT_AMPLITUDE, vibrated_copies

    amplitude = DEFAULT_AMPLITUDE if vibration_amplitude is None else float(vibration_amplitude)
    labels = read_label_table(labels_csv)
    todo = [(name, data) for name, data in cifs if name in labels.index]
    grids, ys, names, skipped, vibrated, densities, blocks = [], [], [], [], [], [], []
    for i, (name, data) in enumerate(todo):
        y = labels.loc[name, targets].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(y)):
            skipped.append({"name": name, "error": "missing label"})
        else:
            try:
                crystal = parse_cif(data, name=name)
                density = crystal_density_g_cm3(crystal)
                grid = grid_for(crystal)
                copies = [grid_for(c) for c in vibrated_copies(crystal, vibration_copies, amplitude)]
                own_blocks = compute_crystal_blocks(crystal_blocks, [crystal], threads=threads)
            except StructureError as exc:
                skipped.append({"name": name, "error": str(exc)})
            else:
                grids.append(grid)
                ys.append(y)
                names.append(name)
                vibrated.append(copies)
                densities.append(density)
                blocks.append(own_blocks)
        if progress is not None:
            progress(i + 1, len(todo), skipped)
    if len(grids) < 2:
        raise ValueError(f"only {len(grids)} usable labelled structures; skipped: {skipped[:10]}")
    return LabelledDataset(names=names, x=np.stack(grids).astype(np.float32), y=np.stack(ys),
                           targets=list(targets), skipped=skipped,
                           vibrated=np.asarray(vibrated, dtype=np.float32) if vibration_copies > 0 else None,
                           densities=np.asarray(densities, dtype=np.float64),
                           crystal_blocks=stack_crystal_blocks(crystal_blocks, blocks))


def train_config(params: Mapping[str, Any], device: str | None = None) -> Any:
    """The :class:`models.training.TrainConfig` of a job's parameters (``POST /training-jobs`` form)."""
    from models.training import TrainConfig

    return TrainConfig(
        epochs=int(params["epochs"]), batch_size=int(params["batch_size"]),
        learning_rate=float(params["learning_rate"]), augment=bool(params["augment"]),
        translate=bool(params.get("translate", False)), seed=int(params.get("seed") or 0), device=device,
        freeze=params.get("freeze"), threads=None,
        fine_tune_clip=None if params.get("input_clip") is None else float(params["input_clip"]),
    )


def _finite_or_none(event: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in dict(event).items()}


def train_and_evaluate(
    dataset: LabelledDataset,
    params: Mapping[str, Any],
    *,
    base_model: Any = None,
    device: str | None = None,
    progress: EpochProgress | None = None,
) -> TrainingOutcome:
    """Split (seeded), train and evaluate a RetNet on a job's dataset.

    Parameters
    ----------
    dataset : LabelledDataset
    params : mapping
        Job parameters: ``epochs``, ``batch_size``, ``learning_rate``, ``augment``, optional
        ``translate``, ``test_fraction`` (held out first), ``val_fraction`` (of the rest), ``seed``, ``freeze``,
        ``descriptors`` (crystal descriptors read beside the grid, :mod:`models.descriptors`; standardized with
        the training split's statistics), ``trees`` (a hybrid model, :mod:`models.hybrid`: Extra Trees on the
        training split, blended at the weight chosen on the validation split; one target).
        Splits: :func:`models.training.train_val_split` twice (test from all, then validation from the rest).
    base_model : LoadedModel, optional
        Fine-tuning start.
    device : str, optional
        Torch device (default: CUDA when available).
    progress : callable(event), optional
        See :data:`EpochProgress`; an exception it raises stops the training.
    """
    from models.training import predict_grids, train_retnet, train_val_split
    from models.vibration import with_vibrated

    config = train_config(params, device)
    val_fraction = float(params.get("val_fraction") or 0.0)
    test_fraction = float(params.get("test_fraction") or 0.0)
    if len(dataset) < MIN_TEST_SPLIT:
        test_fraction = 0.0  # too few structures to hold a test split out: scored on validation, as the card says
    rest, test_idx = train_val_split(len(dataset), test_fraction, config.seed)
    rest_train, rest_val = train_val_split(len(rest), val_fraction, config.seed)
    train_idx, val_idx = np.sort(rest[rest_train]), np.sort(rest[rest_val])
    history: list[dict[str, Any]] = []

    def on_epoch(event: dict[str, Any]) -> None:
        clean = _finite_or_none(event)
        history.append(clean)
        if progress is not None:
            progress({**clean, "n_train": int(len(train_idx)), "n_val": int(len(val_idx))})

    x, y = dataset.x, dataset.y
    copies = None if dataset.vibrated is None else dataset.vibrated[train_idx]
    # the jittered copies of the training structures only (never of validation or test), with their labels
    train_x, train_y = with_vibrated(x[train_idx], y[train_idx], copies)
    # a descriptor base model is fine-tuned on the descriptors it reads unless the job names others
    base_spec = getattr(getattr(base_model, "card", None), "descriptor_spec", None)
    names = list(params.get("descriptors") or (base_spec.names if base_spec is not None else []))
    spec, described, train_d = _descriptors(dataset, names, train_idx, train_x, copies, base_spec)
    val = (x[val_idx], y[val_idx], None if described is None else described[val_idx]) if len(val_idx) else None
    result = train_retnet(train_x, train_y, config, val=val, base_model=base_model, progress=on_epoch,
                          descriptors=train_d)
    result.descriptors = spec
    if len(test_idx):
        eval_idx, evaluated_on = test_idx, ON_TEST
    else:
        eval_idx, evaluated_on = (val_idx, ON_VALIDATION) if len(val_idx) else (train_idx, NO_VALIDATION)
    eval_y = y[eval_idx]
    pred = np.asarray(predict_grids(result.model, result.standardizer, x[eval_idx],
                                    descriptors=None if described is None else described[eval_idx]), dtype=np.float64)
    pred = pred.reshape(len(eval_idx), -1)
    hybrid, selection, rows, network_metrics = None, "", None, {}
    if params.get("trees"):
        from models.hybrid import fit_hybrid, tree_features

        rows = tree_features(x, dataset.densities, crystal_blocks=dataset.crystal_blocks)
        network_val = np.zeros(0) if not len(val_idx) else predict_grids(
            result.model, result.standardizer, x[val_idx], descriptors=None if described is None else
            described[val_idx])[:, 0]
        hybrid, selection = fit_hybrid(rows, y, train_idx, val_idx, network_val)
        network_metrics = regression_metrics_json(y[eval_idx], pred, dataset.targets)
        pred = hybrid.blend(pred, rows[eval_idx])
        if evaluated_on != ON_TEST:
            selection += f"; the metrics' {evaluated_on} also fitted or weighted the trees (optimistic)"
    calibration = None
    if len(val_idx) >= MIN_CALIBRATION and len(train_idx) >= MIN_CALIBRATION:
        from models.calibration import calibrate_model

        calibration = calibrate_model(
            result.model, result.standardizer, train_x=x[train_idx], train_y=y[train_idx],
            train_names=[dataset.names[i] for i in train_idx], val_x=x[val_idx], val_y=y[val_idx],
            test_x=x[test_idx] if len(test_idx) else None, test_y=y[test_idx] if len(test_idx) else None,
            descriptors=None if described is None else {"train": described[train_idx], "val": described[val_idx],
                                                        "test": described[test_idx]},
            trees=hybrid, tree_rows=None if rows is None else {"val": rows[val_idx], "test": rows[test_idx]})
    return TrainingOutcome(result=result, train_idx=train_idx, val_idx=val_idx, history=history,
                           evaluated_on=evaluated_on, eval_y=eval_y, eval_pred=pred,
                           metrics=regression_metrics_json(eval_y, pred, dataset.targets), test_idx=test_idx,
                           calibration=calibration, trees=hybrid, trees_selection=selection,
                           network_metrics=network_metrics)


def _descriptors(dataset: LabelledDataset, names: list[str], train_idx: np.ndarray, train_x: np.ndarray,
                 copies: np.ndarray | None, base: Any = None) -> tuple[Any, np.ndarray | None, np.ndarray | None]:
    """(DescriptorSpec, standardized descriptors of every structure, those of the training grids incl. copies).

    See :func:`models.descriptors.training_descriptors` for the spec; a jittered copy keeps its original's
    density (same cell and atoms) and gets the energy histogram of its own grid, the only descriptors computed
    again. (None, None, None) without descriptors.
    """
    if not names:
        return None, None, None
    from models.descriptors import training_descriptors, with_copy_descriptors

    spec, described = training_descriptors(names, dataset.x, dataset.densities, train_idx, base)
    per_copy = 0 if copies is None else copies.shape[1]
    densities = None if dataset.densities is None else dataset.densities[train_idx]
    return spec, described, with_copy_descriptors(spec, described[train_idx], train_x[len(train_idx):], densities,
                                                  per_copy)


def label_hash(names: list[str], y: np.ndarray) -> str:
    """sha256 of the sorted ``name,label...`` rows (labels with 6 significant digits)."""
    rows = sorted(zip(names, y.tolist(), strict=True))
    payload = "\n".join(f"{n},{','.join(f'{v:.6g}' for v in row)}" for n, row in rows)
    return hashlib.sha256(payload.encode()).hexdigest()


def regression_metrics_json(y_true: np.ndarray, y_pred: np.ndarray, targets: list[str]) -> dict[str, Any]:
    """R², MAE, RMSE, Spearman ρ with 95 % CIs (:data:`N_BOOTSTRAP` resamples, seed 0) as JSON values.

    Flat for one target, ``{target: metrics}`` for several; empty (per target) with fewer than 2 rows.
    """
    from models.metrics import regression_metrics

    out: dict[str, Any] = {}
    for j, target in enumerate(targets):
        if len(y_true) >= 2:
            m = regression_metrics(y_true[:, j], y_pred[:, j], n_boot=N_BOOTSTRAP, seed=0)
            entry = {k: _jsonable(v) for k, v in m.items()}
        else:
            entry = {}
        if len(targets) == 1:
            out.update(entry)
        else:
            out[target] = entry
    return out


def _jsonable(v: Any) -> Any:
    if hasattr(v, "model_dump"):
        v = v.model_dump()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def build_card(
    dataset: LabelledDataset,
    outcome: TrainingOutcome,
    params: Mapping[str, Any],
    *,
    version: str,
    source: str,
    voxel_params: VoxelParams | None = None,
) -> Any:
    """The model card of a job's outcome (metrics on :attr:`TrainingOutcome.evaluated_on`).

    ``params`` (job parameters) gives ``model_name``, ``unit``, ``property`` (shared by every target;
    default: the target's name), ``epochs``, ``seed`` and ``base_model``; ``source`` says where the model
    comes from (``"training job <id>"``).
    """
    from models.artifacts import ModelCard, Target

    config = outcome.result.config
    unit = params.get("unit") or ""
    conditions = {k: params.get(k) for k in ("gas", "temperature_k", "pressure_bar") if params.get(k) is not None}
    targets = [Target(name=t, unit=unit, property=params.get("property") or t, **conditions) for t in dataset.targets]
    training = {"source": source, "size": outcome.n_train, "n_val": outcome.n_val, "n_test": outcome.n_test,
                "vibration_copies": int(params.get("vibration_copies") or 0),
                "vibration_amplitude": params.get("vibration_amplitude") if params.get("vibration_copies") else None,
                "input_clip": params.get("input_clip"),
                "split_seed": int(params.get("seed") or 0), "label_hash": label_hash(dataset.names, dataset.y),
                "structures": len(dataset), "skipped": len(dataset.skipped), "epochs": int(params["epochs"]),
                "base_model": params.get("base_model"), "augment": config.augment, "translate": config.translate,
                "descriptors": [] if outcome.result.descriptors is None else list(outcome.result.descriptors.names),
                "trees": outcome.trees is not None}
    metrics = {**outcome.metrics, "evaluated_on": outcome.evaluated_on, "n_eval": int(len(outcome.eval_y)),
               "n_bootstrap": N_BOOTSTRAP}
    if outcome.trees is not None:  # a hybrid model: the blend's metrics above, the network's alone here
        metrics["network"] = outcome.network_metrics
    fields = outcome.calibration.card_fields() if outcome.calibration is not None else {}
    spec = getattr(outcome.result, "descriptors", None)
    if spec is not None:
        fields["descriptors"] = spec.to_dict()
    return ModelCard(name=params["model_name"], version=version, targets=targets,
                     voxel_params=voxel_params or VoxelParams(), training_data=training, metrics=metrics, **fields)


def save_job_model(folder: Path, outcome: TrainingOutcome, card: Any) -> Path:
    """Write the model folder (weights, card) plus ``parity.png`` and ``history.png`` when they can be drawn."""
    from models.artifacts import save_model

    path = save_model(folder, outcome.result, card, overwrite=True)
    if outcome.trees is not None:
        from models.artifacts import save_trees

        card = save_trees(path, outcome.trees, fitted_on=f"the training split ({outcome.n_train} structures)",
                          weight_selection=outcome.trees_selection)
    if outcome.calibration is not None:
        from models.uncertainty import DOMAIN_FILE

        outcome.calibration.domain.save(path / DOMAIN_FILE)
    try:
        from models.plots import calibration_plot, history_plot, parity_plot

        target = card.targets[0]
        shown = {ON_TEST: "test", ON_VALIDATION: "validation"}.get(outcome.evaluated_on, "training set")
        if outcome.calibration is not None and card.uncertainty:
            cov = (card.uncertainty.get("test_coverage") or card.uncertainty.get("val_coverage") or [None])[0]
            calibration_plot(card.uncertainty["curve"], path / "calibration.png", unit=target.unit, coverage=cov,
                             title=f"{card.ref}, {card.uncertainty['curve_split']} split")
        parity_plot(outcome.eval_y[:, 0], outcome.eval_pred[:, 0], path / "parity.png",
                    title=f"{target.name} ({shown})", unit=target.unit)
        if outcome.history:
            history_plot(outcome.history, path / "history.png")
    except Exception:  # noqa: BLE001  (a plot is a nice-to-have; never fail the job for it)
        log.exception("plotting failed")
    return path
