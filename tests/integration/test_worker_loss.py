"""A worker SIGKILLed in the middle of a screening: the messages are redelivered and the screening completes."""

from __future__ import annotations

import os
import time

import pytest

from tests.integration.helpers import WorkerProcess, coremof_cifs, wait_job

pytestmark = pytest.mark.integration


def test_screening_survives_a_killed_worker(scaled_client, scaled_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, **scaled_env, "PYTHONUNBUFFERED": "1"}
    first = WorkerProcess(env, tmp_path / "w1.log", concurrency=1)
    second = None
    try:
        first.wait_ready()
        files = coremof_cifs(24, skip=40, max_bytes=120_000)  # not cached yet: every item is voxelized
        r = scaled_client.post("/screenings", files=[("files", (p.name, p.read_bytes())) for p in files])
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            p = scaled_client.get(f"/jobs/{job_id}").json()["progress"]
            if p["done"] + p["failed"] >= 2:
                break
            time.sleep(0.05)
        assert p["done"] + p["failed"] < p["total"], "the screening finished before the kill; use more structures"
        first.kill()
        assert first.proc.returncode is not None
        second = WorkerProcess(env, tmp_path / "w2.log", concurrency=2)
        second.wait_ready()
        job = wait_job(scaled_client, job_id, 240)
        assert job["status"] == "succeeded", (job, second.tail())
        assert job["progress"]["done"] + job["progress"]["failed"] == len(files)
        assert job["progress"]["done"] >= len(files) - 2
        items = scaled_client.get(f"/jobs/{job_id}/results", params={"limit": 100}).json()["items"]
        assert len({i["item_id"] for i in items}) == len(files)
    finally:
        first.stop()
        if second is not None:
            second.stop()
