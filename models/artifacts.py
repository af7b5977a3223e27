"""Model artifacts: a folder with ``weights.pt`` (a RetNet state_dict) and ``card.json``.

DESIGN.md §5. The card records everything needed to use the weights safely:
targets with units and conditions, the voxel parameters the model was trained on,
the input standardization, the training data summary, metrics with confidence
intervals, library versions and the sha256 of the weights file. Loading verifies
that hash, loads with ``torch.load(weights_only=True)``, and refuses grids made with
other voxel parameters (:meth:`LoadedModel.check_voxel_params`).

A model may also be given as a ``.zip`` or ``.tar.gz`` of its folder (files at
the archive root or inside one top-level folder).
"""

from __future__ import annotations

import hashlib
import io
import platform
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import pydantic
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.curve_trees import CurveTrees
from models.descriptors import DESCRIPTOR_WIDTHS, DescriptorSpec, card_crystal_blocks, card_reads_density
from models.hybrid import TREES_FILE, HybridTrees
from models.isotherm import IsothermEnsemble
from models.params import VoxelParams
from models.retnet import FINGERPRINT_SIZE, INPUT_SIZE, RetNet, RetNetEnsemble
from models.training import TrainResult, fingerprint_grids, member_outputs_grids, predict_grids, resolve_device
from models.transforms import Standardizer
from models.trees import TreeArrays
from models.uncertainty import DOMAIN_FILE, Domain, Neighbour, SpreadCalibration

#: File names inside a model folder.
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "card.json"
#: Name of the default model shipped inside the package (``models/shipped/<name>/``).
DEFAULT_MODEL_NAME = "retnet-ch4"
#: Distribution name of this project (for ``library_versions``).
_DISTRIBUTION = "retnet-service"


class ModelArtifactError(Exception):
    """Base class for unusable model artifacts."""


class CorruptModelError(ModelArtifactError):
    """The artifact is damaged: missing or unreadable files, or a weights hash mismatch."""


class IncompatibleModelError(ModelArtifactError, ValueError):
    """The model cannot consume grids made with the given voxel parameters.

    Attributes
    ----------
    differences : dict
        ``{field: (model_value, given_value)}`` for every differing voxel parameter.
    """

    def __init__(self, model_ref: str, differences: Mapping[str, tuple[Any, Any]]) -> None:
        self.differences = dict(differences)
        listed = "; ".join(f"{k}: model {m!r}, grids {g!r}" for k, (m, g) in self.differences.items())
        super().__init__(f"model {model_ref} was trained on other voxel parameters ({listed})")


