"""Shared test fixtures: paths to the committed test data."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
CIF_DIR = TESTS_DIR / "data" / "cifs"


@pytest.fixture(scope="session")
def cif_dir() -> Path:
    """Folder of small committed CIFs."""
    return CIF_DIR
