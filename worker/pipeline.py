"""Task bodies: voxelize a chunk of items, predict a chunk of items.

Each task leases its items first (``app.services.leases``), works while a heartbeat renews the lease, and
writes back in one transaction: per-item fields and failures in bulk, one guarded status update, predictions
inserted once per item (``ON CONFLICT DO NOTHING``), one progress recount per job. A chunk delivered twice, a
retry after a crash or a message re-sent by the sweeper never counts or predicts an item twice.

Only a :class:`models.errors.StructureError` (the user's file) or a model that cannot serve the items fails
them. Transient infrastructure errors (database, broker, storage) propagate: the Celery task retries with
backoff and, when out of retries, releases its items to the sweeper. A valid structure never fails because
a dependency was briefly down.
"""

from __future__ import annotations

import gzip
import logging
import math
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from app.core import queue
from app.db.session import session_scope
from app.db.tables import Job, JobItem, ModelVersion, Prediction, Structure, new_id
from app.services import leases, progress
from app.services.submit import parsed_uploads, upsert_structures
from app.services.uploads import stem
from app.storage import (
    ObjectNotFoundError,
    StorageUnavailableError,
    crystal_block_key,
    decode_block,
    decode_grid,
    encode_block,
    encode_grid,
    inputs_stored,
    voxel_key,
)
from models.descriptors import card_crystal_blocks
from worker.runtime import WorkerContext

if TYPE_CHECKING:
    from models.forward_pool import ForwardPool

log = logging.getLogger(__name__)

#: Errors of a stored grid that is unreadable (truncated, corrupted): recompute it.
CORRUPT_GRID = (EOFError, ValueError, gzip.BadGzipFile, zlib.error)


def new_owner() -> str:
    """A lease owner for a task run outside Celery (tests, the CLI)."""
    return f"local-{leases.new_owner_suffix()}"


@dataclass
class _Item:
    id: str
    job_id: str
    raw_key: str
    name: str
    sha: str | None
    model_ref: str
    #: whether an earlier stage found the grid cached (None: no stage looked yet)
    cache_hit: bool | None = None


@dataclass
class _ModelInfo:
    id: str
    card: dict[str, Any]
    params_hash: str


@dataclass
class _VoxelOutcome:
    sha: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    crystal: Any = None
    error: str | None = None


def _voxel_params(card: dict[str, Any]):  # type: ignore[no-untyped-def]
    from models.params import VoxelParams

    return VoxelParams(**(card.get("voxel_params") or {}))


def _claim(ctx: WorkerContext, item_ids: Sequence[str], stage: str, owner: str
           ) -> tuple[list[_Item], dict[str, _ModelInfo]]:
    """Lease the chunk's free items and read them, their models and known structure hashes (one transaction)."""
    p = ctx.settings.pipeline
    with session_scope(ctx.db_url) as session:
        ids = leases.claim_items(session, list(dict.fromkeys(item_ids)), stage=stage, owner=owner,
                                 lease_s=p.lease_s, max_attempts=p.max_attempts)
        if not ids:
            return [], {}
        rows = session.execute(
            select(JobItem.id, JobItem.job_id, JobItem.raw_key, JobItem.name, JobItem.structure_sha256,
                   Job.model_ref, JobItem.cache_hit).join(Job, Job.id == JobItem.job_id).where(JobItem.id.in_(ids))
            .order_by(JobItem.job_id, JobItem.position)
        ).all()
        items = [_Item(r.id, r.job_id, r.raw_key, r.name, r.structure_sha256, r.model_ref, r.cache_hit) for r in rows]
        missing = {i.raw_key for i in items if i.sha is None}
        if missing:  # these exact bytes were parsed before: reuse their structure hash (skips the parser)
            known = dict(session.execute(parsed_uploads(missing)).all())
            for i in items:
                i.sha = i.sha or known.get(i.raw_key)
        refs = {i.model_ref for i in items}
        models = {m.ref: _ModelInfo(m.id, m.card, m.params_hash) for m in
                  session.scalars(select(ModelVersion).where(ModelVersion.ref.in_(refs)))}
    return items, models


