"""Peak memory of the API server under hostile uploads (``python -m bench.memory``).

Starts an embedded server like ``bench.service`` does (``retnet serve`` in a subprocess, fresh data dir, SQLite,
local storage, the Celery workers in threads of the server, default upload limits) and measures the resident
set size (RSS) of the server process from ``/proc/<pid>/status``: VmRSS sampled every 20 ms and VmHWM (the
kernel's peak, reset through ``/proc/<pid>/clear_refs`` before each scenario where allowed). The CIF parser
helpers the workers start (``worker.parsing``) are separate processes: their RSS is reported apart.

Scenarios (every upload at or inside the default limits unless it says refused):

1. ``zip-bomb-refused``: the classic bomb, 100 CIF-named members of 20 MB of zeros in a ~2 MB zip
   (ratio ~1000): refused with 413 by the compression-ratio check before anything is decompressed;
2. ``zip-bomb-in-limits-x3``: three concurrent screenings, each one zip of 100 CIF-named members of exactly
   20 MB (``max_cif_bytes``), 2000 MB expanded (``max_unzipped_bytes`` is 2048 MB) at a ratio of ~150 (limit
   200): every member decompressed, hashed and stored, then read by the workers (they fail it: not a CIF);
3. ``predict-20x20MB``: 20 concurrent ``POST /predict`` of exactly 20 MB each (text that is no CIF), then
   the workers reading them.

Prints idle RSS, the peak of each scenario, the bound (idle + 1 GiB) and whether it held; ``--json`` writes
the figures to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.service import FINAL, REPO, deployment, wait_up

MB = 1024 * 1024
#: The bound the scenarios must stay under, above the idle RSS.
BOUND_ABOVE_IDLE = 1024 * MB
MEMBER_BYTES = 20 * MB
MEMBERS = 100


# --- /proc ----------------------------------------------------------------------------------------------------------

def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in bytes (empty when it is gone)."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "PPid"):
                number = int(rest.split()[0])
                values[key] = number * 1024 if key != "PPid" else number
    except (OSError, ValueError):
        return {}
    return values


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the parser helpers of the server)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _status(int(entry.name)).get("PPid") == pid:
            found.append(int(entry.name))
    return found


def server_pid(port: int) -> int:
    """The ``retnet serve --port <port>`` process."""
    needle = f"--port\0{port}\0".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes() + b"\0" and b"serve" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    raise LookupError(f"no server process for port {port}")


def reset_peak(pid: int) -> bool:
    """Reset the kernel's VmHWM of ``pid`` (``echo 5 > clear_refs``); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Sampler:
    """Samples the RSS of the server and of its children every ``interval_s`` seconds in a thread."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak = 0
        self.children_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0
        kids: list[int] = []
        while not self._stop.is_set():
            self.peak = max(self.peak, _status(self.pid).get("VmRSS", 0))
            if tick % 25 == 0:  # scanning /proc costs more: every half second
                kids = children(self.pid)
            self.children_peak = max(self.children_peak, sum(_status(k).get("VmRSS", 0) for k in kids))
            tick += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- payloads -------------------------------------------------------------------------------------------------------

def refused_bomb(path: Path) -> Path:
    """100 × 20 MB of zeros, named .cif: ~2 MB of zip at a ratio of ~1000."""
    zeros = bytes(MEMBER_BYTES)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for i in range(MEMBERS):
            z.writestr(f"bomb/s{i:03d}.cif", zeros)
    return path


def in_limit_bomb(path: Path, seed: int) -> Path:
    """100 × exactly 20 MB, each 120 kB of random bytes then zeros: ratio ~150, inside every default limit."""
    rng = random.Random(seed)
    zeros = bytes(MEMBER_BYTES - 120_000)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        for i in range(MEMBERS):
            z.writestr(f"bomb/s{i:03d}.cif", rng.randbytes(120_000) + zeros)
    return path


def big_text(seed: int) -> bytes:
    """Exactly 20 MB of printable text without a ``data_`` block."""
    rng = random.Random(seed)
    line = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(79)) + "\n"
    return (line * (MEMBER_BYTES // len(line) + 1)).encode()[:MEMBER_BYTES]


# --- scenarios ------------------------------------------------------------------------------------------------------

def wait_jobs(client: httpx.Client, job_ids: list[str], timeout_s: float) -> dict[str, Any]:
    """Wait until every job is final; their progress summed."""
    deadline = time.monotonic() + timeout_s
    pending = set(job_ids)
    totals = {"done": 0, "failed": 0, "total": 0}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] in FINAL:
                pending.discard(job_id)
                for k in totals:
                    totals[k] += int(job["progress"][k])
        time.sleep(0.5)
    return {**totals, "unfinished": len(pending)}


def measure(name: str, pid: int, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``action`` while sampling; the scenario's peaks (bytes) and what the action reported."""
    hwm_reset = reset_peak(pid)
    t0 = time.perf_counter()
    with Sampler(pid) as sampler:
        outcome = action()
    hwm = _status(pid).get("VmHWM", 0) if hwm_reset else 0
    peak = max(sampler.peak, hwm)
    result = {"scenario": name, "peak_rss": peak, "vmhwm_reset": hwm_reset, "helpers_peak_rss": sampler.children_peak,
              "seconds": round(time.perf_counter() - t0, 1), **outcome}
    print(f"{name}: peak RSS {peak / MB:.0f} MiB (helpers {sampler.children_peak / MB:.0f} MiB) in "
          f"{result['seconds']} s; {json.dumps(outcome)}", flush=True)
    return result


