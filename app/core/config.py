"""Service settings (pydantic-settings, env prefix ``RETNET_``, nested delimiter ``__``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024
#: Room for multipart boundaries, part headers and form fields on top of the largest file a request may carry.
MULTIPART_OVERHEAD_BYTES = 1 * MB


class UploadSettings(BaseModel):
    """Upload limits in bytes."""

    max_cif_bytes: int = Field(20 * MB, gt=0)
    max_zip_bytes: int = Field(500 * MB, gt=0)
    #: Limit on the sum of uncompressed member sizes of a zip (zip-bomb guard).
    max_unzipped_bytes: int = Field(2048 * MB, gt=0)
    #: Structures per screening (CIF files plus CIF members of zips), counted while reading.
    max_files: int = Field(20000, gt=0)
    #: Uncompressed size / compressed size above which a zip member is refused (zip-bomb guard; CIF text
    #: deflates about 4-10x), for members larger than ``compression_ratio_min_bytes``.
    max_compression_ratio: float = Field(200.0, gt=1)
    compression_ratio_min_bytes: int = Field(1 * MB, ge=0)
    #: Bytes of one HTTP request body, counted while it arrives (413 as soon as it passes); default
    #: max(max_zip_bytes, max_cif_bytes) + 1 MB of multipart overhead.
    max_request_bytes: int | None = Field(None, gt=0)

    @property
    def request_limit(self) -> int:
        """The per-request body limit in bytes (``max_request_bytes`` or its default)."""
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        return max(self.max_zip_bytes, self.max_cif_bytes) + MULTIPART_OVERHEAD_BYTES


class InferenceSettings(BaseModel):
    """Inference: grids per forward pass (a chunk of a screening is predicted in passes of this size)."""

    batch_size: int = Field(64, ge=1, le=4096)
    #: Forward passes a worker process runs at once on the CPU, each on one torch thread
    #: (:class:`models.forward_pool.ForwardPool`); default: torch's own thread count of the process (its physical
    #: cores, or ``OMP_NUM_THREADS``). 1: each pass runs in its
    #: task's thread on torch's own threads. Ignored on a GPU.
    cpu_streams: int | None = Field(None, ge=1, le=256)


class PipelineSettings(BaseModel):
    """How screenings are cut into tasks and how lost work is found again (times in s)."""

    #: Items per task: a screening of n structures is sent as chunks of clamp(ceil(n / 8), min, max) items,
    #: so that small screenings still spread over several workers and big ones amortise per-task costs.
    chunk_max: int = Field(64, ge=1, le=1024)
    chunk_min: int = Field(8, ge=1, le=1024)
    #: The same cap for chunks sent straight to inference (known bytes, re-sent items): a forward pass costs less
    #: per item than parsing, so bigger chunks amortise the per-task costs (one lease, reads and writes each);
    #: measured on a 2,000-structure warm screening in scaled mode: 0.67 → 0.69 of the model's own rate.
    inference_chunk_max: int = Field(256, ge=1, le=4096)
    #: A task holds its items for this long and renews the hold every third of it (heartbeat); an item whose
    #: hold expired lost its worker and is sent again by the sweeper.
    lease_s: float = Field(60, gt=0)
    #: Deliveries of an item to a worker that then died before finishing it; after that many the item fails
    #: with the reason instead of killing workers forever (a poison structure).
    max_attempts: int = Field(5, ge=1)
    #: Retries of a task after a transient infrastructure error (database, broker, storage), with exponential
    #: backoff capped at ``retry_backoff_max_s``; after them its items are released to the sweeper, never failed.
    max_retries: int = Field(12, ge=0)
    retry_backoff_max_s: int = Field(30, ge=1)
    #: Soft / hard time limit of one chunk task (the hard limit kills the pool process; its items' leases then
    #: expire and they are sent again). Must stay below ``visibility_timeout_s``.
    task_soft_time_limit_s: int = Field(540, ge=1)
    task_time_limit_s: int = Field(600, ge=1)
    #: Time limit in s for reading one CIF in the worker (the pymatgen fallback for non-P1 files runs in a
    #: helper process that is killed after it); a structure over it fails its item.
    parse_timeout_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _chunk_bounds(self) -> PipelineSettings:
        if self.chunk_min > min(self.chunk_max, self.inference_chunk_max):
            raise ValueError(f"pipeline.chunk_min ({self.chunk_min}) must not exceed pipeline.chunk_max "
                             f"({self.chunk_max}) nor pipeline.inference_chunk_max ({self.inference_chunk_max})")
        return self


class AuthSettings(BaseModel):
    """API keys and per-key limits."""

    #: Require ``Authorization: Bearer <key>`` on every API call; default: on in scaled mode (a Postgres
    #: database), off in embedded mode (a single user on 127.0.0.1).
    required: bool | None = None
    #: Requests per minute and key (token bucket, per API process); 429 with Retry-After beyond it.
    requests_per_minute: int = Field(600, ge=1)
    #: Jobs a key may have queued or running at once; 429 beyond it.
    max_active_jobs: int = Field(20, ge=1)


class S3Settings(BaseModel):
    """S3-compatible storage options (credentials come from the usual AWS variables)."""

    endpoint_url: str | None = None
    region: str | None = None


class Settings(BaseSettings):
    """All configuration; ``get_settings()`` caches one instance per process."""

    model_config = SettingsConfigDict(env_prefix="RETNET_", env_nested_delimiter="__", extra="ignore")

    #: Folder of the embedded database, local storage and model cache.
    data_dir: Path = Path("data")
    #: SQLAlchemy URL; default ``sqlite:///<data_dir>/retnet.db`` (embedded).
    database_url: str | None = None
    #: Celery broker; default ``memory://`` (embedded: workers run in the API process).
    broker_url: str | None = None
    #: ``file:///path`` (default ``<data_dir>/store``) or ``s3://bucket/prefix``.
    storage_uri: str | None = None
    s3: S3Settings = S3Settings()
    upload: UploadSettings = UploadSettings()
    inference: InferenceSettings = InferenceSettings()
    pipeline: PipelineSettings = PipelineSettings()
    auth: AuthSettings = AuthSettings()
    #: Model used when a request names none: ``name`` or ``name:version``; default: the shipped model,
    #: else the latest registered one.
    default_model: str | None = None
    #: Torch device for inference and training (``cpu``, ``cuda``, ``cuda:1``); default: CUDA when available.
    device: str | None = None
    #: Start Celery workers inside the API process; default: when the broker is ``memory://``.
    embedded_workers: bool | None = None
    #: Threads of the in-process worker (embedded mode); default: CPU count (at least 2).
    embedded_concurrency: int | None = None
    #: Redis visibility timeout in s: an unacknowledged task of a lost worker is redelivered after it. Leases
    #: (``pipeline.lease_s``) find lost work much sooner; this only has to exceed the longest chunk task.
    visibility_timeout_s: int = Field(900, ge=1)
    #: An item waiting in a queue (no lease) whose job made no progress for this long, in s, lost its task
    #: message (a restarted broker, a failed send): the sweeper sends it again. A message that was only slow
    #: costs a duplicate that the lease check turns into a no-op.
    sweep_after_s: float = Field(30, gt=0)
    #: How often the API process runs the sweeper, in s (0: never; then run ``retnet sweep`` from cron).
    sweep_interval_s: float = Field(5, ge=0)
    #: Retention in days: the API's sweeper thread deletes, at most once an hour, finished jobs (items,
    #: predictions) older than this, the uploads no remaining job or structure uses and the voxel grids no
    #: remaining job uses that were written before then (``app.services.retention``; ``retnet purge`` does the
    #: same by hand). None: keep everything forever. Registered models are never deleted.
    retention_days: float | None = Field(None, gt=0)
    #: Register the shipped default model at start-up.
    register_shipped_model: bool = True

    @property
    def db_url(self) -> str:
        """Database URL with the embedded default filled in."""
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'retnet.db').resolve()}"

    @property
    def auth_required(self) -> bool:
        """Whether API keys are required (the setting, else: scaled mode with a Postgres database)."""
        if self.auth.required is not None:
            return self.auth.required
        return self.db_url.startswith("postgresql")

    @property
    def broker(self) -> str:
        """Broker URL with the embedded default filled in."""
        return self.broker_url or "memory://localhost/"

    @property
    def store_uri(self) -> str:
        """Storage URI with the embedded default filled in."""
        return self.storage_uri or (self.data_dir / "store").resolve().as_uri()

    @property
    def embedded(self) -> bool:
        """True when workers run in the API process."""
        if self.embedded_workers is not None:
            return self.embedded_workers
        return self.broker.startswith("memory://")

    @property
    def cache_dir(self) -> Path:
        """Local folder for downloaded model weights."""
        return (self.data_dir / "cache").resolve()


def settings_from_env(env: dict[str, str]) -> Settings:
    """Settings as a process with ``env`` (RETNET_* variables, nested keys included) would read them."""
    import os

    old = dict(os.environ)
    try:
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(old)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (tests call ``get_settings.cache_clear()``)."""
    return Settings()