def _heartbeat(ctx: WorkerContext, ids: list[str], owner: str) -> leases.Heartbeat:
    lease_s = ctx.settings.pipeline.lease_s
    return leases.Heartbeat(ctx.db_url, lease_s,
                            lambda s: leases.renew_items(s, ids, owner=owner, lease_s=lease_s))


def _store_blocks(ctx: WorkerContext, crystal: Any, blocks: Sequence[str]) -> None:
    """Compute and store the crystal blocks ``blocks`` of ``crystal`` that storage lacks (StructureError: the
    crystal's own fault, e.g. too large)."""
    from models.descriptors import compute_crystal_blocks

    missing = [b for b in blocks if not ctx.store.exists(crystal_block_key(crystal.sha256, b))]
    for block, rows in compute_crystal_blocks(missing, [crystal], threads=ctx.voxel_threads).items():
        ctx.store.put(crystal_block_key(crystal.sha256, block), encode_block(rows[0]))


def _ensure_grid(ctx: WorkerContext, raw_key: str, name: str, sha: str | None, card: dict[str, Any],
                 params_hash: str) -> _VoxelOutcome:
    """Make sure the item's grid (and the crystal blocks its model reads) are stored: a cache hit, or parse +
    voxelize + store.

    Structure errors come back in ``error`` (a CIF that takes longer than ``pipeline.parse_timeout_s`` to read is
    one); storage errors propagate (transient).
    """
    from models.errors import StructureError
    from models.voxels import compute_voxels
    from worker.parsing import parse_limited

    store = ctx.store
    blocks = card_crystal_blocks(card)  # what the model's trees read of the crystal itself, stored beside its grid
    if sha is not None and inputs_stored(store, sha, params_hash, blocks):
        return _VoxelOutcome(sha, {"cache_hit": True, "voxelize_ms": 0.0})
    try:
        raw = store.get(raw_key)
    except ObjectNotFoundError as exc:  # committed uploads are stored before their rows: storage is not all there
        raise StorageUnavailableError(f"the raw upload {raw_key} is missing from storage") from exc
    t0 = time.perf_counter()
    try:
        crystal = parse_limited(raw, stem(name), ctx.settings.pipeline.parse_timeout_s)
    except StructureError as exc:
        return _VoxelOutcome(error=str(exc))
    out = _VoxelOutcome(crystal.sha256, {"parse_ms": (time.perf_counter() - t0) * 1e3}, crystal)
    key = voxel_key(crystal.sha256, params_hash)
    t0 = time.perf_counter()
    try:
        _store_blocks(ctx, crystal, blocks)
        if store.exists(key):
            out.fields.update(cache_hit=True, voxelize_ms=(time.perf_counter() - t0) * 1e3 if blocks else 0.0)
            return out
        grid = compute_voxels(crystal, _voxel_params(card), threads=ctx.voxel_threads)
    except StructureError as exc:
        return _VoxelOutcome(error=str(exc))
    store.put(key, encode_grid(grid))
    out.fields.update(cache_hit=False, voxelize_ms=(time.perf_counter() - t0) * 1e3)
    return out


def _item_fields(item_id: str, outcome: _VoxelOutcome, known_sha: str | None = None) -> dict[str, Any]:
    """The ``job_item`` columns a stage learnt about an item's structure and grid (None: keep the column; the
    structure hash too when it is the ``known_sha`` the item already has)."""
    sha = None if outcome.sha == known_sha else outcome.sha
    return {"id": item_id, "structure_sha256": sha, "parse_ms": outcome.fields.get("parse_ms"),
            "voxelize_ms": outcome.fields.get("voxelize_ms"), "cache_hit": outcome.fields.get("cache_hit")}


