"""Service benchmark: screening throughput as a ratio to the model's own speed, measured in one run.

In one run, on the same machine and the same CoRE MOF 2019-ASR CIFs:

1. the service: a cold screening (empty voxel cache) and three warm ones (same files again: grids cached);
2. the model alone: ``LoadedModel.predict`` on the screening's own grids at batch 64 (the inference rate), and
   ``parse_cif`` + ``compute_voxels`` (+ the crystal blocks its trees read, if any) over the same CIFs one after
   the other with every core, as ``retnet predict`` does (the voxelization rate);
3. ``POST /predict`` latency of a structure already predicted (answered from the prediction cache), and 20
   concurrent clients on cached structures (sustained requests/s, errors).

Ratios: warm screening / inference rate (target ≥ 0.8; the best warm run over the best of the model's three
runs, and the two medians beside it) and cold screening / min(voxelization, inference)
(target ≥ 0.7). Modes::

    python -m bench.service                         # embedded: SQLite, local storage, workers in the server
    python -m bench.service --scaled --voxel-workers 2 --structures 2000   # Postgres + Redis + worker processes

``--scaled`` starts a private Redis (free port), a fresh database on the local PostgreSQL (127.0.0.1:5432),
``retnet serve`` and ``retnet worker -Q voxels -c 1`` × N plus ``retnet worker -Q inference``, and removes them
afterwards. Stop other CPU work (GCMC labelling) while benchmarking.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from app.core.config import settings_from_env

REPO = Path(__file__).resolve().parents[1]
FINAL = ("succeeded", "failed", "cancelled")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register_model(settings: Any, data_dir: Path) -> str:
    """Migrate and register a model (the shipped one when present, else a freshly initialised RetNet); its ref."""
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.services.registry import register_model_dir, register_shipped_model
    from app.storage import store_from_uri

    upgrade(settings.db_url)
    store = store_from_uri(settings.store_uri)
    with session_scope(settings.db_url) as session:
        row = register_shipped_model(session, store)
        if row is None:
            import torch

            from models.artifacts import ModelCard, Target, save_model
            from models.retnet import RetNet

            torch.manual_seed(0)
            folder = save_model(data_dir / "bench-model", RetNet(1).eval(), ModelCard(
                name="bench-retnet", version="0", preliminary=True, standardization={"mean": 1.0, "std": 1.0},
                targets=[Target(name="ch4", unit="mol/kg", property="CH4 uptake, 298 K, 5.8 bar")]))
            row = register_model_dir(session, store, folder)
        return str(row.ref)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, cwd=REPO, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115


def _retnet(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main(sys.argv[1:]))", *args]


@contextmanager
def deployment(tmp: Path, *, scaled: bool, voxel_workers: int
               ) -> Iterator[tuple[str, dict[str, str], str, dict[str, str]]]:
    """Start the service; yield (url, env, model ref, request headers: an admin key when keys are required)."""
    data = tmp / "data"
    env = {"RETNET_DATA_DIR": str(data)}
    procs: list[subprocess.Popen[bytes]] = []
    cleanup: list[Any] = []
    try:
        if scaled:
            import psycopg

            redis_port = _free_port()
            procs.append(subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                                           "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                          stdout=subprocess.DEVNULL, start_new_session=True))
            db = f"retnet_bench_{uuid.uuid4().hex[:8]}"
            admin = "postgresql://postgres@127.0.0.1:5432/test"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{db}"')

            def drop() -> None:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

            cleanup.append(drop)
            env.update(RETNET_DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{db}",
                       RETNET_BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
                       RETNET_STORAGE_URI=(data / "store").as_uri(),
                       # the per-key rate limit (600/min by default) would answer the 20 clients 429: measure
                       # the service's own rate, not the limit's
                       RETNET_AUTH__REQUESTS_PER_MINUTE="1000000")
        settings = settings_from_env(env)
        data.mkdir(parents=True, exist_ok=True)
        ref = register_model(settings, data)
        headers: dict[str, str] = {}
        if settings.auth_required:
            from app.db.session import session_scope
            from app.services.keys import create_key

            with session_scope(settings.db_url) as session:
                headers["Authorization"] = f"Bearer {create_key(session, 'bench', admin=True)}"
        port = _free_port()
        procs.append(_spawn(_retnet("serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data)),
                            env, tmp / "server.log"))
        if scaled:
            for i in range(voxel_workers):
                procs.append(_spawn(_retnet("worker", "-Q", "voxels", "-c", "1"), env, tmp / f"voxels{i}.log"))
            procs.append(_spawn(_retnet("worker", "-Q", "inference"), env, tmp / "inference.log"))
        yield f"http://127.0.0.1:{port}", env, ref, headers
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, 15)
            except (ProcessLookupError, PermissionError):
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        for fn in cleanup:
            fn()


def wait_up(client: httpx.Client, timeout: float = 180) -> dict[str, Any]:
    """Wait for /health to say ok."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = client.get("/health")
            if r.status_code == 200 and r.json()["model"]["status"] == "ok":
                return dict(r.json())
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server did not come up")


