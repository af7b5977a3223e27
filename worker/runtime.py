"""Per-process worker state: settings, store, lazily loaded models (keyed by model ref), device, threads."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select

from app.core.config import Settings
from app.db.session import session_scope
from app.db.tables import ModelVersion
from app.storage import ObjectStore, cached_store

if TYPE_CHECKING:
    from models.forward_pool import ForwardPool

log = logging.getLogger(__name__)


class WorkerContext:
    """What the tasks of one worker process share (created once per process)."""

    def __init__(self, settings: Settings, *, voxel_threads: int | None = 1) -> None:
        self.settings = settings
        self.voxel_threads = voxel_threads
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._store: tuple[tuple[Any, ...], ObjectStore] | None = None
        self._forward_pool: ForwardPool | Literal[False] | None = None  # False: one stream (no pool)
        self._pool_lock = threading.Lock()

    @property
    def db_url(self) -> str:
        """Database URL."""
        return self.settings.db_url

    @property
    def store(self) -> ObjectStore:
        """The object store (one client per process), looked up again only when its settings change.

        ``Settings.store_uri`` resolves the data folder on disk (a few syscalls): the tasks read the store once
        per grid, so the resolved store is kept here.
        """
        s = self.settings
        key = (s.storage_uri, s.data_dir, s.s3.endpoint_url, s.s3.region)
        known = self._store
        if known is None or known[0] != key:
            known = self._store = (key, cached_store(s.store_uri, s.s3.endpoint_url, s.s3.region))
        return known[1]

    def forward_pool(self) -> ForwardPool | None:
        """The process's :class:`models.forward_pool.ForwardPool` for CPU forward passes (created on first use), or
        None: on a GPU, or with one stream (``inference.cpu_streams`` 1, or a process whose torch runs on one
        thread, such as a prefork child): passes then run in the task's thread on torch's own threads.

        Streams default to torch's own thread count of the process (its physical cores, or ``OMP_NUM_THREADS``).
        """
        known = self._forward_pool
        if known is not None:
            return known or None
        if self.device.split(":")[0] != "cpu":
            return None
        with self._pool_lock:
            if self._forward_pool is None:
                from models.forward_pool import ForwardPool, process_torch_threads

                streams = self.settings.inference.cpu_streams or process_torch_threads()
                self._forward_pool = ForwardPool(streams) if streams > 1 else False
            return self._forward_pool or None

    def close(self) -> None:
        """Stop the forward pool's threads (a later pass starts a new pool)."""
        with self._pool_lock:
            pool, self._forward_pool = self._forward_pool, None
        if pool:
            pool.close()

    @property
    def device(self) -> str:
        """Torch device for inference/training: the setting, else CUDA when available."""
        if self.settings.device:
            return self.settings.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def model_row(self, ref: str) -> dict[str, Any]:
        """Registry row of ``ref`` as a dict."""
        with session_scope(self.db_url) as session:
            row = session.scalar(select(ModelVersion).where(ModelVersion.ref == ref))
            if row is None:
                raise LookupError(f"model {ref} is not registered")
            return {"id": row.id, "ref": row.ref, "params_hash": row.params_hash, "card": row.card,
                    "prefix": row.storage_prefix}

    def model(self, ref: str) -> Any:
        """The loaded model for ``ref`` (downloaded from storage once, then cached in this process)."""
        with self._lock:
            loaded = self._models.get(ref)
            if loaded is not None:
                return loaded
            row = self.model_row(ref)
            local = self.fetch_model_files(row["prefix"])
            from models.artifacts import load_model

            loaded = load_model(local, device=self.device)
            self._models[ref] = loaded
            log.info("model %s loaded on %s", ref, self.device)
            return loaded

    def fetch_model_files(self, prefix: str) -> Path:
        """Copy a model's files from storage to the local cache folder (once)."""
        target = self.settings.cache_dir / prefix.strip("/")
        marker = target / ".complete"
        if marker.exists():
            return target
        tmp = target.with_name(target.name + f".tmp-{threading.get_ident()}")
        shutil.rmtree(tmp, ignore_errors=True)
        store = self.store
        keys = store.list(prefix)
        if not keys:
            raise LookupError(f"no model files under {prefix} in {store.uri}")
        for key in keys:
            path = tmp / key[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(store.get(key))
        (tmp / ".complete").write_text("ok")
        if target.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(target)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        return target


_contexts: dict[int, WorkerContext] = {}


def limit_torch_threads(n: int = 1) -> None:
    """``torch.set_num_threads(n)`` (CPU pool children: parallelism comes from Celery concurrency)."""
    import torch

    torch.set_num_threads(n)
