"""The API process never imports ``worker`` (nor torch) outside the embedded-mode wiring (app/embedded.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import sys
from fastapi.testclient import TestClient
from app.core.config import Settings
from app.db.migrate import upgrade
from app.main import create_app

settings = Settings(data_dir=sys.argv[1], embedded_workers=False, register_shipped_model=False)
upgrade(settings.db_url)
with TestClient(create_app(settings)) as client:
    assert client.get("/metrics").status_code == 200
    client.get("/health")
    client.get("/models")
print("LOADED", sorted(m for m in sys.modules if m == "worker" or m.startswith("worker.") or m == "torch"))
"""


def test_api_process_imports_no_worker_module(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=180)
    assert done.returncode == 0, done.stderr
    assert "LOADED []" in done.stdout, done.stdout
