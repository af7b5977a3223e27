"""Model registry: register model folders (DB row + files in storage), resolve ``name[:version]``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, true
from sqlalchemy.orm import Session

from app.db.tables import ModelVersion
from app.services.errors import ConflictError, NotFoundError, UnavailableError, UnprocessableError
from app.services.keys import LOCAL, Caller
from app.storage import ObjectStore

log = logging.getLogger(__name__)

CARD_NAMES = ("card.json", "model_card.json", "model.json")


def find_card_file(directory: Path) -> Path:
    """The JSON card of a model folder."""
    for name in CARD_NAMES:
        if (directory / name).is_file():
            return directory / name
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and {"name", "version", "voxel_params"} <= data.keys():
            return path
    raise FileNotFoundError(f"no model card (JSON with name, version, voxel_params) in {directory}")


def read_card(directory: Path) -> dict[str, Any]:
    """Load a model card as a plain dict (no torch import)."""
    card: dict[str, Any] = json.loads(find_card_file(directory).read_text())
    return card


def params_hash_of(card: dict[str, Any]) -> str:
    """Voxel-parameter hash of a card (half of the voxel cache key)."""
    from models.params import VoxelParams

    return VoxelParams(**(card.get("voxel_params") or {})).params_hash()


def model_prefix(name: str, version: str) -> str:
    """Storage prefix of a model's files."""
    return f"models/{name}/{version}/"


def registry_name(name: str, owner: str | None) -> str:
    """The registry name of a model: ``owner/name`` for a key's own models, ``name`` for global ones."""
    return f"{owner}/{name}" if owner else name


def register_model_dir(session: Session, store: ObjectStore, directory: Path, *, shipped: bool = False,
                       training_job_id: str | None = None, owner: str | None = None,
                       exist_ok: bool = True) -> ModelVersion:
    """Upload a model folder and add its registry row. Caller commits.

    ``owner`` puts it in that key's namespace (``owner/name:version``). An existing name:version is returned
    as it is with ``exist_ok`` (start-up registration of shipped models), else a 409 :class:`ConflictError`:
    a model version is never silently kept in place of a new one.
    """
    directory = Path(directory)
    card = read_card(directory)
    name, version = registry_name(str(card["name"]), owner), str(card["version"])
    ref = f"{name}:{version}"
    existing = session.scalar(select(ModelVersion).where(ModelVersion.ref == ref))
    if existing is not None:
        if exist_ok:
            return existing
        raise ConflictError(f"model {ref} already exists; choose another version (or leave it out for a new one)")
    prefix = model_prefix(name, version)
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            store.put(prefix + path.relative_to(directory).as_posix(), path.read_bytes())
    row = ModelVersion(name=name, version=version, ref=ref, params_hash=params_hash_of(card), card=card,
                       storage_prefix=prefix, shipped=shipped, training_job_id=training_job_id, owner=owner)
    session.add(row)
    session.flush()
    return row


def register_shipped_model(session: Session, store: ObjectStore) -> ModelVersion | None:
    """Register the shipped models: ``models.artifacts.shipped_model_dir()`` as the default, and the other folders
    beside it (pre-trained backbones, usable as ``base_model``) as ordinary entries.

    Returns the default's row (None when there is no shipped default model).
    """
    try:
        from models.artifacts import shipped_model_dir

        directory = Path(shipped_model_dir())
    except Exception as exc:  # noqa: BLE001  (the shipped model is optional: report and go on)
        log.warning("no shipped model: %s", exc)
        return None
    if not directory.is_dir():
        log.warning("no shipped model at %s", directory)
        return None
    for other in sorted(p for p in directory.parent.iterdir() if p.is_dir() and p != directory):
        try:
            find_card_file(other)
        except FileNotFoundError:
            continue
        register_model_dir(session, store, other, shipped=False)
    try:
        find_card_file(directory)
    except FileNotFoundError as exc:
        log.warning("shipped model folder has no card: %s", exc)
        return None
    return register_model_dir(session, store, directory, shipped=True)


def _visible(caller: Caller) -> Any:
    """Global models (no owner) and the caller's own; admins see all."""
    return true() if caller.admin else or_(ModelVersion.owner.is_(None), ModelVersion.owner == caller.name)


def list_models(session: Session, name: str | None = None, caller: Caller = LOCAL) -> list[ModelVersion]:
    """Registered models the caller may use, newest first."""
    query = (select(ModelVersion).where(_visible(caller))
             .order_by(ModelVersion.created_at.desc(), ModelVersion.version.desc()))
    if name is not None:
        query = query.where(ModelVersion.name == name)
    return list(session.scalars(query))


def _available(session: Session, caller: Caller = LOCAL) -> str:
    refs = [m.ref for m in list_models(session, caller=caller)]
    return ", ".join(refs) if refs else "none"


def resolve_model(session: Session, ref: str | None, default: str | None = None,
                  caller: Caller = LOCAL) -> ModelVersion:
    """Find the model for ``name``, ``name:version`` or the default.

    Raises 503 when no model is registered at all, 422 naming the available models when ``ref`` is unknown.
    """
    ref = (ref or "").strip() or None
    if ref is None:
        ref = default
        if ref is None:
            shipped = session.scalars(select(ModelVersion).where(ModelVersion.shipped.is_(True))
                                      .order_by(ModelVersion.created_at.desc())).first()
            latest = shipped or session.scalars(select(ModelVersion).where(_visible(caller))
                                                .order_by(ModelVersion.created_at.desc())).first()
            if latest is None:
                raise UnavailableError(
                    "no model is registered: the shipped default model is missing from this installation; "
                    "train one with POST /training-jobs (or `retnet train`) and retry"
                )
            return latest
    name, _, version = ref.partition(":")
    query = select(ModelVersion).where(ModelVersion.name == name, _visible(caller))
    if version:
        query = query.where(ModelVersion.version == version)
    row = session.scalars(query.order_by(ModelVersion.created_at.desc())).first()
    if row is None:
        if not list_models(session, caller=caller):
            raise UnavailableError(
                f"model '{ref}' is not available: no model is registered; train one with POST /training-jobs"
            )
        raise UnprocessableError(f"unknown model '{ref}'; available models: {_available(session, caller)}")
    return row


def get_model_versions(session: Session, name: str, caller: Caller = LOCAL) -> list[ModelVersion]:
    """All versions of ``name`` the caller may see (404 listing the available models when none)."""
    rows = list_models(session, name=name.partition(":")[0], caller=caller)
    if ":" in name:
        rows = [r for r in rows if r.ref == name]
    if not rows:
        raise NotFoundError(f"unknown model '{name}'; available models: {_available(session, caller)}")
    return rows