def _structure_row(crystal: Any, raw_key: str) -> dict[str, Any]:
    """The ``structure`` row of a parsed crystal and the upload it came from."""
    from models.units import crystal_density_g_cm3

    return {"sha256": crystal.sha256, "name": crystal.name, "formula": crystal.formula, "n_atoms": crystal.n_atoms,
            "density_g_cm3": crystal_density_g_cm3(crystal), "raw_key": raw_key}


def _model_missing(items: list[_Item], models: dict[str, _ModelInfo]) -> list[tuple[str, str, str]]:
    return [(i.id, f"model {i.model_ref} is not registered", "internal") for i in items if i.model_ref not in models]


def voxelize_chunk(ctx: WorkerContext, item_ids: Sequence[str], owner: str | None = None) -> list[str]:
    """``voxels.compute``: parse each raw CIF once, compute (or reuse) its grid, hand the chunk to inference.

    Returns the ids sent on to inference.
    """
    owner = owner or new_owner()
    items, models = _claim(ctx, item_ids, leases.VOXELS_STAGE, owner)
    if not items:
        return []
    ids = [i.id for i in items]
    failures = _model_missing(items, models)
    outcomes: dict[str, _VoxelOutcome] = {}
    with _heartbeat(ctx, ids, owner):
        by_input: dict[tuple[str, str], _VoxelOutcome] = {}  # the same bytes twice in a chunk: parsed once
        for i in items:
            m = models.get(i.model_ref)
            if m is None:
                continue
            key = (i.raw_key, m.params_hash)
            if key not in by_input:
                by_input[key] = _ensure_grid(ctx, i.raw_key, i.name, i.sha, m.card, m.params_hash)
            outcomes[i.id] = by_input[key]
    failures += [(i, o.error, "structure") for i, o in outcomes.items() if o.error is not None]
    ready = [i for i in items if i.id in outcomes and outcomes[i.id].error is None]
    crystals = {o.crystal.sha256: (o.crystal, i.raw_key) for i in ready if (o := outcomes[i.id]).crystal is not None}
    with session_scope(ctx.db_url) as session:
        upsert_structures(session, [_structure_row(c, raw) for c, raw in crystals.values()])
        progress.set_item_fields(session, [_item_fields(i.id, outcomes[i.id]) for i in ready], owner=owner)
        progress.fail_items(session, failures, owner=owner)
        sent = leases.held_items(session, [i.id for i in ready], owner)
        leases.release_items(session, sent, owner=owner, stage=leases.INFERENCE_STAGE)
        if failures:
            progress.refresh_progress(session, {i.job_id for i in items})
    if sent:
        # Committed first: if this send fails for good, the items wait at the inference stage without a lease and
        # the sweeper sends them.
        queue.enqueue_predict(sent, ctx.settings, whole=True)
    return sent


def _load_grid(ctx: WorkerContext, item: _Item, model: _ModelInfo) -> tuple[np.ndarray | None, _VoxelOutcome]:
    """The item's grid from storage, recomputed when evicted or unreadable."""
    if item.sha is not None:
        key = voxel_key(item.sha, model.params_hash)
        try:
            grid = decode_grid(ctx.store.get(key))
            # an item sent here straight from the upload (known bytes) learns here that its grid was cached
            found = {"cache_hit": True, "voxelize_ms": 0.0} if item.cache_hit is None else {}
            return grid, _VoxelOutcome(item.sha, found)
        except ObjectNotFoundError:
            pass
        except CORRUPT_GRID as exc:
            log.warning("item %s: stored grid %s is unreadable (%s); recomputing it", item.id, key, exc)
            ctx.store.delete(key)
    outcome = _ensure_grid(ctx, item.raw_key, item.name, None, model.card, model.params_hash)
    if outcome.error is not None:
        return None, outcome
    return decode_grid(ctx.store.get(voxel_key(outcome.sha, model.params_hash))), outcome  # type: ignore[arg-type]


