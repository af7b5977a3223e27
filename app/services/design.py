"""Design jobs: rank known structures (the caller's predictions and a model's CoRE MOF library) against a target.

``submit_design`` validates the request against the model's outputs (:mod:`app.services.outputs`) and creates
the job; ``design_candidates`` is the job's work (run by the ``inference.design`` task): read the candidates in
the requested unit, rank them with :func:`models.design.rank_candidates`, return ``result``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import queue
from app.core.config import Settings
from app.db.tables import Job, JobItem, JobKind, JobStatus, ModelVersion, Prediction, Structure
from app.schemas import DesignCandidate, DesignRequest
from app.services.errors import UnprocessableError
from app.services.keys import LOCAL, Caller
from app.services.outputs import VALUE, Outputs, point_key
from app.services.registry import resolve_model
from app.services.submit import check_units, existing_job, request_fingerprint, scoped_key, submit_whole_job
from app.services.uploads import stem
from app.storage import ObjectNotFoundError, ObjectStore
from models.descriptors import card_reads_density
from models.design import LIBRARY_FILE, SIGMA_SUFFIX, quantities_of, rank_candidates, read_library, target_arrays
from models.units import CM3_STP_PER_CM3, mol_per_kg_to_cm3_stp_per_cm3

log = logging.getLogger(__name__)


def quantity_keys(outputs: Outputs, target: dict[str, float]) -> list[str]:
    """The target's quantities, ``value`` spelled as the curve point it is for a curve model."""
    keys = []
    for key in target:
        if key == VALUE and outputs.pressures:
            key = point_key(outputs.pressures[outputs.primary])
        keys.append(key)
    return keys


def submit_design(session: Session, settings: Settings, request: DesignRequest, idempotency_key: str | None = None,
                  caller: Caller = LOCAL) -> str:
    """Check the target against the model (422 with the quantities it has), create the job, enqueue it."""
    idempotency_key = scoped_key(caller, idempotency_key)
    fingerprint = request_fingerprint("design", [], **request.model_dump(mode="json"))
    if (found := existing_job(session, idempotency_key, fingerprint)) is not None:
        return found
    with session.begin():
        model = resolve_model(session, request.model, caller=caller)
        card = dict(model.card)
        ref = model.ref
    check_units(card, request.units)
    outputs = Outputs.of(card)
    unknown = [k for k in request.target if k not in outputs.sort_keys]
    if unknown:
        raise UnprocessableError(f"target quantity {', '.join(map(repr, unknown))} is not given by {ref}; it gives "
                                 f"{', '.join(outputs.sort_keys)}")
    if isinstance(request.tolerance, dict):
        missing = [k for k in request.target if k not in request.tolerance]
        if missing or set(request.tolerance) - set(request.target):
            raise UnprocessableError("a per-quantity tolerance needs exactly the target's quantities "
                                     f"({', '.join(request.target)})")
    reads_density = card_reads_density(card)
    if request.generate and request.units == CM3_STP_PER_CM3 and not reads_density:
        raise UnprocessableError(f"{ref} reads the energy grid only, so a generated landscape has no crystal density "
                                 "to convert to cm3(STP)/cm3: design it in mol/kg, or with a model that reads the "
                                 "density (e.g. retnet-ch4)")
    tolerances = request.tolerance.values() if isinstance(request.tolerance, dict) else [request.tolerance]
    if any(not np.isfinite(t) or t <= 0 for t in tolerances) or not all(np.isfinite(v)
                                                                         for v in request.target.values()):
        raise UnprocessableError("target values must be finite and tolerances > 0")
    params = {**request.model_dump(mode="json"), "model": ref, "request_sha256": fingerprint,
              "owner_is_admin": bool(caller.admin)}

    job = Job(kind=JobKind.design, status=JobStatus.queued, name=request.name, model_ref=ref, params=params,
              progress_total=1, details={"phase": "queued"}, idempotency_key=idempotency_key, owner=caller.name)
    return submit_whole_job(session, settings, caller, job, fingerprint, queue.enqueue_design)


