"""Pydantic v2 I/O schemas (DB rows never leave the service)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.db.tables import JobKind, JobStatus


class Progress(BaseModel):
    """Items (or epochs, for training) finished so far."""

    done: int
    failed: int
    total: int


class JobPublic(BaseModel):
    """``GET /jobs/{id}``."""

    id: str
    kind: JobKind
    status: JobStatus
    progress: Progress
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = Field(None, description="when a worker first took it up (None while queued)")
    finished_at: datetime | None = Field(None, description="when it reached a final status")
    error: str | None = None
    name: str | None = None
    model: str | None = Field(None, description="model used (name:version)")
    details: dict[str, Any] = Field(default_factory=dict, description="live details (training: epoch, losses, R²)")
    result: dict[str, Any] | None = Field(None, description="final output (training: the registered model)")


class JobAccepted(BaseModel):
    """202 answer of a submission: poll ``GET /jobs/{job_id}``."""

    job_id: str
    status: JobStatus
    job: JobPublic


class Neighbour(BaseModel):
    """A training structure near the predicted one in the model's fingerprint space."""

    name: str
    distance: float = Field(description="standardized fingerprint distance (the domain threshold is in the card)")
    label: float = Field(description="its GCMC label, in the model's own unit (mol/kg for retnet-ch4, whatever "
                                     "`units` the request asked for)")


class CurvePoint(BaseModel):
    """One point of a predicted isotherm."""

    pressure_bar: float = Field(description="pressure (bar)")
    value: float = Field(description="uptake at that pressure, in the prediction's unit")
    uncertainty: float | None = Field(None, description="one standard deviation, same unit")


class PredictionValue(BaseModel):
    """Model output for one structure."""

    value: float
    unit: str
    property: str
    model: str
    uncertainty: float | None = Field(
        None, description="one standard deviation of `value`, same unit, calibrated so that ±1.96σ covers 95 % "
                          "of held-out errors (None: the model has no calibration)")
    in_domain: bool | None = Field(
        None, description="whether the structure lies within the model's applicability domain (None: unknown)")
    neighbours: list[Neighbour] | None = Field(None, description="the 5 nearest training structures, nearest first")
    values: list[CurvePoint] | dict[str, float] | None = Field(
        None, description="every output of a multi-output model: for a curve model (outputs at increasing "
                          "pressures, e.g. retnet-ch4-isotherm) its points in increasing pressure; otherwise "
                          "{target name: value}")
    deliverable_capacity: float | None = Field(
        None, description="uptake at 65 bar minus uptake at 5.8 bar (298 K), same unit: a curve model covering both")
    deliverable_capacity_uncertainty: float | None = Field(
        None, description="σ of the deliverable capacity (the two points' σ combined as if independent)")


class StructureInfo(BaseModel):
    """The parsed structure."""

    name: str
    sha256: str
    formula: str
    n_atoms: int


class Timings(BaseModel):
    """Where the time went (ms)."""

    parse_ms: float | None = None
    voxelize_ms: float | None = None
    inference_ms: float | None = None
    cache_hit: bool | None = None


class PredictionResult(BaseModel):
    """Body of a finished ``POST /predict`` and of each item of a screening's results."""

    job_id: str
    status: JobStatus
    prediction: PredictionValue | None = None
    structure: StructureInfo | None = None
    timings: Timings
    item_id: str | None = None
    name: str | None = Field(None, description="uploaded file name")
    error: str | None = None


class ResultsPage(BaseModel):
    """``GET /jobs/{id}/results``: items sorted by predicted value (descending by default)."""

    job_id: str
    status: JobStatus
    total: int
    limit: int
    offset: int
    sort: str = Field("value", description="what the items are ranked by: value, or a curve model's "
                                           "uptake_<p>bar / deliverable_65_5.8bar")
    items: list[PredictionResult]