def _with_densities(ctx: WorkerContext, ready: list[tuple[_Item, np.ndarray, _VoxelOutcome]]
                    ) -> tuple[list[tuple[_Item, np.ndarray, _VoxelOutcome]], list[float], list[_Item]]:
    """The crystal density (g/cm³) of each ready item: from the crystal parsed in this task, else the structure row.

    Returns (items with a density, their densities, items without one).
    """
    from models.units import crystal_density_g_cm3

    known = {o.sha: crystal_density_g_cm3(o.crystal) for _, _, o in ready if o.crystal is not None}
    wanted = {o.sha for _, _, o in ready if o.sha not in known}
    if wanted:
        with session_scope(ctx.db_url) as session:
            known.update(session.execute(select(Structure.sha256, Structure.density_g_cm3)
                                         .where(Structure.sha256.in_(wanted))).all())
    def usable(sha: str | None) -> bool:  # a NaN or non-positive density fails its item, not the whole chunk
        value = known.get(sha)
        return value is not None and math.isfinite(value) and value > 0

    kept = [r for r in ready if usable(r[2].sha)]
    return kept, [float(known[o.sha]) for _, _, o in kept], [i for i, _, o in ready if not usable(o.sha)]


def _load_model(ctx: WorkerContext, ref: str, info: _ModelInfo) -> tuple[Any, str | None]:
    """The loaded model, or the reason it cannot serve (a broken or incompatible model fails its items).

    Storage errors while downloading its files propagate (transient).
    """
    from models.artifacts import CorruptModelError, IncompatibleModelError

    try:
        loaded = ctx.model(ref)
        check = getattr(loaded, "check_voxel_params", None)
        if check is not None:
            check(_voxel_params(info.card))
        return loaded, None
    except (CorruptModelError, IncompatibleModelError, LookupError, FileNotFoundError) as exc:
        log.exception("cannot load model %s", ref)
        return None, f"cannot load model {ref}: {exc}"


def prediction_fields(out: Any, primary: int = 0) -> list[dict[str, Any]]:
    """The ``prediction`` row fields of each grid of a :class:`models.artifacts.DetailedPredictions`.

    ``value`` / ``uncertainty`` are output ``primary`` (the card's ``primary_output``); ``values`` all of them.
    """
    rows = []
    for n, values in enumerate(np.asarray(out.values, dtype=np.float64)):
        sigma = None if out.sigma is None else [float(x) for x in out.sigma[n]]
        rows.append({"value": float(values[primary]), "values": [float(x) for x in values],
                     "uncertainty": None if sigma is None else sigma[primary], "uncertainties": sigma,
                     "in_domain": None if out.in_domain is None else bool(out.in_domain[n]),
                     "neighbours": None if out.neighbours is None else [nb.to_dict() for nb in out.neighbours[n]]})
    return rows


def _read_blocks(ctx: WorkerContext, sha: str, blocks: Sequence[str]) -> dict[str, np.ndarray] | None:
    """A structure's stored crystal blocks, or None when one is missing or unreadable (it is then rebuilt)."""
    from models.descriptors import CRYSTAL_BLOCKS

    out = {}
    for block in blocks:
        key = crystal_block_key(sha, block)
        try:
            out[block] = decode_block(ctx.store.get(key), CRYSTAL_BLOCKS[block])
        except ObjectNotFoundError:
            return None
        except CORRUPT_GRID as exc:
            log.warning("stored crystal block %s is unreadable (%s); recomputing it", key, exc)
            ctx.store.delete(key)
            return None
    return out


