"""Shared test fixtures: paths to the committed test data; optional test dependencies that CI requires."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

TESTS_DIR = Path(__file__).resolve().parent
CIF_DIR = TESTS_DIR / "data" / "cifs"


def strict_environment() -> bool:
    """True in CI (``CI=true``) or with ``RETNET_TEST_REQUIRE_SERVICES=1``: a missing test dependency fails."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    return ci or os.environ.get("RETNET_TEST_REQUIRE_SERVICES") == "1"


def require_optional(module: str, what: str) -> ModuleType:
    """Import an optional *third-party* test dependency: skip without it locally, fail in CI.

    Never use it for the project's own modules: those are imported normally, so a broken import is an error.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{what} is not installed ({module}: {exc}); install the dev extra: pip install -e '.[dev]'"
        if strict_environment():
            pytest.fail(f"{message} (required because CI / RETNET_TEST_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="session")
def optional_module() -> Callable[[str, str], ModuleType]:
    """:func:`require_optional` as a fixture (conftest modules are not importable from the tests)."""
    return require_optional


@pytest.fixture(scope="session")
def cif_dir() -> Path:
    """Folder of small committed CIFs."""
    return CIF_DIR