class Metric(BaseModel):
    """A metric with its 95% bootstrap confidence interval."""

    model_config = ConfigDict(extra="allow")

    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class ModelPublic(BaseModel):
    """A registered model version."""

    name: str
    version: str
    ref: str
    targets: list[dict[str, Any]]
    voxel_params: dict[str, Any]
    params_hash: str
    training_data: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    preliminary: bool = False
    shipped: bool = False
    created_at: datetime
    descriptors: list[str] = Field(default_factory=list, description="exact crystal descriptors the model reads "
                                   "beside the energy grid (log_density: from the CIF; energy_histogram: of the "
                                   "grid); empty: the grid only")
    trees: dict[str, Any] | None = Field(None, description="a hybrid model's Extra Trees: the network's weight in "
                                         "the blend, the descriptors the trees read (and, for a curve's trees, "
                                         "`outputs` and the `anchor` output); null: the network alone")


class ModelList(BaseModel):
    """``GET /models``."""

    data: list[ModelPublic]
    count: int
    default: str | None = None


class ModelVersions(BaseModel):
    """``GET /models/{name}``."""

    name: str
    versions: list[ModelPublic]
    latest: ModelPublic


class ComponentHealth(BaseModel):
    """One dependency's state."""

    status: str
    detail: str | None = None


class Health(BaseModel):
    """``GET /health``: liveness and readiness."""

    status: str
    mode: str
    database: ComponentHealth
    broker: ComponentHealth
    storage: ComponentHealth
    model: ComponentHealth
    version: str


class JobList(BaseModel):
    """A page of the caller's jobs, newest first."""

    data: list[JobPublic]
    total: int
    limit: int
    offset: int


#: A quantity of a model's outputs (a design target, a sort key): ``value``, ``uptake_<p>bar`` (a curve model's
#: point at p bar) or ``deliverable_65_5.8bar`` (see app.services.outputs).
QUANTITY_PATTERN = r"^(value|uptake_[0-9]+(\.[0-9]+)?bar|deliverable_65_5\.8bar)$"
DesignQuantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]
#: A finite number (JSON has no NaN, but Python clients could send one).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: A tolerance: finite and > 0.
Tolerance = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class DesignRequest(BaseModel):
    """``POST /design``: which structures come closest to a target uptake or isotherm?"""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, max_length=300, description="name or name:version (default: the default model)")
    target: dict[DesignQuantity, FiniteFloat] = Field(
        min_length=1, max_length=16,
        description="quantity → target value in `units`: `value` (the model's own output), or for a curve model "
                    "`uptake_<p>bar` at its pressures and `deliverable_65_5.8bar`; e.g. {\"uptake_65bar\": 12, "
                    "\"uptake_5.8bar\": 4}. A quantity the model does not give is a 422 naming those it does")
    tolerance: Tolerance | dict[DesignQuantity, Tolerance] = Field(
        description="half-width of the acceptable band, same unit: one number for every quantity or one per "
                    "quantity (then exactly the target's)")
    units: Literal["mol/kg", "cm3(STP)/cm3"] = "mol/kg"
    top_k: int = Field(10, ge=1, le=1000, description="candidates returned")
    in_domain_only: bool = Field(False, description="rank only structures inside the model's applicability domain")
    sources: list[Literal["service", "library"]] = Field(
        default_factory=lambda: ["service", "library"], min_length=1, max_length=2,
        description="service: every structure you predicted with this model; library: the model's shipped "
                    "predictions of all CoRE MOF 2019 structures")
    name: str | None = Field(None, max_length=200, description="a label for the job")
    generate: int = Field(0, ge=0, le=8, description="also design this many energy landscapes with the generator "
                                                      "(a VAE of CoRE MOF grids searched by particle swarms), each "
                                                      "with its nearest real structures; 0: screening only")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the generator's swarms")


class DesignCandidate(BaseModel):
    """One ranked structure of a design job's ``result.candidates``."""

    rank: int
    name: str
    source: Literal["service", "library"]
    sha256: str | None = None
    predicted: dict[str, float] = Field(description="the target's quantities, predicted, in the job's units")
    uncertainty: dict[str, float] | None = Field(None, description="their σ, same unit")
    in_domain: bool | None = None
    distance: float = Field(description="root mean square of predicted − target over the target's quantities")
    within_tolerance: bool
    p_within: float | None = Field(None, description="probability that every true value lies within tolerance "
                                                     "(Normal(predicted, σ), quantities independent)")