def _with_crystal_blocks(ctx: WorkerContext, info: _ModelInfo, ready: list[tuple[_Item, np.ndarray, _VoxelOutcome]],
                         blocks: Sequence[str], fetchers: ThreadPoolExecutor
                         ) -> tuple[list[tuple[_Item, np.ndarray, _VoxelOutcome]], dict[str, np.ndarray],
                                    list[tuple[str, str, str]]]:
    """The crystal blocks of each ready item: stored, else rebuilt from its upload (as an evicted grid is), read
    once per structure. A structure error fails its items; a block that cannot be read back right after it was
    stored is a storage fault (StorageUnavailableError: the task retries).

    Returns (items with their blocks, {block: (N, width)} in their order, failures of the others).
    """
    from models.descriptors import stack_crystal_blocks

    def read(entry: tuple[_Item, np.ndarray, _VoxelOutcome]) -> dict[str, np.ndarray] | str:
        item, _, outcome = entry
        found = _read_blocks(ctx, str(outcome.sha), blocks)
        if found is None:
            rebuilt = _ensure_grid(ctx, item.raw_key, item.name, None, info.card, info.params_hash)
            if rebuilt.error is not None:
                return rebuilt.error
            found = _read_blocks(ctx, str(rebuilt.sha), blocks)
        if found is None:
            raise StorageUnavailableError(f"the {', '.join(blocks)} descriptors of {item.name} were stored but "
                                          "cannot be read back")
        return found

    # one read per structure: items of the same crystal share it (no two threads rebuild one block)
    first: dict[str | None, tuple[_Item, np.ndarray, _VoxelOutcome]] = {}
    for entry in ready:
        first.setdefault(entry[2].sha, entry)
    by_sha = dict(zip(first, fetchers.map(read, first.values()), strict=True))
    kept, rows, failures = [], [], []
    for entry in ready:
        found = by_sha[entry[2].sha]
        if isinstance(found, str):
            failures.append((entry[0].id, found, "structure"))
        else:
            kept.append(entry)
            rows.append(found)
    return kept, stack_crystal_blocks(blocks, rows), failures


@dataclass
class _Batch:
    """One forward pass's worth of a chunk: the items with a grid (and density and crystal blocks when the model
    reads them)."""

    ready: list[tuple[_Item, np.ndarray, _VoxelOutcome]]
    densities: list[float] | None
    failures: list[tuple[str, str, str]]
    crystal_blocks: dict[str, np.ndarray] | None = None


def _prepare_batch(ctx: WorkerContext, ref: str, info: _ModelInfo, needs_density: bool, items: list[_Item],
                   fetchers: ThreadPoolExecutor) -> _Batch:
    """Fetch (or rebuild) the grids of ``items`` concurrently and read their densities; failures are the items'."""
    fetched = list(fetchers.map(lambda i: _load_grid(ctx, i, info), items))
    ready, failures = [], []
    for item, (grid, outcome) in zip(items, fetched, strict=True):
        if grid is None:
            failures.append((item.id, str(outcome.error), "structure"))
        else:
            ready.append((item, grid, outcome))
    densities = None
    if needs_density:  # a descriptor model reads the crystal density too
        ready, densities, unknown = _with_densities(ctx, ready)
        failures += [(i.id, f"{ref} needs the crystal density, and none is known for this structure", "internal")
                     for i in unknown]
    crystal_blocks = None
    if blocks := card_crystal_blocks(info.card):  # trees that read numbers of the crystal itself
        kept, crystal_blocks, failed = _with_crystal_blocks(ctx, info, ready, blocks, fetchers)
        if densities is not None:
            kept_ids = {item.id for item, _, _ in kept}
            densities = [d for d, (item, _, _) in zip(densities, ready, strict=True) if item.id in kept_ids]
        ready, failures = kept, failures + failed
    return _Batch(ready, densities, failures, crystal_blocks)