def _post_zip(url: str, headers: dict[str, str], path: Path) -> httpx.Response:
    with httpx.Client(base_url=url, headers=headers, timeout=900) as c, path.open("rb") as fh:
        return c.post("/screenings", files=[("files", (path.name, fh, "application/zip"))])


def _post_predict(url: str, headers: dict[str, str], data: bytes, i: int) -> httpx.Response:
    with httpx.Client(base_url=url, headers=headers, timeout=900) as c:
        return c.post("/predict", files={"file": (f"big{i:02d}.cif", data)}, data={"wait": "0"})


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, run the scenarios, return the figures."""
    with tempfile.TemporaryDirectory(prefix="retnet-bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        print("building payloads ...", flush=True)
        refused = refused_bomb(tmp / "bomb-refused.zip")
        bombs = [in_limit_bomb(tmp / f"bomb-{i}.zip", seed=i) for i in range(3)]
        texts = [big_text(i) for i in range(args.predict_clients)]
        sizes = {"refused_zip_bytes": refused.stat().st_size, "in_limit_zip_bytes": bombs[0].stat().st_size}
        print(f"payloads: {json.dumps(sizes)}", flush=True)
        with deployment(tmp, scaled=False, voxel_workers=0) as (url, _env, _ref, headers), \
                httpx.Client(base_url=url, headers=headers, timeout=600) as client:
            wait_up(client)
            pid = server_pid(int(url.rsplit(":", 1)[1]))
            at_start = _status(pid)["VmRSS"]
            cif = REPO / "tests" / "data" / "cifs" / "KEGZOL04_clean.cif"
            warm = client.post("/predict", files={"file": (cif.name, cif.read_bytes())}, data={"wait": "120"})
            warm.raise_for_status()  # the model is loaded, every import done: this is idle
            time.sleep(2)
            idle = _status(pid)["VmRSS"]
            print(f"server pid {pid}: RSS {at_start / MB:.0f} MiB at start, {idle / MB:.0f} MiB idle after a "
                  "warm-up prediction", flush=True)

            def refused_action() -> dict[str, Any]:
                r = _post_zip(url, headers, refused)
                return {"status": r.status_code, "detail": r.json().get("detail")}

            def bombs_action() -> dict[str, Any]:
                with ThreadPoolExecutor(len(bombs)) as pool:
                    responses = list(pool.map(lambda p: _post_zip(url, headers, p), bombs))
                statuses = [r.status_code for r in responses]
                jobs = [r.json()["job_id"] for r in responses if r.status_code == 202]
                return {"statuses": statuses, **wait_jobs(client, jobs, args.job_timeout_s)}

            def predict_action() -> dict[str, Any]:
                with ThreadPoolExecutor(len(texts)) as pool:
                    responses = list(pool.map(lambda i: _post_predict(url, headers, texts[i], i), range(len(texts))))
                statuses = sorted({r.status_code for r in responses})
                jobs = [r.json()["job_id"] for r in responses if r.status_code in (200, 202)]
                return {"statuses": statuses, **wait_jobs(client, jobs, args.job_timeout_s)}

            scenarios = [measure("zip-bomb-refused", pid, refused_action),
                         measure("zip-bomb-in-limits-x3", pid, bombs_action),
                         measure(f"predict-{len(texts)}x20MB", pid, predict_action)]
    bound = idle + BOUND_ABOVE_IDLE
    worst = max(s["peak_rss"] for s in scenarios)
    result = {"idle_rss_at_start": at_start, "idle_rss": idle, "bound": bound, "held": worst < bound,
              "payloads": sizes, "scenarios": scenarios}
    print(f"idle {idle / MB:.0f} MiB; worst peak {worst / MB:.0f} MiB = idle + {(worst - idle) / MB:.0f} MiB; "
          f"bound idle + {BOUND_ABOVE_IDLE / MB:.0f} MiB = {bound / MB:.0f} MiB: "
          f"{'held' if result['held'] else 'EXCEEDED'}", flush=True)
    return result


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predict-clients", type=int, default=20, help="concurrent 20 MB POST /predict")
    parser.add_argument("--job-timeout-s", type=float, default=900, help="wait for the workers this long")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    raise SystemExit(0 if result["held"] else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
