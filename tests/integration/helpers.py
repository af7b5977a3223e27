"""Helpers for the service tests: a tiny model, service URLs, worker subprocesses, polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODEL_NAME = "test-retnet"
MODEL_VERSION = "0.0.1"


def training_zip(cifs: list[Path], labels: list[float], target: str = "ch4") -> bytes:
    """A ``POST /training-jobs`` upload: the CIFs and a ``labels.csv`` of ``name,<target>`` rows (mol/kg)."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in cifs:
            z.write(p, p.name)
        z.writestr("labels.csv", f"name,{target}\n" + "".join(f"{p.stem},{y}\n" for p, y in zip(cifs, labels,
                                                                                             strict=True)))
    return buf.getvalue()


def make_test_model(directory: Path, *, name: str = MODEL_NAME, version: str = MODEL_VERSION) -> Path:
    """Save a freshly initialised (untrained) RetNet with models.artifacts.save_model."""
    import torch

    from models.artifacts import ModelCard, Target, save_model
    from models.params import VoxelParams
    from models.retnet import RetNet

    torch.manual_seed(0)
    model = RetNet(n_outputs=1).eval()
    card = ModelCard(
        name=name, version=version,
        targets=[Target(name="ch4_uptake", unit="mol/kg", property="CH4 uptake, 298 K, 5.8 bar")],
        voxel_params=VoxelParams(), standardization={"mean": 1.0, "std": 0.5}, preliminary=True,
    )
    return Path(save_model(directory, model, card))


def pg_admin_url() -> str | None:
    """A reachable admin URL of the local Postgres (user postgres, then root), or None."""
    import psycopg

    for user in ("postgres", "root"):
        url = f"postgresql://{user}@127.0.0.1:5432/test"
        try:
            with psycopg.connect(url, connect_timeout=3):
                return url
        except psycopg.Error:
            continue
    return None


def create_database(admin_url: str) -> tuple[str, str]:
    """Create ``retnet_test_<random>``; return (name, SQLAlchemy URL)."""
    import psycopg

    name = f"retnet_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return name, f"{base}/{name}"


def drop_database(admin_url: str, name: str) -> None:
    """Drop a test database, disconnecting stragglers."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class WorkerProcess:
    """A real ``python -m worker.main`` subprocess in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path, queues: str = "voxels,inference,training",
                 concurrency: int = 2) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.main", "-Q", queues, "-c", str(concurrency), "--loglevel", "INFO"],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait for Celery's 'ready.' log line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        """The end of the worker log."""
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its pool children)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        self._log.close()


def wait_job(client: Any, job_id: str, timeout: float = 120.0, *, until: tuple[str, ...] = ("succeeded", "failed",
                                                                                              "cancelled")) -> dict:
    """Poll GET /jobs/{id} until a final status."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = client.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in until:
            return body
        time.sleep(0.25)
    raise TimeoutError(f"job {job_id} not finished after {timeout} s: {body}")


def coremof_cifs(n: int, *, skip: int = 0, max_bytes: int = 60_000) -> list[Path]:
    """``n`` real CoRE MOF 2019-ASR CIFs (small ones, deterministic order)."""
    from models.datasets import coremof_cif_dir

    folder = coremof_cif_dir()
    files = sorted(p for p in folder.glob("*.cif") if 8_000 < p.stat().st_size < max_bytes)
    return files[skip * 7: skip * 7 + n * 7: 7][:n] if len(files) >= (skip + n) * 7 else files[skip: skip + n]


BROKEN_CIFS = {
    "not_a_cif.cif": b"this is not a crystal structure, just text\n",
    "no_cell.cif": b"data_x\n_symmetry_space_group_name_H-M 'P 1'\nloop_\n_atom_site_label\n_atom_site_fract_x\n"
                   b"_atom_site_fract_y\n_atom_site_fract_z\nC1 0 0 0\n",
    "binary.cif": bytes(range(256)) * 4,
}