def _predict_group(ctx: WorkerContext, ref: str, info: _ModelInfo, loaded: Any, group: list[_Item]
                   ) -> tuple[list[tuple[_Item, _VoxelOutcome, int]], list[dict[str, Any]], float,
                              list[tuple[str, str, str]]]:
    """Forward passes of at most ``inference.batch_size`` grids over the group.

    - On the CPU (``ctx.forward_pool()``): the passes run on the process's single-threaded streams, each handed
      to the next free stream as soon as its grids are fetched (a small group is cut so that every stream gets a
      pass). Beside torch's own team of threads the same fetch slowed the shipped model by 39 % on 2 cores, for a
      fetch that costs 4 % of the pass on its own: a team waits at every barrier for a thread the fetch
      descheduled, a stream does not (:mod:`models.forward_pool`).
    - On a GPU, or with ``inference.cpu_streams`` 1: one pass after the other in this thread, the next pass's
      grids fetched while the current one runs (storage reads and decompression overlap the forward pass).

    Returns (items predicted with the size of their forward pass, their prediction fields, forward ms per item
    (each pass's own time, summed over the passes, per item), failures).
    """
    pool = ctx.forward_pool()
    size = pass_size(len(group), ctx.settings.inference.batch_size, pool.streams if pool is not None else 1)
    parts = [group[k:k + size] for k in range(0, len(group), size)]
    needs_density = bool(getattr(loaded, "needs_density", False))
    primary = getattr(getattr(loaded, "card", None), "primary_output", 0)

    def forward(batch: _Batch) -> tuple[Any, float]:
        t0 = time.perf_counter()
        grids = np.stack([g for _, g, _ in batch.ready]).astype(np.float32)
        out = loaded.predict_detailed(grids, batch_size=size, densities_g_cm3=batch.densities,
                                      crystal_blocks=batch.crystal_blocks)
        return out, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=min(8, len(group))) as fetchers:
        def fetch(part: list[_Item]) -> _Batch:
            return _prepare_batch(ctx, ref, info, needs_density, part, fetchers)

        batches, outs = (_on_streams(pool, fetch, forward, parts) if pool is not None
                         else _overlapped(fetch, forward, parts))
    ready: list[tuple[_Item, _VoxelOutcome, int]] = []
    fields: list[dict[str, Any]] = []
    failures: list[tuple[str, str, str]] = []
    passes = iter(outs)
    for batch in batches:
        failures += batch.failures
        if batch.ready:
            ready += [(i, o, len(batch.ready)) for i, _, o in batch.ready]
            fields += prediction_fields(next(passes)[0], primary)
    forward_s = sum(seconds for _, seconds in outs)
    return ready, fields, forward_s * 1e3 / max(1, len(ready)), failures