@dataclasses.dataclass
class _Candidates:
    """Candidate structures with their quantities (N, m) and σ in mol/kg, and densities for unit conversion."""

    names: list[str]
    sources: list[str]
    sha256: list[str | None]
    values: np.ndarray
    sigma: np.ndarray
    in_domain: list[bool | None]
    density: np.ndarray

    def subset(self, keep: np.ndarray) -> _Candidates:
        """The candidates where ``keep`` (bool, (N,)) is true."""
        pick = np.flatnonzero(keep)
        return _Candidates([self.names[i] for i in pick], [self.sources[i] for i in pick],
                           [self.sha256[i] for i in pick], self.values[pick], self.sigma[pick],
                           [self.in_domain[i] for i in pick], self.density[pick])

    @classmethod
    def concat(cls, parts: list[_Candidates], width: int) -> _Candidates:
        """One pool of several sources (an empty pool of ``width`` quantities when there are none)."""
        return cls([n for p in parts for n in p.names], [s for p in parts for s in p.sources],
                   [h for p in parts for h in p.sha256],
                   np.concatenate([p.values for p in parts]) if parts else np.zeros((0, width)),
                   np.concatenate([p.sigma for p in parts]) if parts else np.zeros((0, width)),
                   [d for p in parts for d in p.in_domain],
                   np.concatenate([p.density for p in parts]) if parts else np.zeros(0))


def _service_candidates(session: Session, model: ModelVersion, outputs: Outputs, keys: list[str],
                        owner: str | None, everyone: bool) -> _Candidates:
    """The latest prediction of every structure this caller predicted with ``model`` (an admin: anyone's)."""
    query = (select(Prediction.values, Prediction.uncertainties, Prediction.value, Prediction.uncertainty,
                    Prediction.in_domain, Prediction.structure_sha256, Structure.density_g_cm3, JobItem.name)
             .join(JobItem, JobItem.id == Prediction.item_id).join(Job, Job.id == JobItem.job_id)
             .join(Structure, Structure.sha256 == Prediction.structure_sha256)
             .where(Prediction.model_id == model.id).order_by(Prediction.created_at.desc()))
    if not everyone:
        query = query.where(Job.owner.is_(None) if owner is None else Job.owner == owner)
    seen: set[str] = set()
    rows: list[Any] = []
    for row in session.execute(query):
        if row.structure_sha256 not in seen:
            seen.add(row.structure_sha256)
            rows.append(row)
    matrix = outputs.quantity_matrix(keys)
    values = np.full((len(rows), len(keys)), np.nan)
    sigma = np.full((len(rows), len(keys)), np.nan)
    for i, row in enumerate(rows):
        if len(row.values or []) == len(outputs.names):  # a stored prediction of every output
            sig = row.uncertainties if len(row.uncertainties or []) == len(outputs.names) else None
            values[i], sigma[i] = (q[0] for q in quantities_of(np.array([row.values]),
                                                                 None if sig is None else np.array([sig]), matrix))
    return _Candidates([stem(r.name.rsplit("/", 1)[-1]) for r in rows], ["service"] * len(rows),
                       [r.structure_sha256 for r in rows], values, sigma, [r.in_domain for r in rows],
                       np.array([np.nan if r.density_g_cm3 is None else r.density_g_cm3 for r in rows], dtype=float))


def library_candidates(table: Any, keys: list[str]) -> _Candidates | None:
    """Candidates from a library table (:func:`models.design.read_library`); None when it lacks a quantity."""
    missing = [k for k in keys if k not in table.columns]
    if missing:
        log.warning("the library lacks %s", missing)
        return None
    sigma_cols = [k + SIGMA_SUFFIX for k in keys]
    sigma = np.column_stack([table[c].to_numpy(dtype=float) if c in table.columns else np.full(len(table), np.nan)
                             for c in sigma_cols])
    in_domain = table["in_domain"].tolist() if "in_domain" in table.columns else [None] * len(table)
    return _Candidates(table["name"].astype(str).tolist(), ["library"] * len(table),
                       table["sha256"].astype(str).tolist(), table[keys].to_numpy(dtype=float), sigma,
                       [None if v is None or (isinstance(v, float) and np.isnan(v)) else bool(v) for v in in_domain],
                       table["density_g_cm3"].to_numpy(dtype=float))


