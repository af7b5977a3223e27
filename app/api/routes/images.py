"""Pictures: a structure's energy grid (three mid slices) and the figures stored with each model.

``GET /structures/{sha256}/grid.png?model=REF`` draws the stored voxel grid of a structure the caller has
uploaded; ``GET /models/{ref}/images`` lists a model's figures and ``GET /models/{ref}/images/{name}.png``
serves one (parity plot, learning curves, training history, uncertainty calibration).
"""

from __future__ import annotations

import io
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import CallerDep, JobDep, SessionDep, SettingsDep, StoreDep
from app.db.tables import Job, JobItem
from app.services import registry
from app.services.errors import NotFoundError
from app.services.keys import Caller
from app.storage import ObjectNotFoundError, decode_grid, voxel_key
from models.design import design_grid_key

router = APIRouter(tags=["images"])

#: A structure hash in a path: :attr:`models.structure.Crystal.sha256` (lower-case hex).
SHA_PATTERN = r"^[0-9a-f]{64}$"
#: A figure's file stem in a model folder.
IMAGE_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"
#: Titles of the figures a model folder may carry, in the order a reader wants them.
IMAGE_TITLES = {
    "parity": "Parity plot: predicted against GCMC",
    "calibration": "Uncertainty calibration",
    "learning_curves": "Learning curves",
    "history": "Training history",
}
#: Browsers may keep a picture this long (s): a stored grid and a registered model's files never change.
CACHE_CONTROL = "private, max-age=3600"

PNG_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}}}


class ModelImage(BaseModel):
    """One figure stored with a model."""

    name: str = Field(description="file stem: GET /models/{ref}/images/{name}.png")
    title: str
    url: str


class ModelImages(BaseModel):
    """``GET /models/{ref}/images``: the figures of one model version."""

    model: str = Field(description="name:version")
    images: list[ModelImage]


@router.get("/structures/{sha256}/grid.png", response_class=Response,
            responses={**PNG_RESPONSES, 404: {"description": "unknown structure, or its grid is not stored"},
                       422: {"description": "unknown model"}})
def grid_png(
    sha256: Annotated[str, Path(pattern=SHA_PATTERN, description="the structure's sha256 (from a prediction)")],
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    model: Annotated[str | None, Query(description="model (name or name:version) whose voxel parameters made the "
                                                   "grid; default: the default model")] = None,
) -> Response:
    """Three orthogonal slices through the middle of a structure's energy grid (PNG).

    Only structures of the caller's own jobs (an admin key's: any) are shown; the grid is the one computed for
    ``model``'s voxel parameters, kept in the voxel cache until retention removes it.
    """
    with session.begin():
        if not _may_see_structure(session, sha256, caller):
            raise NotFoundError(f"no structure with sha256 '{sha256}' in your jobs")
        row = registry.resolve_model(session, model, settings.default_model, caller)
        params_hash, ref, voxel_params = row.params_hash, row.ref, dict(row.card.get("voxel_params") or {})
    try:
        grid = decode_grid(store.get(voxel_key(sha256, params_hash)))
    except ObjectNotFoundError:
        raise NotFoundError(f"the energy grid of structure {sha256[:12]}… for {ref} is not stored (never computed "
                            "with this model's voxel parameters, or removed by retention): predict it again") from None
    png = grid_slices_png(grid, boltzmann=bool(voxel_params.get("boltzmann", True)),
                          temperature_k=float(voxel_params.get("temperature") or 298.0))
    return Response(png, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL})


@router.get("/models/{ref:path}/images", response_model=ModelImages,
            responses={404: {"description": "unknown model"}})
def list_model_images(ref: str, session: SessionDep, store: StoreDep, caller: CallerDep) -> ModelImages:
    """The figures stored with a model version (``name``, ``owner/name``, either with ``:version``)."""
    ref, prefix = _model(session, ref, caller)
    names = [key[len(prefix):-len(".png")] for key in store.list(prefix)
             if key.endswith(".png") and "/" not in key[len(prefix):]]
    order = list(IMAGE_TITLES)
    names.sort(key=lambda n: (order.index(n) if n in order else len(order), n))
    return ModelImages(model=ref, images=[
        ModelImage(name=n, title=IMAGE_TITLES.get(n, n.replace("_", " ")), url=f"/models/{ref}/images/{n}.png")
        for n in names
    ])


@router.get("/models/{ref:path}/images/{name}.png", response_class=Response,
            responses={**PNG_RESPONSES, 404: {"description": "unknown model or figure"}})