class Target(BaseModel):
    """One predicted quantity.

    Attributes
    ----------
    name : str
        Label column name, e.g. "ch4_uptake".
    unit : str
        Unit of the value, e.g. "mol/kg".
    property : str
        Human description with conditions, e.g. "CH4 uptake, 298 K, 5.8 bar".
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    unit: str
    property: str
    gas: str | None = Field(None, description="adsorbate, e.g. CH4")
    temperature_k: float | None = Field(None, gt=0, description="temperature of the label (K)")
    pressure_bar: float | None = Field(None, gt=0, description="pressure of the label (bar)")


def library_versions() -> dict[str, str]:
    """Versions of torch, numpy, python and this project (``"unknown"`` when not installed)."""
    try:
        own = metadata.version(_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        own = "unknown"
    versions = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pydantic": pydantic.VERSION,
        "python": platform.python_version(),
        _DISTRIBUTION: own,
    }
    for name in _GRID_LIBRARIES:  # what the grids (parsing, voxel kernel) and the calibration depend on
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


#: Libraries besides torch/numpy/pydantic whose versions a card records.
_GRID_LIBRARIES = ("pymatgen", "numba", "scipy", "scikit-learn")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ModelCard(BaseModel):
    """Everything known about a trained model (``card.json``).

    Attributes
    ----------
    name, version : str
        Registry identity; the reference is ``"name:version"``.
    architecture : "RetNet" or "RetNetIsotherm"
        "RetNetIsotherm": an :class:`models.isotherm.IsothermEnsemble` (RetNet members with monotone heads);
        its targets carry the pressures, in increasing order.
    n_outputs : int
        Number k of outputs; defaults to ``len(targets)``.
    targets : list of Target
        One per output, in output order.
    voxel_params : VoxelParams
        Parameters of the grids the model was trained on (grid_size must be 25).
    standardization : dict or None
        ``{"mean": float, "std": float}`` of the input; filled from a TrainResult by :func:`save_model`.
    training_data : dict
        Free summary: source, size, split seed, label sha256, ...
    metrics : dict
        Test metrics, e.g. ``regression_metrics`` output (values with CIs).
    training_config : dict
        The TrainConfig of the run; filled from a TrainResult by :func:`save_model` when empty.
    library_versions : dict
        Auto-filled at creation: torch, numpy, pydantic, python, retnet-service.
    created_at : datetime
        UTC creation time (ISO 8601 in JSON).
    preliminary : bool
        True for models trained on too little data to be trusted.
    description : str
    weights_sha256 : str or None
        sha256 of ``weights.pt``, filled by :func:`save_model`.
    ensemble_size : int
        1 for one RetNet; n > 1 for a :class:`models.retnet.RetNetEnsemble` of n members whose
        predictions are averaged (filled by :func:`save_model`).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    version: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    architecture: Literal["RetNet", "RetNetIsotherm"] = "RetNet"
    n_outputs: int = Field(0, ge=1)
    targets: list[Target] = Field(min_length=1)
    voxel_params: VoxelParams = Field(default_factory=VoxelParams)
    standardization: dict[str, float] | None = None
    training_data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    training_config: dict[str, Any] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=library_versions)
    created_at: datetime = Field(default_factory=_utc_now)
    preliminary: bool = False
    description: str = ""
    weights_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    ensemble_size: int = Field(1, ge=1)
    uncertainty: dict[str, Any] | None = Field(
        None, description="calibration of σ (models.uncertainty.SpreadCalibration.to_dict) and its test coverage")
    domain: dict[str, Any] | None = Field(
        None, description="applicability domain summary (models.uncertainty.Domain.card_summary); data in domain.npz")
    primary_output: int = Field(0, ge=0, description="index of the output reported as a prediction's `value` and "
                                                     "ranked by default (e.g. 5.8 bar of an isotherm model)")
    descriptors: dict[str, Any] | None = Field(
        None, description="crystal descriptors read beside the grid and their standardization "
                          "(models.descriptors.DescriptorSpec.to_dict); None: a grid-only RetNet")
    trees: dict[str, Any] | None = Field(
        None, description="a hybrid model's Extra Trees (models.hybrid.HybridTrees.card_entry: file, sha256, the "
                          "network's weight in the blend, features; a curve's trees also `outputs` and `anchor`, "
                          "models.curve_trees.CurveTrees); None: the network alone")

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("standardization")
    @classmethod
    def _mean_std(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None:
            if not {"mean", "std"} <= set(value) <= {"mean", "std", "clip"}:
                raise ValueError(f"standardization needs the keys mean and std (and optionally clip), "
                                 f"got {sorted(value)}")
            Standardizer.from_dict(value)  # finite mean, std > 0
        return value

    @field_validator("descriptors")
    @classmethod
    def _descriptor_spec(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                DescriptorSpec.from_dict(value)
            except (KeyError, TypeError) as err:
                raise ValueError(f"descriptors need names, mean and std: {err}") from err
        return value

    @field_validator("trees")
    @classmethod
    def _trees_entry(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            missing = {"file", "sha256", "weight", "features"} - set(value)
            if missing:
                raise ValueError(f"trees need {sorted(missing)}")
            weight, features = value["weight"], value["features"]
            if (value["file"] != TREES_FILE or isinstance(weight, bool) or not isinstance(weight, int | float)
                    or not 0.0 <= weight <= 1.0):
                raise ValueError(f"trees must be in {TREES_FILE} with a network weight in [0, 1]")
            if not isinstance(features, list) or not features or any(f not in DESCRIPTOR_WIDTHS for f in features):
                raise ValueError(f"trees read a list of known descriptors ({sorted(DESCRIPTOR_WIDTHS)}), "
                                 f"got {features!r}")
            if ("anchor" in value) != ("outputs" in value):
                raise ValueError("a curve's trees need both `outputs` and `anchor`")
            if "outputs" in value:
                outputs, anchor = value["outputs"], value["anchor"]
                if type(outputs) is not int or type(anchor) is not int or outputs < 2 or not 0 <= anchor < outputs:
                    raise ValueError(f"a curve's trees need integers outputs ≥ 2 and 0 ≤ anchor < outputs, got "
                                     f"{outputs!r} and {anchor!r}")
        return value

    @property
    def needs_density(self) -> bool:
        """Whether predictions need each structure's crystal density (its network's or its trees' input)."""
        return card_reads_density(self.model_dump(include={"descriptors", "trees"}))

    @property
    def crystal_blocks(self) -> tuple[str, ...]:
        """The crystal blocks its trees read (:data:`models.descriptors.CRYSTAL_BLOCKS`; the caller supplies them)."""
        return card_crystal_blocks(self.model_dump(include={"trees"}))

    @property
    def descriptor_spec(self) -> DescriptorSpec | None:
        """The crystal descriptors the model reads beside the grid (None: grid only)."""
        return None if self.descriptors is None else DescriptorSpec.from_dict(self.descriptors)

    @model_validator(mode="before")
    @classmethod
    def _default_n_outputs(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data.get("n_outputs") and isinstance(data.get("targets"), list):
            data = {**data, "n_outputs": len(data["targets"])}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.n_outputs != len(self.targets):
            raise ValueError(f"n_outputs={self.n_outputs} but {len(self.targets)} target(s) are described")
        if self.voxel_params.grid_size != INPUT_SIZE:
            raise ValueError(f"RetNet needs grid_size={INPUT_SIZE}, card has {self.voxel_params.grid_size}")
        if self.trees is not None:
            curve = self.trees.get("outputs")
            if curve is None and (self.n_outputs != 1 or self.architecture != "RetNet"):
                raise ValueError("only a one-output RetNet can be blended with one output's trees")
            if curve is not None and (self.architecture != "RetNetIsotherm" or curve != self.n_outputs
                                      or self.trees["anchor"] != self.primary_output):
                raise ValueError("a curve's trees blend with a RetNetIsotherm of as many outputs, anchored at its "
                                 "primary output")
        if self.primary_output >= self.n_outputs:
            raise ValueError(f"primary_output={self.primary_output} but the model has {self.n_outputs} output(s)")
        if self.architecture == "RetNetIsotherm":
            pressures = [t.pressure_bar for t in self.targets]
            if any(p is None for p in pressures) or any(b <= a for a, b in zip(pressures, pressures[1:], strict=False)):
                raise ValueError(f"a RetNetIsotherm card needs every target's pressure_bar, strictly increasing; "
                                 f"got {pressures}")
        return self

    @property
    def pressures_bar(self) -> tuple[float, ...] | None:
        """The outputs' pressures (bar) when every target has one and they increase (a curve), else None."""
        pressures = [t.pressure_bar for t in self.targets]
        if len(pressures) < 2 or any(p is None for p in pressures):
            return None
        values = tuple(float(p) for p in pressures if p is not None)
        return values if all(b > a for a, b in zip(values, values[1:], strict=False)) else None

    @property
    def ref(self) -> str:
        """``"name:version"``."""
        return f"{self.name}:{self.version}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _complete_card(card: ModelCard, model: RetNet | RetNetEnsemble | IsothermEnsemble,
                   result: TrainResult | None) -> ModelCard:
    """Fill standardization / training_config from a TrainResult and check consistency."""
    update: dict[str, Any] = {}
    if result is not None:
        std = result.standardizer.to_dict()
        if card.standardization is not None and card.standardization != std:
            raise ValueError(f"card standardization {card.standardization} differs from the training run's {std}")
        update["standardization"] = std
        if card.descriptors is None and result.descriptors is not None:
            update["descriptors"] = result.descriptors.to_dict()
            card = card.model_copy(update={"descriptors": update["descriptors"]})
        if not card.training_config:
            update["training_config"] = result.config.model_dump(mode="json")
    elif card.standardization is None:
        raise ValueError("card.standardization is required when saving a bare RetNet (no TrainResult)")
    if model.n_outputs != card.n_outputs:
        raise ValueError(f"model has {model.n_outputs} output(s), card describes {card.n_outputs}")
    if isinstance(model, IsothermEnsemble):
        if card.architecture != "RetNetIsotherm":
            raise ValueError("an IsothermEnsemble needs a card with architecture='RetNetIsotherm'")
        if card.pressures_bar is None or not np.allclose(card.pressures_bar, model.pressures_bar, rtol=1e-9):
            raise ValueError(f"the card's pressures {card.pressures_bar} differ from the model's {model.pressures_bar}")
    elif card.architecture != "RetNet":
        raise ValueError(f"a {type(model).__name__} needs a card with architecture='RetNet'")
    spec = card.descriptor_spec
    if getattr(model, "n_descriptors", 0) != (0 if spec is None else spec.width):
        raise ValueError(f"the model reads {getattr(model, 'n_descriptors', 0)} descriptor(s); the card describes "
                         f"{0 if spec is None else spec.width}")
    update["ensemble_size"] = len(model.members) if isinstance(model, RetNetEnsemble | IsothermEnsemble) else 1
    return card.model_copy(update=update)


def _check_extra_name(name: str) -> str:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or ".." in parts or "\\" in name or name in (WEIGHTS_FILE, CARD_FILE):
        raise ValueError(f"extra file name {name!r} must be a relative path other than {WEIGHTS_FILE}/{CARD_FILE}")
    return name


def save_model(
    directory: str | Path,
    model_or_result: RetNet | TrainResult,
    card: ModelCard,
    *,
    extra_files: Mapping[str, str | Path] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model folder: ``weights.pt``, ``card.json`` and any extra files.

    Parameters
    ----------
    directory : str or Path
        The model folder to create (e.g. ``store/models/retnet-ch4/1``).
    model_or_result : RetNet or TrainResult
        A TrainResult also provides the standardization and training config of the card.
    card : ModelCard
        Description; ``weights_sha256`` (and, from a TrainResult, ``standardization`` and an
        empty ``training_config``) are filled in.
    extra_files : mapping of str to path, optional
        ``{name in folder: source file}`` copied along, e.g. ``{"parity.png": ...}``.
    overwrite : bool
        Replace an existing model in ``directory``; otherwise FileExistsError.

    Returns
    -------
    Path
        The model folder.
    """
    result = model_or_result if isinstance(model_or_result, TrainResult) else None
    model = result.model if result is not None else model_or_result
    if not isinstance(model, RetNet | RetNetEnsemble | IsothermEnsemble):
        raise TypeError(f"expected a RetNet, a RetNetEnsemble, an IsothermEnsemble or a TrainResult, got "
                        f"{type(model_or_result).__name__}")
    card = _complete_card(card, model, result)
    extras = {_check_extra_name(k): Path(v) for k, v in (extra_files or {}).items()}
    missing = [str(p) for p in extras.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"extra file(s) not found: {', '.join(missing)}")
    folder = Path(directory)
    if (folder / CARD_FILE).exists() and not overwrite:
        raise FileExistsError(f"a model already exists in {folder}; pass overwrite=True to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: value.detach().cpu() for name, value in model.state_dict().items()}
    torch.save(state, folder / WEIGHTS_FILE)
    card = card.model_copy(update={"weights_sha256": _sha256(folder / WEIGHTS_FILE)})
    for name, source in extras.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / name)
    (folder / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return folder


@dataclass
class DetailedPredictions:
    """Output of :meth:`LoadedModel.predict_detailed` for N grids and k outputs.

    Attributes
    ----------
    values : np.ndarray (N, k)
        Ensemble mean, in the model's unit.
    sigma : np.ndarray (N, k) or None
        Calibrated one-standard-deviation uncertainty, same unit.
    in_domain : np.ndarray (N,) of bool, or None
    neighbours : list of list of Neighbour, or None
        The nearest training structures of each grid, nearest first.
    fingerprints : np.ndarray (N, n_members · 20) or None
        The members' fingerprints side by side (the space of the domain and of nearest-structure searches).
    """

    values: np.ndarray
    sigma: np.ndarray | None
    in_domain: np.ndarray | None
    neighbours: list[list[Neighbour]] | None
    fingerprints: np.ndarray | None = None


class LoadedModel:
    """A verified model ready for inference.

    Attributes
    ----------
    card : ModelCard
    model : RetNet, RetNetEnsemble or IsothermEnsemble
        In eval mode on ``device``.
    standardizer : Standardizer
    device : torch.device
    path : Path
        Where it was loaded from (folder or archive).
    """

    def __init__(self, card: ModelCard, model: RetNet | RetNetEnsemble | IsothermEnsemble,
                 standardizer: Standardizer,
                 device: torch.device, path: Path, domain: Domain | None = None,
                 trees: HybridTrees | None = None) -> None:
        self.card = card
        self.trees = trees
        self.model = model
        self.standardizer = standardizer
        self.device = device
        self.path = path
        self.domain = domain
        self.calibration = SpreadCalibration.from_dict(card.uncertainty) if card.uncertainty else None

    def __repr__(self) -> str:
        return f"LoadedModel({self.ref!r}, device={str(self.device)!r}, path={str(self.path)!r})"

    @property
    def ref(self) -> str:
        """``"name:version"``."""
        return self.card.ref

    @property
    def unit(self) -> str:
        """Unit of the outputs (distinct units joined with ", " if they differ)."""
        return ", ".join(dict.fromkeys(t.unit for t in self.card.targets))

    @property
    def n_outputs(self) -> int:
        """Number k of outputs."""
        return self.card.n_outputs

    @property
    def voxel_params(self) -> VoxelParams:
        """Voxel parameters the model was trained on."""
        return self.card.voxel_params

    @property
    def needs_density(self) -> bool:
        """Whether predictions need each structure's crystal density (g/cm³) beside its grid."""
        return self.card.needs_density

    @property
    def crystal_blocks(self) -> tuple[str, ...]:
        """The crystal blocks predictions need beside grid and density
        (:func:`models.descriptors.compute_crystal_blocks`)."""
        return self.card.crystal_blocks

    @staticmethod
    def _grids(grids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        return grids[None] if grids.ndim == 3 else grids

    def descriptors(self, grids: np.ndarray | torch.Tensor,
                    densities_g_cm3: Sequence[float | None] | np.ndarray | None = None) -> np.ndarray | None:
        """The model's standardized crystal descriptors of raw grids (N, m), or None for a grid-only model.

        Raises
        ------
        models.descriptors.MissingDescriptorError
            The model needs a density that ``densities_g_cm3`` does not give.
        """
        spec = self.card.descriptor_spec
        if spec is None:
            return None
        raw = grids.cpu().numpy() if isinstance(grids, torch.Tensor) else np.asarray(grids)
        return spec.compute(self._grids(raw), densities_g_cm3)

    def predict(self, grids: np.ndarray | torch.Tensor, *, batch_size: int = 256,
                densities_g_cm3: Sequence[float | None] | np.ndarray | None = None,
                crystal_blocks: Mapping[str, np.ndarray] | None = None, network_only: bool = False) -> np.ndarray:
        """Predict from raw grids (N, 25, 25, 25) (or one (25, 25, 25) grid) → float64 (N, k), in :attr:`unit`.

        ``densities_g_cm3`` (one per grid, g/cm³) is needed when :attr:`needs_density`, ``crystal_blocks``
        ({block: (N, width)}, :func:`models.descriptors.compute_crystal_blocks`) when :attr:`crystal_blocks` names
        any. A hybrid model (card ``trees``) returns the blend of its network and its trees, unless
        ``network_only`` (comparisons).
        """
        if self.trees is not None and not network_only:
            members, _ = member_outputs_grids(self.model, self.standardizer, self._grids(grids), batch_size=batch_size,
                                              descriptors=self.descriptors(grids, densities_g_cm3))
            return self._blend(members, grids, densities_g_cm3, crystal_blocks)[0]
        return predict_grids(self.model, self.standardizer, self._grids(grids), batch_size=batch_size,
                             descriptors=self.descriptors(grids, densities_g_cm3))

    def predict_detailed(self, grids: np.ndarray | torch.Tensor, *, batch_size: int = 256,
                         densities_g_cm3: Sequence[float | None] | np.ndarray | None = None,
                         crystal_blocks: Mapping[str, np.ndarray] | None = None,
                         network_only: bool = False) -> DetailedPredictions:
        """Predictions with their calibrated σ and applicability domain, from one forward pass.

        σ and the domain are ``None`` for a model whose card has no calibration or which ships no domain file.
        ``densities_g_cm3``, ``crystal_blocks`` and ``network_only`` as in :meth:`predict` (a hybrid's network
        alone: its members' mean, and no σ: the calibration is the blend's).
        """
        members, fingerprints = member_outputs_grids(self.model, self.standardizer, self._grids(grids),
                                                     batch_size=batch_size,
                                                     descriptors=self.descriptors(grids, densities_g_cm3))
        if self.trees is None or network_only:
            values = members.mean(axis=0)
            spread = members.std(axis=0, ddof=1) if len(members) > 1 else np.zeros_like(values)
        else:
            values, spread = self._blend(members, grids, densities_g_cm3, crystal_blocks)
        in_domain, neighbours = (None, None) if self.domain is None else self.domain.assess(fingerprints)
        sigma = None
        # a hybrid's σ is calibrated on the blend's spread (members and trees): its network alone has none
        if self.calibration is not None and not (network_only and self.trees is not None):
            score = None if neighbours is None else np.array([np.mean([n.distance for n in row]) for row in neighbours])
            sigma = self.calibration.sigma(spread, score)
        return DetailedPredictions(values, sigma, in_domain, neighbours, fingerprints)

    def _blend(self, members: np.ndarray, grids: np.ndarray | torch.Tensor,
               densities_g_cm3: Sequence[float | None] | np.ndarray | None,
               crystal_blocks: Mapping[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """A hybrid model's (values, spread) from its members' outputs (n, N, k) and the trees' rows."""
        assert self.trees is not None
        raw = grids.cpu().numpy() if isinstance(grids, torch.Tensor) else np.asarray(grids)
        return self.trees.combine(members, self.trees.features_of(self._grids(raw), densities_g_cm3, crystal_blocks))

    def fingerprints(self, grids: np.ndarray | torch.Tensor, *, batch_size: int = 256,
                     densities_g_cm3: Sequence[float | None] | np.ndarray | None = None) -> np.ndarray:
        """20-dimensional fingerprints of raw grids → float64 (N, 20) (densities as in :meth:`predict`)."""
        return fingerprint_grids(self.model, self.standardizer, self._grids(grids), batch_size=batch_size,
                                 descriptors=self.descriptors(grids, densities_g_cm3))

    def check_voxel_params(self, params: VoxelParams | Mapping[str, Any]) -> None:
        """Raise :class:`IncompatibleModelError` unless ``params`` equal the training voxel parameters."""
        given = params if isinstance(params, VoxelParams) else VoxelParams(**params)
        ours, theirs = self.card.voxel_params.model_dump(), given.model_dump()
        differences = {k: (ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]}
        if differences:
            raise IncompatibleModelError(self.ref, differences)

    # Defined last: inside the class body the name ``property`` then shadows the builtin.
    @property
    def property(self) -> str:
        """Property description (joined with "; " for several outputs)."""
        return "; ".join(t.property for t in self.card.targets)


def _safe_members(names: list[str], archive: Path) -> None:
    for name in names:
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts:
            raise CorruptModelError(f"archive {archive} holds an unsafe path {name!r}")


def _extract(archive: Path, target: Path) -> None:
    """Unpack a .zip or .tar.gz model archive into ``target``."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _safe_members(zf.namelist(), archive)
                zf.extractall(target)
            return
        with tarfile.open(archive, "r:*") as tf:
            _safe_members(tf.getnames(), archive)
            tf.extractall(target, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise CorruptModelError(f"cannot unpack model archive {archive}: {err}") from err


def _model_folder(root: Path) -> Path:
    """The folder holding card.json: ``root`` itself or its single subfolder."""
    if (root / CARD_FILE).is_file():
        return root
    subfolders = [p for p in root.iterdir() if p.is_dir() and (p / CARD_FILE).is_file()]
    if len(subfolders) != 1:
        raise CorruptModelError(f"no {CARD_FILE} at the top of the model (or in exactly one subfolder)")
    return subfolders[0]


def _read_card(folder: Path) -> ModelCard:
    try:
        return ModelCard.model_validate_json((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (pydantic.ValidationError, OSError, UnicodeDecodeError) as err:
        raise CorruptModelError(f"unreadable model card {folder / CARD_FILE}: {err}") from err


def _read_weights(folder: Path, card: ModelCard) -> dict[str, torch.Tensor]:
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CorruptModelError(f"missing {WEIGHTS_FILE} in {folder}")
    data = weights.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if card.weights_sha256 is None or actual != card.weights_sha256:
        raise CorruptModelError(
            f"{weights}: sha256 {actual} does not match the card's weights_sha256 {card.weights_sha256}"
        )
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged pickles
        raise CorruptModelError(f"cannot load {weights}: {err}") from err


def _empty_model(card: ModelCard, state: Mapping[str, torch.Tensor],
                 folder: Path) -> RetNet | RetNetEnsemble | IsothermEnsemble:
    """The untrained module the card describes, ready for ``load_state_dict``."""
    n_descriptors = 0 if card.descriptor_spec is None else card.descriptor_spec.width
    if card.architecture == "RetNetIsotherm":
        backbone_output = state.get("backbone.members.0.output.weight")
        if backbone_output is None or backbone_output.dim() != 2:
            raise CorruptModelError(f"weights in {folder} hold no RetNetIsotherm backbone")
        members = [RetNet(int(backbone_output.shape[0]), n_descriptors) for _ in range(card.ensemble_size)]
        return IsothermEnsemble(RetNetEnsemble(members), card.pressures_bar or ())
    if card.ensemble_size > 1:
        return RetNetEnsemble([RetNet(card.n_outputs, n_descriptors) for _ in range(card.ensemble_size)])
    return RetNet(card.n_outputs, n_descriptors)


def _load_folder(folder: Path, source: Path, device: torch.device) -> LoadedModel:
    card = _read_card(folder)
    state = _read_weights(folder, card)
    if card.standardization is None:
        raise CorruptModelError(f"model card {folder / CARD_FILE} has no standardization")
    model = _empty_model(card, state, folder)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as err:
        message = f"weights in {folder} do not fit a RetNet with {card.n_outputs} output(s): {err}"
        raise CorruptModelError(message) from err
    model.to(device).eval()
    domain = None
    if (folder / DOMAIN_FILE).is_file():
        try:
            domain = Domain.load(folder / DOMAIN_FILE)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise CorruptModelError(f"unreadable applicability domain {folder / DOMAIN_FILE}: {err}") from err
        width = card.ensemble_size * FINGERPRINT_SIZE
        if domain.fingerprints.shape[1] != width:
            raise CorruptModelError(f"{folder / DOMAIN_FILE} holds {domain.fingerprints.shape[1]}-d fingerprints; "
                                    f"this model's are {width}-d")
    elif card.domain or any((card.uncertainty or {}).get("distance_gain") or []):
        # σ of such a model depends on the distance to its training data: without the domain it would be wrong
        raise CorruptModelError(f"the card of {folder} describes an applicability domain but {DOMAIN_FILE} is missing")
    return LoadedModel(card, model, Standardizer.from_dict(card.standardization), device, source, domain,
                       _read_trees(folder, card))


def _read_trees(folder: Path, card: ModelCard) -> HybridTrees | None:
    """A hybrid model's trees, verified against the card's sha256 (None for a network alone)."""
    if card.trees is None:
        return None
    path = folder / TREES_FILE
    if not path.is_file():
        raise CorruptModelError(f"the card of {folder} describes trees but {TREES_FILE} is missing")
    if _sha256(path) != card.trees["sha256"]:
        raise CorruptModelError(f"{path}: sha256 does not match the card's trees.sha256")
    try:
        trees = CurveTrees.load(path) if "outputs" in card.trees else TreeArrays.load(path)
        hybrid = HybridTrees(trees, float(card.trees["weight"]), tuple(card.trees["features"]))
        if hybrid.n_outputs != card.n_outputs:
            raise ValueError(f"the trees predict {hybrid.n_outputs} output(s); the card describes {card.n_outputs}")
        if isinstance(trees, CurveTrees) and trees.anchor != card.primary_output:
            raise ValueError(f"the curve's trees are anchored at output {trees.anchor}; the card's primary output is "
                             f"{card.primary_output}")
        _check_tree_width(hybrid)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as err:
        raise CorruptModelError(f"unreadable trees {path}: {err}") from err
    return hybrid


def _check_tree_width(hybrid: HybridTrees) -> None:
    expected = sum(DESCRIPTOR_WIDTHS[name] for name in hybrid.features)
    if hybrid.trees.n_features != expected:
        raise ValueError(f"the trees read {hybrid.trees.n_features} features; {list(hybrid.features)} are {expected}")


def save_trees(folder: str | Path, hybrid: HybridTrees, **extra: Any) -> ModelCard:
    """Write a hybrid model's trees into a model folder and record them (and ``extra``) in its card.

    The trees are written beside the folder's files first and replace its ``trees.npz`` only once the card
    with them validates: refused trees leave the folder as it was.
    """
    folder = Path(folder)
    card = _read_card(folder)
    _check_tree_width(hybrid)
    staged = folder / f".{TREES_FILE}.new"
    try:
        hybrid.trees.save(staged)
        entry = hybrid.card_entry(_sha256(staged), **extra)
        # validated as a whole: one output's trees on a one-output RetNet, a curve's on an isotherm model
        card = ModelCard.model_validate({**card.model_dump(mode="json"), "trees": entry})
        staged.replace(folder / TREES_FILE)
    finally:
        staged.unlink(missing_ok=True)
    (folder / CARD_FILE).write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return card


def load_model(path: str | Path, *, device: torch.device | str | None = None) -> LoadedModel:
    """Load and verify a model folder, ``.zip`` or ``.tar.gz``.

    Parameters
    ----------
    path : str or Path
        Model folder (with card.json and weights.pt) or an archive of it.
    device : torch.device or str, optional
        Default: CUDA when available, else CPU.

    Returns
    -------
    LoadedModel

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CorruptModelError
        Missing/unreadable files, or the weights' sha256 differs from the card.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"no model at {source}")
    target = resolve_device(device)
    if source.is_dir():
        return _load_folder(_model_folder(source), source, target)
    with tempfile.TemporaryDirectory(prefix="retnet-model-") as tmp:
        _extract(source, Path(tmp))
        return _load_folder(_model_folder(Path(tmp)), source, target)


def shipped_model_dir(name: str | None = None) -> Path:
    """Folder of a model shipped inside the package: ``models/shipped/<name>/``.

    Parameters
    ----------
    name : str, optional
        Model name; default ``"retnet-ch4"``.

    Raises
    ------
    FileNotFoundError
        The folder does not exist (the weights are not shipped in this installation).
    """
    folder = Path(__file__).resolve().parent / "shipped" / (name or DEFAULT_MODEL_NAME)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"shipped model {name or DEFAULT_MODEL_NAME!r} not found at {folder}: "
            "train one and save it there with models.artifacts.save_model"
        )
    return folder