def _stored_library(store: ObjectStore, model: ModelVersion, keys: list[str]) -> _Candidates | None:
    """The model's shipped library in storage (None when it has none)."""
    try:
        data = store.get(model.storage_prefix + LIBRARY_FILE)
    except ObjectNotFoundError:
        return None
    return library_candidates(read_library(data), keys)


def rank_pool(pool: _Candidates, request: DesignRequest, ref: str, counts: dict[str, int]) -> dict[str, Any]:
    """Rank a pool of candidates (mol/kg) against the request, in its units: a design job's ``result``."""
    quantities, target, tolerance = target_arrays(request.target, request.tolerance)
    factor = np.ones(len(pool.names))
    if request.units == CM3_STP_PER_CM3:
        usable = np.isfinite(pool.density) & (pool.density > 0)
        factor = np.where(usable, mol_per_kg_to_cm3_stp_per_cm3(1.0, np.where(usable, pool.density, 1.0)), np.nan)
    values, sigma = pool.values * factor[:, None], pool.sigma * factor[:, None]
    eligible = np.array([d is True for d in pool.in_domain], dtype=bool) if request.in_domain_only else None
    has_sigma = bool(len(sigma)) and bool(np.isfinite(sigma).all())
    ranking = rank_candidates(values, target, tolerance, sigma=sigma if has_sigma else None, top_k=request.top_k,
                              eligible=eligible) if len(values) else None
    candidates = []
    for k, i in enumerate([] if ranking is None else ranking.index.tolist()):
        candidates.append(DesignCandidate(
            rank=k + 1, name=pool.names[i], source=pool.sources[i], sha256=pool.sha256[i] or None,
            predicted={q: float(values[i, j]) for j, q in enumerate(quantities)},
            uncertainty={q: float(sigma[i, j]) for j, q in enumerate(quantities)} if np.isfinite(sigma[i]).all()
            else None,
            in_domain=pool.in_domain[i], distance=float(ranking.distance[k]),
            within_tolerance=bool(ranking.within_tolerance[k]),
            p_within=None if ranking.p_within is None else float(ranking.p_within[k]),
        ).model_dump(mode="json"))
    return {"model": ref, "units": request.units, "target": request.target, "tolerance": request.tolerance,
            "ranked": int(np.isfinite(values).all(axis=1).sum()) if len(values) else 0, "sources": counts,
            "candidates": candidates, "within_tolerance": sum(1 for c in candidates if c["within_tolerance"])}


def design_request(job: Job) -> DesignRequest:
    """The request a design job was created with."""
    return DesignRequest.model_validate({k: v for k, v in (job.params or {}).items()
                                         if k not in ("request_sha256", "owner_is_admin")})


def design_candidates(session: Session, store: ObjectStore, job: Job) -> dict[str, Any]:
    """Gather the candidates of a design job (the caller's predictions, the model's library) and rank them."""
    request = design_request(job)
    model = session.scalars(select(ModelVersion).where(ModelVersion.ref == job.model_ref)).one()
    outputs = Outputs.of(model.card)
    keys = quantity_keys(outputs, request.target)
    parts: list[_Candidates] = []
    counts = {"service": 0, "library": 0}
    if "service" in request.sources:
        everyone = bool((job.params or {}).get("owner_is_admin"))
        parts.append(_service_candidates(session, model, outputs, keys, job.owner, everyone))
        counts["service"] = len(parts[-1].names)
    known = {h for p in parts for h in p.sha256}
    if "library" in request.sources:
        library = _stored_library(store, model, keys)
        if library is not None:  # a structure the caller predicted is ranked once, from its own prediction
            parts.append(library.subset(np.array([h not in known for h in library.sha256], dtype=bool)))
            counts["library"] = len(parts[-1].names)
    return rank_pool(_Candidates.concat(parts, len(keys)), request, model.ref, counts)


__all__ = ["design_candidates", "design_request", "library_candidates", "quantity_keys", "rank_pool", "submit_design"]