def model_image(
    ref: str,
    name: Annotated[str, Path(pattern=IMAGE_NAME_PATTERN, description="figure name, e.g. parity")],
    session: SessionDep,
    store: StoreDep,
    caller: CallerDep,
) -> Response:
    """One figure of a model version (PNG), as the training wrote it."""
    ref, prefix = _model(session, ref, caller)
    try:
        data = store.get(f"{prefix}{name}.png")
    except ObjectNotFoundError:
        raise NotFoundError(f"model {ref} has no figure '{name}'") from None
    return Response(data, media_type="image/png", headers={"Cache-Control": CACHE_CONTROL})


def _model(session: Session, ref: str, caller: Caller) -> tuple[str, str]:
    """``(name:version, storage prefix)`` of the model version ``ref`` names (the latest for a bare name), or 404."""
    with session.begin():
        row = registry.get_model_versions(session, ref, caller)[0]
        return row.ref, row.storage_prefix


def _may_see_structure(session: Session, sha256: str, caller: Caller) -> bool:
    """True when one of the caller's jobs (any job, for an admin) holds this structure."""
    query = select(JobItem.id).where(JobItem.structure_sha256 == sha256)
    if not caller.admin:
        query = query.join(Job, Job.id == JobItem.job_id).where(Job.owner == caller.name)
    return session.scalar(query.limit(1)) is not None


@router.get("/jobs/{job_id}/designs/{index}.{suffix}", response_class=Response,
            responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}},
                       404: {"description": "unknown job, or no designed landscape with that index"}})
def designed_grid(
    job: JobDep,
    store: StoreDep,
    index: Annotated[int, Path(ge=0, le=63, description="the landscape's index in result.designed")],
    suffix: Annotated[str, Path(pattern=r"^(npy|png)$", description="npy: the raw grid; png: its mid slices")],
) -> Response:
    """A landscape designed by a design job's generator: the grid (``.npy``, float32 25³ Boltzmann factors) or a
    picture of its three mid slices (``.png``)."""
    try:
        data = store.get(design_grid_key(job.id, index))
    except ObjectNotFoundError:
        raise NotFoundError(f"job {job.id} has no designed landscape {index}") from None
    if suffix == "npy":
        disposition = f'attachment; filename="design_{job.id}_{index}.npy"'
        return Response(data, media_type="application/octet-stream",
                        headers={"Cache-Control": CACHE_CONTROL, "Content-Disposition": disposition})
    return Response(grid_slices_png(np.load(io.BytesIO(data))), media_type="image/png",
                    headers={"Cache-Control": CACHE_CONTROL})


def grid_slices_png(grid: np.ndarray, *, boltzmann: bool = True, temperature_k: float = 298.0) -> bytes:
    """PNG of the three orthogonal mid slices of a voxel grid (pure: no I/O).

    Parameters
    ----------
    grid : np.ndarray (n, n, n)
        Boltzmann factors exp(−V/k_BT) (``boltzmann``), or probe energies V/k_B in K.
    boltzmann : bool
        What the grid holds; sets the colour scale (0 … the 99.5th percentile, or a diverging scale
        around V = 0 K).
    temperature_k : float
        Temperature of the Boltzmann factor (K), for the colour-bar label.
    """
    from matplotlib.figure import Figure

    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 3:
        raise ValueError(f"a voxel grid has 3 axes, got shape {grid.shape}")
    finite = grid[np.isfinite(grid)]
    if boltzmann:
        cmap, vmin = "viridis", 0.0
        vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
        vmax = max(vmax, 1e-6)
        label = rf"Boltzmann factor $\exp(-V/k_\mathrm{{B}}T)$, T = {temperature_k:g} K"
    else:
        cmap = "RdBu_r"
        low = float(np.percentile(finite, 0.5)) if finite.size else -1.0
        vmin, vmax = min(low, -1.0), -min(low, -1.0)
        label = r"probe energy $V/k_\mathrm{B}$ (K)"
    mids = [n // 2 for n in grid.shape]
    slices = [
        (grid[mids[0], :, :], f"a = ½ (plane of b, c; slice {mids[0] + 1}/{grid.shape[0]})", ("c", "b")),
        (grid[:, mids[1], :], f"b = ½ (plane of a, c; slice {mids[1] + 1}/{grid.shape[1]})", ("c", "a")),
        (grid[:, :, mids[2]], f"c = ½ (plane of a, b; slice {mids[2] + 1}/{grid.shape[2]})", ("b", "a")),
    ]
    fig = Figure(figsize=(10.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    image = None
    for ax, (plane, title, (xlabel, ylabel)) in zip(axes, slices, strict=True):
        shown = np.where(np.isfinite(plane), plane, vmax if not boltzmann else 0.0)
        image = ax.imshow(shown, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize="small")
        ax.set_xlabel(f"{xlabel} (grid index)", fontsize="small")
        ax.set_ylabel(f"{ylabel} (grid index)", fontsize="small")
        ax.tick_params(labelsize="x-small")
    fig.colorbar(image, ax=list(axes), shrink=0.85, label=label)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
