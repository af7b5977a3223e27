"""Service settings (pydantic-settings, env prefix ``RETNET_``, nested delimiter ``__``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MB = 1024 * 1024


class UploadSettings(BaseModel):
    """Upload limits in bytes."""

    max_cif_bytes: int = Field(20 * MB, gt=0)
    max_zip_bytes: int = Field(500 * MB, gt=0)
    #: Limit on the sum of uncompressed member sizes of a zip (zip-bomb guard).
    max_unzipped_bytes: int = Field(2048 * MB, gt=0)
    max_files: int = Field(20000, gt=0)


class InferenceSettings(BaseModel):
    """Batching of the ``inference`` queue (celery-batches): up to B grids or T ms."""

    batch_size: int = Field(32, ge=1, le=4096)
    batch_timeout_ms: int = Field(20, ge=1)


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
    #: Model used when a request names none: ``name`` or ``name:version``; default: the shipped model,
    #: else the latest registered one.
    default_model: str | None = None
    #: Torch device for inference and training (``cpu``, ``cuda``, ``cuda:1``); default: CUDA when available.
    device: str | None = None
    #: Start Celery workers inside the API process; default: when the broker is ``memory://``.
    embedded_workers: bool | None = None
    #: Threads of the in-process worker (embedded mode); default: CPU count (at least 2).
    embedded_concurrency: int | None = None
    #: Redis visibility timeout in s: an unacknowledged task of a lost worker is redelivered after it.
    visibility_timeout_s: int = Field(3600, ge=1)
    #: A job or item still ``queued`` (and its job without progress) this long, in s, lost its task message:
    #: the sweeper sends it again.
    sweep_after_s: float = Field(600, gt=0)
    #: How often the API process runs the sweeper, in s (0: never; then run ``retnet sweep`` from cron).
    sweep_interval_s: float = Field(60, ge=0)
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (tests call ``get_settings.cache_clear()``)."""
    return Settings()
