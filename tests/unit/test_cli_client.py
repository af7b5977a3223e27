"""``retnet client predict|screen|status|results`` against a real HTTP server (uvicorn, embedded app, API keys
required): outputs, the ranked CSV, exit codes (0 / 1 failed item or job / 2 usage / 3 request failed)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helpers import make_test_model
from tests.unit.test_client import BAD_CIF, CIF_DIR, MODEL_REF, REPO, Service, keyed_service, variant


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    model_dir = make_test_model(tmp_path_factory.mktemp("model") / "test-retnet")
    with keyed_service(tmp_path_factory.mktemp("svc"), model_dir) as svc:
        yield svc


@pytest.fixture()
def keyed(service: Service, monkeypatch: pytest.MonkeyPatch) -> Service:
    """The service, its key in RETNET_API_KEY and its URL in RETNET_URL (as a user would set them)."""
    monkeypatch.setenv("RETNET_API_KEY", service.key)
    monkeypatch.setenv("RETNET_URL", service.url)
    return service


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    """A folder of the 9 committed CIFs."""
    root = tmp_path / "good"
    root.mkdir()
    for p in CIF_DIR.glob("*.cif"):
        shutil.copy(p, root / p.name)
    return root


@pytest.fixture()
def mixed(good: Path) -> Path:
    """The good folder plus one plain-text file posing as a CIF."""
    shutil.copy(BAD_CIF, good / BAD_CIF.name)
    return good


def run(*argv: str) -> int:
    from app.cli import main

    return main(["client", *argv])


def ranked(text: str) -> list[dict[str, str]]:
    """Rows of the API's CSV; asserts the ranking (values descending, failed rows last, rank 1…n)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    ok = [r for r in rows if r["status"] == "succeeded"]
    values = [float(r["value"]) for r in ok]
    assert values == sorted(values, reverse=True) and rows[:len(ok)] == ok
    assert [r["rank"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
    return rows


def test_screen_a_folder_writes_the_ranked_csv_and_exits_1_for_a_failed_item(
        keyed: Service, mixed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.csv"
    assert run("screen", str(mixed), "--out", str(out), "--name", "cli", "--poll", "0.2") == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # the CSV went to the file
    rows = ranked(out.read_text())
    assert len(rows) == 10 and rows[-1]["name"] == BAD_CIF.name and "not a CIF" in rows[-1]["error"]
    assert {r["model"] for r in rows[:-1]} == {MODEL_REF}
    assert "FAILED plain_text" in captured.err and "not a CIF" in captured.err
    assert "predicted 9 of 10 structure(s)" in captured.err and "1 failed" in captured.err
    assert f"wrote {out}" in captured.err


def test_screen_in_a_real_process_succeeds_with_exit_0_and_no_torch(keyed: Service, good: Path,
                                                                    tmp_path: Path) -> None:
    out = tmp_path / "ok.csv"
    code = ("import sys; from app.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'the client imported torch'; sys.exit(rc)")
    env = {**os.environ, "RETNET_API_KEY": keyed.key}
    done = subprocess.run([sys.executable, "-c", code, "client", "screen", str(good), "--url", keyed.url,
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = ranked(out.read_text())
    assert len(rows) == 9 and all(r["status"] == "succeeded" for r in rows)
    assert "predicted 9 of 9 structure(s)" in done.stderr and "0 failed" in done.stderr


def test_screen_to_stdout_in_ascending_order_and_volumetric_units(keyed: Service, good: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert run("screen", str(good), "--order", "asc", "--quiet", "--units", "cm3(STP)/cm3") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    values = [float(r["value"]) for r in rows]
    assert len(rows) == 9 and values == sorted(values)
    assert {r["unit"] for r in rows} == {"cm3(STP)/cm3"}


def test_no_wait_then_status_and_results(keyed: Service, mixed: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run("screen", str(mixed), "--no-wait") == 0
    job_id = capsys.readouterr().out.strip()
    assert len(job_id) >= 8 and "\n" not in job_id

    assert run("status", job_id, "--wait", "--poll", "0.2") == 1  # one item failed
    captured = capsys.readouterr()
    job = json.loads(captured.out)
    assert job["id"] == job_id and job["status"] == "succeeded"
    assert job["progress"] == {"done": 9, "failed": 1, "total": 10}
    assert "9 done, 1 failed of 10" in captured.err

    assert run("results", job_id, "--format", "json") == 1
    items = json.loads(capsys.readouterr().out)
    assert len(items) == 10 and items[-1]["status"] == "failed" and items[0]["rank"] == 1
    values = [i["prediction"]["value"] for i in items[:-1]]
    assert values == sorted(values, reverse=True)

    out = tmp_path / "again.csv"
    assert run("results", job_id, "--out", str(out)) == 1
    assert [r["name"] for r in ranked(out.read_text())] == [i["name"] for i in items]
    assert run("results", job_id) == 1
    assert capsys.readouterr().out.replace("\r\n", "\n") == out.read_text().replace("\r\n", "\n")


def test_status_of_a_clean_job_is_0(keyed: Service, good: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("screen", str(good), "--no-wait") == 0
    job_id = capsys.readouterr().out.strip()
    assert run("status", job_id, "--wait", "--poll", "0.2") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"


def test_predict_prints_rows_and_exits_1_when_a_file_fails(keyed: Service, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cif = CIF_DIR / "KEGZOL04_clean.cif"
    assert run("predict", str(cif), str(BAD_CIF), "--format", "csv") == 1
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [r["name"] for r in rows] == ["KEGZOL04_clean", "plain_text"]  # stems, as in `retnet predict`
    assert rows[0]["model"] == MODEL_REF and rows[0]["unit"] == "mol/kg" and rows[0]["error"] == ""
    assert len(rows[0]["sha256"]) == 64
    assert rows[1]["value"] == "" and "not a CIF" in rows[1]["error"]
    assert "FAILED plain_text" in captured.err and "predicted 1 of 2 structure(s)" in captured.err

    assert run("predict", str(cif), "--format", "json") == 0
    result = json.loads(capsys.readouterr().out)  # the API's answer
    assert result["prediction"]["value"] == pytest.approx(float(rows[0]["value"]), rel=1e-5)
    assert result["structure"]["sha256"] == rows[0]["sha256"] and result["job_id"]
    assert run("predict", str(cif), "--format", "json", "--units", "cm3(STP)/cm3") == 0
    assert json.loads(capsys.readouterr().out)["prediction"]["unit"] == "cm3(STP)/cm3"

    assert run("predict", str(cif)) == 0  # the table
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["name", "value", "uncertainty"] and table[2].startswith("KEGZOL04_clean")
    with pytest.raises(SystemExit) as usage:
        run("predict", str(cif), "--units", "furlongs")
    assert usage.value.code == 2


def test_wait_timeout_exits_1_and_the_job_goes_on(keyed: Service, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for i, p in enumerate(sorted(CIF_DIR.glob("*.cif"))[:3]):
        (fresh / f"t{i}.cif").write_bytes(variant(p, "cli-timeout"))
    assert run("screen", str(fresh), "--timeout", "0") == 1
    assert "is still" in capsys.readouterr().err


def test_an_api_key_is_required(service: Service, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("RETNET_API_KEY", raising=False)
    cif = str(CIF_DIR / "EDUWAB_clean.cif")
    assert run("predict", cif, "--url", service.url) == 3
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "API key is required" in err and "RETNET_API_KEY" in err
    assert run("status", "x", "--url", service.url, "--api-key", "rk_wrong") == 3
    err = capsys.readouterr().err
    assert "invalid or revoked" in err and "the key given was refused" in err
    assert run("predict", cif, "--url", service.url, "--api-key", service.key, "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["prediction"]["model"] == MODEL_REF


def test_request_failures_exit_3_and_usage_errors_2(keyed: Service, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run("status", "no-such-job") == 3
    assert "HTTP 404" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run("status", "x", "--url", f"http://127.0.0.1:{port}", "--retries", "0") == 3
    assert "cannot reach the service" in capsys.readouterr().err
    assert run("screen", str(tmp_path / "missing")) == 2
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        run("results")
    assert usage.value.code == 2
