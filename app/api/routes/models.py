"""GET /models and GET /models/{name}: the registry."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CallerDep, SessionDep, SettingsDep
from app.db.tables import ModelVersion
from app.schemas import ModelList, ModelPublic, ModelVersions
from app.services import registry
from app.services.errors import ServiceError

router = APIRouter(prefix="/models", tags=["models"])


#: What a model card says of its trees that clients see (a curve's trees: also its outputs and anchor output).
PUBLIC_TREE_FIELDS = ("weight", "features", "n_trees", "outputs", "anchor")


def model_public(row: ModelVersion) -> ModelPublic:
    """ORM → API."""
    card = row.card or {}
    return ModelPublic(
        name=row.name, version=row.version, ref=row.ref, targets=list(card.get("targets") or []),
        voxel_params=dict(card.get("voxel_params") or {}), params_hash=row.params_hash,
        training_data=dict(card.get("training_data") or {}), metrics=dict(card.get("metrics") or {}),
        preliminary=bool(card.get("preliminary", False)), shipped=row.shipped, created_at=row.created_at,
        descriptors=list((card.get("descriptors") or {}).get("names") or []),
        trees=None if not card.get("trees") else {k: card["trees"][k] for k in PUBLIC_TREE_FIELDS
                                                   if k in card["trees"]},
    )


@router.get("", response_model=ModelList)
def list_models(session: SessionDep, settings: SettingsDep, caller: CallerDep) -> ModelList:
    """Every model version the caller may use (global ones and its own), newest first."""
    with session.begin():
        rows = registry.list_models(session, caller=caller)
        try:
            default = registry.resolve_model(session, None, settings.default_model, caller).ref if rows else None
        except ServiceError:
            default = None
        return ModelList(data=[model_public(r) for r in rows], count=len(rows), default=default)


@router.get("/{name:path}", response_model=ModelVersions, responses={404: {"description": "unknown model"}})
def read_model(name: str, session: SessionDep, caller: CallerDep) -> ModelVersions:
    """Versions of one model (``name``, ``owner/name`` or either with ``:version``)."""
    with session.begin():
        rows = registry.get_model_versions(session, name, caller)
        versions = [model_public(r) for r in rows]
        return ModelVersions(name=rows[0].name, versions=versions, latest=versions[0])