def pass_size(n: int, batch_size: int, streams: int) -> int:
    """Grids per forward pass for ``n`` items on ``streams`` streams: at most ``batch_size``, in as few rounds as
    that allows, every stream busy in each round (250 items, batch 64, 2 streams: 4 passes of 63 or fewer, not
    64 + 64 + 64 + 58; 64 items: 2 passes of 32)."""
    rounds = -(-n // (streams * batch_size))
    return max(1, -(-n // (rounds * streams)))


def _on_streams(pool: ForwardPool, fetch: Callable[[list[_Item]], _Batch],
                forward: Callable[[_Batch], tuple[Any, float]], parts: list[list[_Item]]
                ) -> tuple[list[_Batch], list[tuple[Any, float]]]:
    """Each part's grids fetched in this thread and its forward pass handed to the next free stream: the fetch of a
    part overlaps the passes already running (a stream has no barrier, so the fetch slows it only by its own CPU
    time).

    Returns (every part's batch, (output, seconds) of each batch with grids). A fetch or pass that raises is raised
    here; passes not started yet are dropped.
    """
    batches: list[_Batch] = []
    running: list[Future[tuple[Any, float]]] = []
    try:
        for part in parts:
            batch = fetch(part)
            batches.append(batch)
            if batch.ready:
                running.append(pool.submit(forward, batch))
        return batches, [f.result() for f in running]
    finally:
        for f in running:
            f.cancel()


def _overlapped(fetch: Callable[[list[_Item]], _Batch], forward: Callable[[_Batch], tuple[Any, float]],
                parts: list[list[_Item]]) -> tuple[list[_Batch], list[tuple[Any, float]]]:
    """Forward passes one after the other in this thread, each part's fetch running during the previous part's pass.

    Returns (every part's batch, (output, seconds) of each batch with grids).
    """
    batches: list[_Batch] = []
    outs: list[tuple[Any, float]] = []
    with ThreadPoolExecutor(max_workers=1) as ahead:
        upcoming: Future[_Batch] | None = ahead.submit(fetch, parts[0])
        try:
            for k in range(len(parts)):
                batch = upcoming.result()  # type: ignore[union-attr]
                upcoming = ahead.submit(fetch, parts[k + 1]) if k + 1 < len(parts) else None
                batches.append(batch)
                if batch.ready:
                    outs.append(forward(batch))
        finally:  # an error (retried by the task) does not wait for the next part's fetch if it has not begun
            if upcoming is not None:
                upcoming.cancel()
    return batches, outs


def predict_chunk(ctx: WorkerContext, item_ids: Sequence[str], owner: str | None = None) -> list[str]:
    """``inference.predict``: fetch the chunk's grids concurrently, forward passes per model, bulk write.

    Returns the ids that got a prediction.
    """
    owner = owner or new_owner()
    items, models = _claim(ctx, item_ids, leases.INFERENCE_STAGE, owner)
    if not items:
        return []
    ids = [i.id for i in items]
    failures = _model_missing(items, models)
    done: list[str] = []
    with _heartbeat(ctx, ids, owner):
        groups: dict[str, list[_Item]] = {}
        for i in items:
            if i.model_ref in models:
                groups.setdefault(i.model_ref, []).append(i)
        results = []
        for ref, group in groups.items():
            info = models[ref]
            loaded, why = _load_model(ctx, ref, info)
            if loaded is None:
                failures += [(i.id, str(why), "internal") for i in group]
                continue
            ready, out, per_item_ms, failed = _predict_group(ctx, ref, info, loaded, group)
            failures += failed
            if ready:
                results.append((info, ready, out, per_item_ms))
    with session_scope(ctx.db_url) as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        upsert_structures(session, [_structure_row(o.crystal, i.raw_key) for (_, ready, _, _) in results
                                    for i, o, _ in ready if o.crystal is not None])
        for info, ready, out, per_item_ms in results:
            # only what this stage learnt: a grid found or rebuilt for an item sent here straight from its upload
            progress.set_item_fields(session, [_item_fields(i.id, o, i.sha) for i, o, _ in ready
                                               if o.fields or o.sha != i.sha], owner=owner)
            by_pass: dict[int, list[str]] = {}  # items by the size of their forward pass (the last one is smaller)
            for i, _, n in ready:
                by_pass.setdefault(n, []).append(i.id)
            moved = {moved_id for n, pass_ids in by_pass.items()
                     for moved_id in progress.succeed_items(session, pass_ids, owner=owner, inference_ms=per_item_ms,
                                                            batch_size=n)}
            rows = [{"id": new_id(), "item_id": i.id, "structure_sha256": o.sha, "model_id": info.id,
                     "params_hash": info.params_hash, **fields}
                    for (i, o, _), fields in zip(ready, out, strict=True) if i.id in moved]
            if rows:
                # executemany form: compiled once and cached (a 250-row VALUES list was compiled anew each chunk:
                # 60-180 ms against 10-25 ms, measured on PostgreSQL)
                session.execute(insert(Prediction).on_conflict_do_nothing(index_elements=["item_id"]), rows)
            done += [r["item_id"] for r in rows]
        progress.fail_items(session, failures, owner=owner)
        progress.refresh_progress(session, {i.job_id for i in items})
    return done
