"""Optional test dependencies: skipped locally without them, a failure in CI (never a silent skip there)."""

from __future__ import annotations

import pytest

MISSING = "retnet_no_such_test_dependency"


@pytest.mark.parametrize("env", [{"CI": "true"}, {"CI": "1"}, {"RETNET_TEST_REQUIRE_SERVICES": "1"}])
def test_missing_dependency_fails_in_ci(optional_module, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                        env: dict[str, str]) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("RETNET_TEST_REQUIRE_SERVICES", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(pytest.fail.Exception, match="required because CI"):
        optional_module(MISSING, "a test dependency")


def test_missing_dependency_skips_locally(optional_module, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CI", "false")
    monkeypatch.delenv("RETNET_TEST_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        optional_module(MISSING, "a test dependency")


def test_present_dependency_is_returned(optional_module) -> None:  # type: ignore[no-untyped-def]
    import json

    assert optional_module("json", "the json module") is json
