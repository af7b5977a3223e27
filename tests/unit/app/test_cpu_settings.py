"""CPU settings of compute processes (app.core.cpu) and the pipeline's chunk bounds."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.core.config import Settings


def test_openmp_spin_is_shortened_before_torch_loads_and_a_set_value_wins() -> None:
    code = ("import os, sys; from app.core.cpu import short_openmp_spin; print(short_openmp_spin(), "
            "os.environ['GOMP_SPINCOUNT']); import torch; print(short_openmp_spin())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}).stdout.split()
    assert out == ["True", "10000", "False"]  # torch imported: too late for libgomp, nothing changed
    env: dict[str, str] = {"GOMP_SPINCOUNT": "500"}
    if "torch" not in sys.modules:
        from app.core.cpu import short_openmp_spin

        short_openmp_spin(env)
        assert env["GOMP_SPINCOUNT"] == "500"


def test_entry_points_do_not_load_torch_before_the_setting() -> None:
    code = "import sys, app.cli, app.server, worker.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("pipeline", [{"chunk_min": 100}, {"chunk_min": 16, "inference_chunk_max": 8}])
def test_chunk_min_above_a_cap_is_refused(pipeline: dict[str, int]) -> None:
    with pytest.raises(ValidationError, match="chunk_min"):
        Settings(pipeline=pipeline)
