"""Object storage: one :class:`ObjectStore` interface, a local folder and an S3-compatible implementation.

``store_from_uri("file:///data/store")`` → :class:`LocalStore`; ``store_from_uri("s3://bucket/prefix",
endpoint_url=...)`` → :class:`S3Store`. Keys are ``/``-separated relative paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from models.voxel_cache import crystal_block_key as crystal_block_key  # noqa: F401
from models.voxel_cache import decode_block as decode_block  # noqa: F401

# The one voxel-cache key scheme, shared with models.pipeline's cache folders (re-exported: key of stored grids).
from models.voxel_cache import decode_grid as decode_grid  # noqa: F401  (one home: models.voxel_cache)
from models.voxel_cache import encode_block as encode_block  # noqa: F401
from models.voxel_cache import encode_grid as encode_grid  # noqa: F401
from models.voxel_cache import voxel_key as voxel_key  # noqa: F401


class ObjectNotFoundError(KeyError):
    """No object under this key."""


class StorageUnavailableError(OSError):
    """Storage answered, but not with an object the database says it holds (a raw upload is missing: an
    unmounted or half-restored volume). Transient: retried like any storage outage."""


@runtime_checkable
class ObjectStore(Protocol):
    """Minimal blob store used by the service."""

    uri: str

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` atomically (readers see the old or the new object)."""

    def get(self, key: str) -> bytes:
        """Read an object; raise :class:`ObjectNotFoundError` when missing."""

    def exists(self, key: str) -> bool:
        """True when an object is stored under ``key``."""

    def delete(self, key: str) -> None:
        """Remove an object (no error when missing)."""

    def list(self, prefix: str) -> list[str]:
        """Keys starting with ``prefix``, sorted."""

    def list_with_times(self, prefix: str) -> list[tuple[str, datetime]]:
        """``(key, last modified)`` of the keys starting with ``prefix``, sorted by key (UTC datetimes: file
        mtime for a local folder, ``LastModified`` for S3)."""

    def ping(self) -> None:
        """Raise when the store cannot be reached."""


def put_fileobj(store: ObjectStore, key: str, fileobj: BinaryIO) -> None:
    """Write a file object under ``key``, streamed when the store can (``put_file``), else read whole."""
    put_file = getattr(store, "put_file", None)
    if put_file is not None:
        put_file(key, fileobj)
    else:
        store.put(key, fileobj.read())


def validate_key(key: str) -> str:
    """Refuse keys that could escape the store root."""
    if not key or key.startswith("/") or "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def store_from_uri(uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> ObjectStore:
    """Build the store for ``uri`` (``file://`` or a plain path → local folder, ``s3://`` → S3)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        from app.storage.local import LocalStore

        path = unquote(parsed.path) if parsed.scheme == "file" else uri
        return LocalStore(path)
    if parsed.scheme == "s3":
        from app.storage.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path.strip("/"), endpoint_url=endpoint_url, region=region)
    raise ValueError(f"unsupported storage URI {uri!r}: use file:///path or s3://bucket/prefix")


@lru_cache(maxsize=8)
def cached_store(uri: str, endpoint_url: str | None = None, region: str | None = None) -> ObjectStore:
    """Process-wide store instance per configuration."""
    return store_from_uri(uri, endpoint_url=endpoint_url, region=region)


# --- content-addressed keys --------------------------------------------------------------------------------------

def raw_key(content_sha256: str, filename: str) -> str:
    """Key of a raw upload (content-addressed; the suffix keeps the file type)."""
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else "bin"
    suffix = "".join(c for c in suffix if c.isalnum())[:8] or "bin"
    return f"uploads/{content_sha256[:2]}/{content_sha256}.{suffix}"


def inputs_stored(store: ObjectStore, structure_sha256: str, params_hash: str, blocks: Sequence[str] = ()) -> bool:
    """Whether a structure's grid (voxel parameters ``params_hash``) and its crystal blocks ``blocks`` (what a
    model's trees read of the crystal itself) are all stored: then a prediction needs no parse and no voxelization."""
    return store.exists(voxel_key(structure_sha256, params_hash)) and all(
        store.exists(crystal_block_key(structure_sha256, b)) for b in blocks)
