"""ORM tables: job, job_item, structure, prediction, model_version."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db.base import Base


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh UUID4 as text."""
    return str(uuid.uuid4())


class JobStatus(enum.StrEnum):
    """Life cycle of jobs and job items: queued → running → succeeded | failed | cancelled."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


FINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class JobKind(enum.StrEnum):
    """What a job does."""

    predict = "predict"
    screening = "screening"
    training = "training"
    design = "design"


class Job(Base):
    """One request of a user: a prediction, a screening or a training run."""

    __tablename__ = "job"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_job_idempotency_key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.queued)
    name: Mapped[str | None] = mapped_column(String(200))
    model_ref: Mapped[str | None] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_failed: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    #: Live details of a running job (training: epoch, losses, validation R²).
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: Final output of a job (training: the registered model and its metrics).
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    input_key: Mapped[str | None] = mapped_column(String(400))
    error: Mapped[str | None] = mapped_column(Text)
    #: Name of the API key that created the job (None: no key, auth off); only it (and admins) may see it.
    owner: Mapped[str | None] = mapped_column(String(100), index=True)
    #: ``<owner>/<Idempotency-Key>`` of the request that created the job: a retry by the same owner with the
    #: same key returns this job.
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    #: Training jobs: the task execution that holds the job and until when (renewed by its heartbeat).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    items: Mapped[list[JobItem]] = relationship(back_populates="job", cascade="all, delete-orphan")


class Structure(Base):
    """A parsed crystal, keyed by its canonical structure hash."""

    __tablename__ = "structure"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    formula: Mapped[str] = mapped_column(String(300))
    n_atoms: Mapped[int] = mapped_column(Integer)
    #: Crystal density (g/cm³) from the CIF: converts mol/kg to cm³(STP)/cm³.
    density_g_cm3: Mapped[float | None] = mapped_column(Float)
    raw_key: Mapped[str] = mapped_column(String(400), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class JobItem(Base):
    """One structure of a job (a predict job has one item, a screening many)."""

    __tablename__ = "job_item"
    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(300))
    raw_key: Mapped[str] = mapped_column(String(400))
    structure_sha256: Mapped[str | None] = mapped_column(ForeignKey("structure.sha256"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.queued)
    error: Mapped[str | None] = mapped_column(Text)
    #: ``structure`` (the user's file: 422 for /predict) or ``internal``.
    error_code: Mapped[str | None] = mapped_column(String(32))
    parse_ms: Mapped[float | None] = mapped_column(Float)
    voxelize_ms: Mapped[float | None] = mapped_column(Float)
    inference_ms: Mapped[float | None] = mapped_column(Float)
    cache_hit: Mapped[bool | None] = mapped_column(Boolean)
    batch_size: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Pipeline stage that must run next: ``voxels`` (parse + grid) or ``inference``.
    stage: Mapped[str] = mapped_column(String(16), default="voxels")
    #: The task execution working on the item and until when (renewed by its heartbeat); None: waiting in a
    #: queue. An expired lease means its worker died: the sweeper sends the item again.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    job: Mapped[Job] = relationship(back_populates="items")
    structure: Mapped[Structure | None] = relationship()
    prediction: Mapped[Prediction | None] = relationship(back_populates="item", uselist=False)


class ModelVersion(Base):
    """A registered model: card metadata, voxel parameters and where its files live in storage."""

    __tablename__ = "model_version"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(100))
    ref: Mapped[str] = mapped_column(String(301), unique=True)
    params_hash: Mapped[str] = mapped_column(String(32))
    card: Mapped[dict[str, Any]] = mapped_column(JSON)
    storage_prefix: Mapped[str] = mapped_column(String(400))
    shipped: Mapped[bool] = mapped_column(Boolean, default=False)
    #: API key whose training job made it (its name is ``owner/...``); None: shipped or admin-registered,
    #: readable by everyone and writable by nobody else.
    owner: Mapped[str | None] = mapped_column(String(100), index=True)
    training_job_id: Mapped[str | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Prediction(Base):
    """The model output for one job item (idempotent: one row per item)."""

    __tablename__ = "prediction"
    __table_args__ = (Index("ix_prediction_structure_model", "structure_sha256", "model_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    item_id: Mapped[str] = mapped_column(ForeignKey("job_item.id", ondelete="CASCADE"), unique=True)
    structure_sha256: Mapped[str] = mapped_column(ForeignKey("structure.sha256"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("model_version.id"), index=True)
    params_hash: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float, index=True)
    values: Mapped[list[float]] = mapped_column(JSON)
    #: One standard deviation of ``value`` (same unit); None when the model has no calibrated uncertainty.
    uncertainty: Mapped[float | None] = mapped_column(Float)
    #: σ of each of ``values``.
    uncertainties: Mapped[list[float] | None] = mapped_column(JSON)
    #: Within the model's applicability domain; None when the model ships no domain.
    in_domain: Mapped[bool | None] = mapped_column(Boolean)
    #: The nearest training structures: ``[{"name", "distance", "label"}, ...]``, nearest first.
    neighbours: Mapped[list[dict] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    item: Mapped[JobItem] = relationship(back_populates="prediction")
    model: Mapped[ModelVersion] = relationship()


class ApiKey(Base):
    """An API key: stored as the sha256 of the secret (the secret itself is shown once, at creation)."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
