"""Service benchmark: /predict latency on a cached structure, and screening throughput (cold and warm cache).

By default it starts its own embedded server (``app.server.serve`` in a subprocess: SQLite, local storage,
in-process workers) in a temporary data dir, registers a model (the shipped one when present, else a freshly
initialised RetNet: inference cost is the same), and uses CoRE MOF 2019-ASR CIFs::

    python -m bench.service                       # embedded server started by the script
    python -m bench.service --url http://host:8000  # an already running server (any mode)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_data_dir(data_dir: Path) -> str:
    """Migrate the embedded database and register a model; return its ref."""
    os.environ["RETNET_DATA_DIR"] = str(data_dir)
    from app.core.config import get_settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.services.registry import register_model_dir, register_shipped_model
    from app.storage import store_from_uri

    get_settings.cache_clear()
    settings = get_settings()
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
        return row.ref


def start_server(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """``serve()`` in a subprocess (embedded mode)."""
    env = {**os.environ, "RETNET_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    code = f"from app.server import serve; serve('127.0.0.1', {port}, {str(data_dir)!r}, log_level='warning')"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=open(log_path, "wb"),  # noqa: SIM115
                            stderr=subprocess.STDOUT)


def wait_up(client: httpx.Client, timeout: float = 120) -> None:
    """Wait for /health."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/health").status_code == 200:
                return
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


def screening(client: httpx.Client, files: list[Path], name: str) -> dict[str, float]:
    """Submit one screening and time it until every item is finished."""
    t0 = time.perf_counter()
    r = client.post("/screenings", files=[("files", (p.name, p.read_bytes())) for p in files], data={"name": name})
    r.raise_for_status()
    job_id = r.json()["job_id"]
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    dt = time.perf_counter() - t0
    p = job["progress"]
    return {"structures": p["total"], "done": p["done"], "failed": p["failed"], "seconds": round(dt, 2),
            "structures_per_min": round(p["total"] / dt * 60, 1)}


def run(url: str | None, n_structures: int, n_latency: int) -> dict[str, object]:
    """Run the benchmark; return the figures."""
    proc = None
    tmp = tempfile.mkdtemp(prefix="retnet-bench-")
    try:
        if url is None:
            data_dir = Path(tmp) / "data"
            ref = prepare_data_dir(data_dir)
            port = _free_port()
            proc = start_server(data_dir, port, Path(tmp) / "server.log")
            url = f"http://127.0.0.1:{port}"
        else:
            ref = None
        with httpx.Client(base_url=url, timeout=600) as client:
            wait_up(client)
            health = client.get("/health").json()
            files = pick_cifs(n_structures)
            cached = files[0]
            r = client.post("/predict", files={"file": (cached.name, cached.read_bytes())}, data={"wait": "120"})
            r.raise_for_status()
            latencies = []
            for _ in range(n_latency):
                t0 = time.perf_counter()
                r = client.post("/predict", files={"file": (cached.name, cached.read_bytes())})
                latencies.append((time.perf_counter() - t0) * 1e3)
                assert r.status_code == 200 and r.json()["timings"]["cache_hit"], r.text
            cold = screening(client, files, "bench-cold")
            warm = screening(client, files, "bench-warm")
            metrics = client.get("/metrics").text
        return {
            "mode": health["mode"], "model": ref or health["model"]["detail"], "cpu_count": os.cpu_count(),
            "predict_cached_ms": {"n": n_latency, "p50": round(statistics.median(latencies), 1),
                                  "p99": round(percentile(latencies, 99), 1),
                                  "mean": round(statistics.mean(latencies), 1)},
            "screening_cold": cold, "screening_warm": warm,
            "cache_hits": next((ln.split()[-1] for ln in metrics.splitlines()
                                if ln.startswith("retnet_voxel_cache_hits_total")), None),
        }
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    """CLI."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    parser.add_argument("--structures", type=int, default=200)
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    args = parser.parse_args()
    result = run(args.url, args.structures, args.latency_requests)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