def pick_cifs(n: int) -> list[Path]:
    """``n`` CoRE MOF 2019-ASR CIFs (deterministic spread over the dataset)."""
    from models.datasets import coremof_cif_dir

    files = sorted(coremof_cif_dir().glob("*.cif"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


#: Seconds between two ``GET /jobs/{id}`` of a screening being timed. The client shares the cores with the service,
#: so it polls gently and the duration comes from the job's own timestamps, not from when a poll saw it final.
POLL_S = 0.5


def _server_time(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def screening(client: httpx.Client, files: list[Path], name: str) -> dict[str, Any]:
    """Submit one screening (upload not timed) and time it from the job's creation until every item is final
    (the server's ``created_at`` and ``finished_at``; the client's own wall time beside it)."""
    if len(files) > 900:  # multipart forms take at most 1000 files: send big screenings as one zip
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, p.name)
        payload = [("files", ("screening.zip", buf.getvalue()))]
    else:
        payload = [("files", (p.name, p.read_bytes())) for p in files]
    t0 = time.perf_counter()
    r = client.post("/screenings", files=payload, data={"name": name})
    r.raise_for_status()
    t_accepted = time.perf_counter()
    job_id = r.json()["job_id"]
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in FINAL:
            break
        time.sleep(POLL_S)
    seen_final = time.perf_counter()
    seconds = _server_time(job["finished_at"]) - _server_time(job["created_at"])
    p = job["progress"]
    return {"job_id": job_id, "structures": p["total"], "done": p["done"], "failed": p["failed"],
            "upload_s": round(t_accepted - t0, 2), "seconds": round(seconds, 2),
            "client_seconds": round(seen_final - t_accepted, 2),
            "structures_per_min": round(p["total"] / seconds * 60, 1)}


def model_rates(settings: Any, model_ref: str, files: list[Path], *, batch: int = 64) -> dict[str, Any]:
    """The model's own inference rate on the stored grids, and the voxelization rate of the same CIFs."""
    import numpy as np
    import torch

    from app.db.session import session_scope
    from app.db.tables import ModelVersion, Structure
    from app.storage import crystal_block_key, decode_block, decode_grid, store_from_uri
    from models.artifacts import load_model
    from models.descriptors import CRYSTAL_BLOCKS, compute_crystal_blocks
    from models.params import VoxelParams
    from models.structure import parse_cif
    from models.voxels import compute_voxels, warm_up
    from worker.runtime import WorkerContext

    store = store_from_uri(settings.store_uri)
    with session_scope(settings.db_url) as session:
        row = session.query(ModelVersion).filter(ModelVersion.ref == model_ref).one()
        params_hash, prefix, card = row.params_hash, row.storage_prefix, row.card
    folder = WorkerContext(settings).fetch_model_files(prefix)
    model = load_model(folder, device="cpu")
    keys = [k for k in store.list(f"voxels/{params_hash}/") if k.endswith(".npy.gz")]
    grids = np.stack([decode_grid(store.get(k)) for k in keys]).astype(np.float32)
    shas = [k.rsplit("/", 1)[-1].split("_", 1)[0] for k in keys]  # a grid's key starts with its structure hash
    densities = None
    if model.needs_density:  # the crystal densities the service keeps per structure
        with session_scope(settings.db_url) as session:
            known = dict(session.query(Structure.sha256, Structure.density_g_cm3)
                         .filter(Structure.sha256.in_(shas)).all())
        densities = np.array([known[sha] for sha in shas], dtype=np.float64)
    # the crystal blocks the service stored per structure (a grid made for another model may have none: left out)
    stored = [all(store.exists(crystal_block_key(sha, b)) for b in model.crystal_blocks)
              for sha in shas]
    grids, shas = grids[stored], [sha for sha, ok in zip(shas, stored, strict=True) if ok]
    densities = None if densities is None else densities[stored]
    blocks = {b: np.stack([decode_block(store.get(crystal_block_key(sha, b)), CRYSTAL_BLOCKS[b])
                           for sha in shas]).reshape(len(shas), CRYSTAL_BLOCKS[b]) for b in model.crystal_blocks}
    model.predict(grids[:batch], batch_size=batch, densities_g_cm3=None if densities is None else densities[:batch],
                  crystal_blocks={b: v[:batch] for b, v in blocks.items()})
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.predict(grids, batch_size=batch, densities_g_cm3=densities, crystal_blocks=blocks)
        runs.append(len(grids) / (time.perf_counter() - t0) * 60)
    inference = max(runs)
    warm_up()
    params = VoxelParams(**(card.get("voxel_params") or {}))
    t0 = time.perf_counter()
    ok = 0
    for path in files:
        try:
            crystal = parse_cif(path.read_bytes(), name=path.stem)
            compute_voxels(crystal, params)
            compute_crystal_blocks(model.crystal_blocks, [crystal])  # what its trees read of the crystal itself
            ok += 1
        except Exception:  # noqa: BLE001  (a refused structure costs its parse, like in the service)
            pass
    voxel = len(files) / (time.perf_counter() - t0) * 60
    return {"inference_per_min": round(inference, 1), "inference_runs_per_min": [round(r, 1) for r in runs],
            "inference_grids": len(grids), "batch": batch,
            "torch_threads": torch.get_num_threads(), "voxelize_per_min": round(voxel, 1), "voxelized": ok}


def predict_latency(client: httpx.Client, files: list[Path], n: int) -> dict[str, Any]:
    """Sequential ``POST /predict`` of structures predicted before (prediction cache), in ms."""
    payloads = [(p.name, p.read_bytes()) for p in files[:10]]
    for name, data in payloads:
        r = client.post("/predict", files={"file": (name, data)}, data={"wait": "120"})
        r.raise_for_status()
    lat = []
    for i in range(n):
        name, data = payloads[i % len(payloads)]
        t0 = time.perf_counter()
        r = client.post("/predict", files={"file": (name, data)})
        lat.append((time.perf_counter() - t0) * 1e3)
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    return {"n": n, "p50": round(statistics.median(lat), 1), "p99": round(percentile(lat, 99), 1),
            "mean": round(statistics.mean(lat), 1)}


def concurrent_clients(url: str, headers: dict[str, str], files: list[Path], clients: int, seconds: float
                       ) -> dict[str, Any]:
    """``clients`` threads posting cached structures for ``seconds``: sustained rate, latency, errors."""
    payloads = [(p.name, p.read_bytes()) for p in files[:10]]
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def loop(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60, headers=headers) as c:
            i = k
            while time.monotonic() < stop:
                name, data = payloads[i % len(payloads)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = c.post("/predict", files={"file": (name, data)})
                    ok = r.status_code == 200 and r.json()["status"] == "succeeded"
                    why = f"{r.status_code} {r.text[:100]}"
                except httpx.HTTPError as exc:
                    ok, why = False, repr(exc)
                with lock:
                    (lat.append((time.perf_counter() - t0) * 1e3) if ok else errors.append(why))

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    return {"clients": clients, "seconds": round(dt, 1), "requests": len(lat) + len(errors), "errors": len(errors),
            "first_errors": errors[:3], "requests_per_s": round(len(lat) / dt, 1),
            "p50_ms": round(statistics.median(lat), 1) if lat else None,
            "p99_ms": round(percentile(lat, 99), 1) if lat else None}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="retnet-bench-"))
    files = pick_cifs(args.structures)
    try:
        with deployment(tmp, scaled=args.scaled, voxel_workers=args.voxel_workers) as (url, env, ref, headers), \
                httpx.Client(base_url=url, timeout=600, headers=headers) as client:
            health = wait_up(client)
            if args.scaled:  # the workers need a moment after the API
                time.sleep(8)
            cold = screening(client, files, "bench-cold")
            # the best of n warm runs, as the model alone is the best of 3 (both medians are reported too)
            warm_runs = [screening(client, files, f"bench-warm-{k}") for k in range(args.warm_runs)]
            warm = {**min(warm_runs, key=lambda r: r["seconds"]),
                    "runs_per_min": [r["structures_per_min"] for r in warm_runs]}
            latency = predict_latency(client, files, args.latency_requests)
            crowd = concurrent_clients(url, headers, files, args.clients, args.concurrent_seconds)
            settings = settings_from_env(env)
            rates = model_rates(settings, ref, files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    slower = min(rates["inference_per_min"], rates["voxelize_per_min"])
    return {
        "mode": health["mode"], "model": ref, "cpu_count": os.cpu_count(), "structures": len(files),
        "voxel_workers": args.voxel_workers if args.scaled else None,
        "screening_cold": cold, "screening_warm": warm, "model_alone": rates,
        "ratios": {"warm_over_inference": round(warm["structures_per_min"] / rates["inference_per_min"], 3),
                   "warm_over_inference_medians": round(statistics.median(warm["runs_per_min"])
                                                        / statistics.median(rates["inference_runs_per_min"]), 3),
                   "cold_over_slower_of_voxelize_and_inference": round(cold["structures_per_min"] / slower, 3)},
        "predict_prediction_cache_ms": latency, "concurrent_predict": crowd,
    }


def main() -> None:
    """CLI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scaled", action="store_true", help="Postgres + Redis + worker processes")
    parser.add_argument("--voxel-workers", type=int, default=2, help="scaled mode: `-Q voxels -c 1` processes")
    parser.add_argument("--structures", type=int, default=300)
    parser.add_argument("--warm-runs", type=int, default=3, help="warm screenings (the best is the figure)")
    parser.add_argument("--latency-requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--concurrent-seconds", type=float, default=15)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = parser.parse_args()
    if args.warm_runs < 1:
        parser.error("--warm-runs must be at least 1")
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
