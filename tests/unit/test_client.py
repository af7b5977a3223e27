"""retnet_client against a real HTTP server: uvicorn serving the real app (embedded mode, in-process worker,
a small test model, API keys required) in a background thread; retries through a tiny real proxy that answers
503/429 first.

One service per module: the embedded workers of two apps in one process would share the in-memory broker.
"""

from __future__ import annotations

import http.server
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.integration.helpers import MODEL_NAME, MODEL_VERSION, make_test_model

REPO = Path(__file__).resolve().parents[2]
CIF_DIR = REPO / "tests" / "data" / "cifs"
BAD_CIF = REPO / "tests" / "data" / "bad" / "plain_text.cif"
MODEL_REF = f"{MODEL_NAME}:{MODEL_VERSION}"


# --- a real service on a free port -------------------------------------------------------------------------


def embedded_settings(data_dir: Path, model_dir: Path, **update: Any) -> Any:
    """Embedded settings (SQLite, local store, in-process worker) with the test model registered."""
    from app.core.config import Settings
    from app.db.migrate import upgrade
    from app.db.session import session_scope
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri

    settings = Settings(data_dir=data_dir, register_shipped_model=False, device="cpu", embedded_concurrency=2,
                        inference={"batch_size": 8, "batch_timeout_ms": 20}, **update)
    assert settings.embedded
    upgrade(settings.db_url)
    with session_scope(settings.db_url) as session:
        register_model_dir(session, store_from_uri(settings.store_uri), model_dir)
    return settings


@contextmanager
def serve_app(settings: Any) -> Iterator[str]:
    """uvicorn serving ``create_app(settings)`` (lifespan on: the embedded worker runs) in a thread; yields its URL."""
    import uvicorn

    from app.main import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("model") / "test-retnet")


class Service(NamedTuple):
    """A running service and an API key it accepts."""

    url: str
    key: str


@contextmanager
def keyed_service(data_dir: Path, model_dir: Path) -> Iterator[Service]:
    """A real embedded service that requires API keys (as in scaled mode), with one key created."""
    from app.db.session import session_scope
    from app.services.keys import create_key

    settings = embedded_settings(data_dir, model_dir, auth={"required": True, "requests_per_minute": 100_000})
    with session_scope(settings.db_url) as session:
        key = create_key(session, "lab")
    with serve_app(settings) as url:
        yield Service(url, key)


@pytest.fixture(scope="module")
def service(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with keyed_service(tmp_path_factory.mktemp("svc"), model_dir) as svc:
        yield svc


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """The 9 committed CIFs and one plain-text file posing as a CIF, in a folder with a subfolder."""
    root = tmp_path / "cifs"
    (root / "more").mkdir(parents=True)
    cifs = sorted(CIF_DIR.glob("*.cif"))
    for p in cifs[:5]:
        shutil.copy(p, root / p.name)
    for p in cifs[5:]:
        shutil.copy(p, root / "more" / p.name)
    shutil.copy(BAD_CIF, root / BAD_CIF.name)
    (root / ".hidden.cif").write_text("never sent")
    (root / "notes.txt").write_text("not a CIF either, and not sent")
    return root


def variant(path: Path, tag: str) -> bytes:
    """The CIF's bytes plus a comment line: new bytes (no prediction cache hit), the same crystal."""
    return path.read_bytes() + f"\n# {tag}\n".encode()


def client_for(service: Service, url: str | None = None, **kw: Any) -> Any:
    """A client of ``service`` (or of ``url``, a proxy in front of it) with the service's key."""
    from retnet_client import Client

    return Client(url or service.url, **{"api_key": service.key, **kw})


# --- the package itself ------------------------------------------------------------------------------------


def test_importing_the_client_imports_neither_torch_nor_the_service() -> None:
    code = ("import sys, retnet_client; from retnet_client import Client, RetNetError, to_dataframe; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'app', 'worker', 'models', "
            "'numpy', 'pandas')); print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_retry_after_parsing_and_backoff() -> None:
    import random
    from datetime import UTC, datetime

    from retnet_client.retry import RetryPolicy, parse_retry_after, should_retry

    assert parse_retry_after("2") == 2.0 and parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0 and parse_retry_after("nan") is None and parse_retry_after("") is None
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:07 GMT", now=now) == pytest.approx(7.0)
    assert parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now=now) == 0.0
    policy = RetryPolicy(retries=3, backoff_s=0.5, max_backoff_s=2.0, max_retry_after_s=10.0)
    assert policy.delay(1, 4.0) == 4.0 and policy.delay(1, 99.0) == 10.0
    rng = random.Random(0)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (6, 2.0)):
        d = policy.delay(attempt, None, rng)
        assert ceiling / 2 <= d <= ceiling
    assert all(should_retry(s) for s in (None, 429, 502, 503, 504))
    assert not any(should_retry(s) for s in (400, 401, 404, 409, 413, 422, 500))


def test_gather_and_pack_folders_files_and_zips(folder: Path, tmp_path: Path) -> None:
    from retnet_client.uploads import gather, pack

    cifs, zips = gather(folder)
    names = sorted(c.name for c in cifs)
    assert names == sorted([p.name for p in CIF_DIR.glob("*.cif")] + [BAD_CIF.name])  # recursive, hidden skipped
    assert zips == []
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(BAD_CIF, "x.cif")
    cifs2, zips2 = gather([archive, ("mem.cif", b"data_x\n"), folder / "more"])
    assert zips2 == [archive] and [c.name for c in cifs2][0] == "mem.cif" and len(cifs2) == 5
    with pytest.raises(FileNotFoundError):
        gather(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no CIF"):
        gather(tmp_path / "empty")

    with pack(cifs, [archive]) as loose:  # few CIFs: one part each, the zip as it is
        assert not loose.zipped and len(loose.parts) == 1 + len(cifs)
        assert loose.parts[0].filename == "set.zip"
        assert loose.files()[1][1][1] == cifs[0].read()
    dup = [*cifs, cifs[0]]
    with pack(dup, [], loose_max_files=3) as batch:  # many: one zip built here, every member once
        assert batch.zipped and len(batch.parts) == 1
        for _ in range(2):  # every attempt sends the same, complete zip
            data = batch.files()[0][1][1].read()
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                members = z.namelist()
                assert z.read(members[0]) == cifs[0].read()
        assert len(members) == len(dup) == len(set(members))
        assert sorted(m.rsplit("/", 1)[-1] for m in members) == sorted(c.name for c in dup)


# --- predict -----------------------------------------------------------------------------------------------


def test_predict_a_path_and_bytes(service: Service) -> None:
    from retnet_client import RetNetError

    cif = CIF_DIR / "KEGZOL04_clean.cif"
    with client_for(service) as client:
        assert client.health()["mode"] == "embedded"
        assert MODEL_REF in [m["ref"] for m in client.models()["data"]]
        first = client.predict(cif, model=MODEL_NAME)
        p = first["prediction"]
        assert first["status"] == "succeeded" and p["model"] == MODEL_REF and p["unit"] == "mol/kg"
        assert isinstance(p["value"], float) and first["structure"]["name"] == "KEGZOL04_clean"
        assert first["name"] == "KEGZOL04_clean.cif" and first["structure"]["n_atoms"] == 40
        again = client.predict(cif.read_bytes(), name="renamed.cif")
        assert again["timings"]["cache_hit"] is True and again["name"] == "renamed.cif"
        assert again["prediction"]["value"] == pytest.approx(p["value"])
        volumetric = client.predict(cif, units="cm3(STP)/cm3")["prediction"]  # converted by the service
        assert volumetric["unit"] == "cm3(STP)/cm3" and volumetric["model"] == MODEL_REF
        density = volumetric["value"] / p["value"] / 22.414  # cm³(STP)/cm³ = mol/kg × ρ (g/cm³) × 22.414
        assert 0.2 < density < 5.0  # a crystal's density in g/cm³
        with pytest.raises(RetNetError) as unit:
            client.predict(cif, units="mg/g")
        assert unit.value.status_code == 422 and "cm3(STP)/cm3" in unit.value.detail
        with open(cif, "rb") as fh:
            assert client.predict(fh)["prediction"]["value"] == pytest.approx(p["value"])
        with pytest.raises(RetNetError) as bad:
            client.predict(BAD_CIF)
        assert bad.value.status_code == 422 and "not a CIF" in bad.value.detail
        assert "HTTP 422" in str(bad.value) and "/predict" in str(bad.value)
        with pytest.raises(RetNetError) as unknown:
            client.predict(cif, model="nope:9")
        assert unknown.value.status_code == 422 and MODEL_REF in unknown.value.detail


def test_predict_polls_the_job_when_the_api_answers_202(service: Service) -> None:
    seen: list[tuple[str, str, int]] = []
    with client_for(service, server_wait=0, poll=0.2) as client:
        client.transport._http.event_hooks["response"].append(
            lambda r: seen.append((r.request.method, r.request.url.path, r.status_code)))
        result = client.predict(variant(CIF_DIR / "SAYTUJ_clean.cif", "poll"), name="SAYTUJ_variant.cif")
    assert ("POST", "/predict", 202) in seen
    assert ("GET", f"/jobs/{result['job_id']}", 200) in seen
    assert result["status"] == "succeeded" and result["prediction"]["model"] == MODEL_REF
    assert result["name"] == "SAYTUJ_variant.cif" and result["structure"]["name"] == "SAYTUJ_variant"


def test_a_prediction_that_fails_while_polled_raises_job_failed(service: Service) -> None:
    from retnet_client import JobFailedError

    with client_for(service, server_wait=0, poll=0.2) as client, pytest.raises(JobFailedError) as failed:
        client.predict(BAD_CIF.read_bytes() + b"\n# polled\n", name="plain_text.cif")
    assert "not a CIF" in failed.value.detail and failed.value.job["status"] == "failed"
    assert failed.value.job_id == failed.value.job["id"]


# --- screen, status, results, wait -------------------------------------------------------------------------


def _check_ranked(rows: list[dict[str, Any]], n_ok: int, n_failed: int) -> None:
    ok = [r for r in rows if r["status"] == "succeeded"]
    assert len(ok) == n_ok and len(rows) == n_ok + n_failed
    values = [r["prediction"]["value"] for r in ok]
    assert values == sorted(values, reverse=True)
    assert rows[:n_ok] == ok  # failed items last
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))


def test_screen_a_folder_returns_ranked_rows_and_a_dataframe(service: Service, folder: Path) -> None:
    calls: list[dict[str, Any]] = []
    with client_for(service, poll=0.2) as client:
        rows = client.screen(folder, model=MODEL_NAME, name="folder", progress=calls.append)
    _check_ranked(rows, 9, 1)
    assert rows.job["status"] == "succeeded" and rows.job["name"] == "folder"
    assert rows.job["progress"] == {"done": 9, "failed": 1, "total": 10}
    assert calls and calls[-1]["status"] == "succeeded" and calls[-1]["progress"]["total"] == 10
    assert {r["name"] for r in rows} == {p.name for p in CIF_DIR.glob("*.cif")} | {BAD_CIF.name}
    assert len(rows.failed) == 1 and "not a CIF" in rows.failed[0]["error"]
    df = rows.dataframe()
    assert len(df) == 10 and list(df["name"]) == [r["name"] for r in rows]
    assert list(df.columns[:4]) == ["rank", "name", "status", "value"]
    assert df["value"].iloc[0] == pytest.approx(rows[0]["prediction"]["value"])
    assert df["model"].iloc[0] == MODEL_REF and df["unit"].iloc[0] == "mol/kg"


def test_screen_zips_a_large_batch_in_memory(service: Service, folder: Path) -> None:
    sources = [folder, ("dup/KEGZOL04_clean.cif", (CIF_DIR / "KEGZOL04_clean.cif").read_bytes())]
    with client_for(service, poll=0.2) as client:
        rows = client.screen(sources, loose_max_files=4, units="cm3(STP)/cm3")
    _check_ranked(rows, 10, 1)  # ranked in the unit asked for
    names = [r["name"] for r in rows]
    assert names.count("KEGZOL04_clean.cif") == 2 and len(names) == 11
    assert all(r["prediction"]["unit"] == "cm3(STP)/cm3" for r in rows if r["prediction"])


def test_status_wait_and_results_in_json_and_csv(service: Service, folder: Path, tmp_path: Path) -> None:
    import csv

    from retnet_client import RetNetError, WaitTimeoutError

    with client_for(service, poll=0.2) as client:
        fresh = [(f"v{i}.cif", variant(p, "wait")) for i, p in enumerate(sorted(CIF_DIR.glob("*.cif"))[:3])]
        accepted = client.screen(fresh, wait=False)
        assert accepted["status"] in ("queued", "running") and accepted["job"]["progress"]["total"] == 3
        with pytest.raises(WaitTimeoutError) as late:
            client.wait(accepted["job_id"], timeout=0)
        assert late.value.job["status"] in ("queued", "running") and late.value.job_id == accepted["job_id"]

        job_id = client.submit_screening(folder, name="paged")["job_id"]
        job = client.wait(job_id, poll=0.2)
        assert job["status"] == "succeeded" and client.status(job_id) == job
        rows = client.results(job_id)
        _check_ranked(rows, 9, 1)
        assert client.results(job_id, page_size=3) == rows  # four pages, the same rows
        assert client.results(job_id, offset=8, limit=2) == rows[8:]
        by_input = client.results(job_id, order="input")
        assert sorted(r["item_id"] for r in by_input) == sorted(r["item_id"] for r in rows)

        text = client.results(job_id, format="csv")
        table = list(csv.DictReader(io.StringIO(text)))
        assert [t["name"] for t in table] == [r["name"] for r in rows]
        assert [t["rank"] for t in table] == [str(r["rank"]) for r in rows]
        assert table[-1]["status"] == "failed" and "not a CIF" in table[-1]["error"]
        path = client.download(job_id, tmp_path / "results.csv")
        assert path.read_bytes().decode() == text and not list(tmp_path.glob(".*.part"))

        with pytest.raises(RetNetError) as missing:
            client.status("no-such-job")
        assert missing.value.status_code == 404 and missing.value.detail


# --- API keys ----------------------------------------------------------------------------------------------


def test_an_api_key_is_required_and_then_works(service: Service) -> None:
    from retnet_client import RetNetError

    cif = CIF_DIR / "EDUWAB_clean.cif"
    with client_for(service, api_key=None) as anonymous, pytest.raises(RetNetError) as missing:
        anonymous.predict(cif)
    assert missing.value.status_code == 401 and "API key is required" in missing.value.detail
    with client_for(service, api_key="rk_not-a-key") as wrong, pytest.raises(RetNetError) as refused:
        wrong.status("anything")
    assert refused.value.status_code == 401 and "invalid or revoked" in refused.value.detail
    with client_for(service) as client:
        result = client.predict(cif)
        assert result["prediction"]["model"] == MODEL_REF
        assert client.status(result["job_id"])["status"] == "succeeded"


# --- retries -----------------------------------------------------------------------------------------------


class FlakyProxy:
    """A real HTTP proxy to the service that spoils the first answer to ``path``: it forwards the request (the
    service does the work) and answers ``status`` with ``Retry-After`` instead of the real answer; later
    requests are forwarded and answered as they are. ``attempts`` records each request to ``path``."""

    def __init__(self, upstream: Service, path: str, status: int, retry_after: str | None = "1",
                 body: dict[str, Any] | None = None) -> None:
        import httpx

        self.attempts: list[dict[str, Any]] = []
        proxy = self
        http_client = httpx.Client(base_url=upstream.url, timeout=120)

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body_in = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                upstream_answer = http_client.request(self.command, self.path, content=body_in, headers=headers)
                status_out, headers_out, content = (upstream_answer.status_code,
                                                    dict(upstream_answer.headers), upstream_answer.content)
                if self.path.split("?")[0] == path:
                    proxy.attempts.append({"at": time.monotonic(), "key": self.headers.get("Idempotency-Key"),
                                           "upstream": upstream_answer.json()})
                    if len(proxy.attempts) == 1:
                        content = json.dumps(body or {"detail": "the broker is unavailable (simulated)"}).encode()
                        headers_out = {"content-type": "application/json"}
                        if retry_after is not None:
                            headers_out["Retry-After"] = retry_after
                        status_out = status
                self.send_response(status_out)
                for k, v in headers_out.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding",
                                         "date", "server"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._http = http_client

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._http.close()


def test_predict_retries_after_503_with_the_same_idempotency_key(service: Service) -> None:
    cif = variant(CIF_DIR / "FIGXAU_clean.cif", "retry")
    with FlakyProxy(service, "/predict", 503) as proxy, client_for(service, proxy.url) as client:
        result = client.predict(cif, name="FIGXAU_retry.cif")
    first, second = proxy.attempts
    assert first["key"] and first["key"] == second["key"]
    assert second["at"] - first["at"] >= 1.0  # Retry-After: 1 was honoured
    assert second["at"] - first["at"] < 10.0
    # the first attempt did reach the service: the retry got that job back instead of submitting again
    assert first["upstream"]["job_id"] == second["upstream"]["job_id"] == result["job_id"]
    assert result["status"] == "succeeded" and result["prediction"]["model"] == MODEL_REF


def test_screen_retries_after_429_without_a_second_job(service: Service, folder: Path) -> None:
    with FlakyProxy(service, "/screenings", 429) as proxy, client_for(service, proxy.url, poll=0.2) as client:
        rows = client.screen(folder, name="retried")
        listed = client.transport.request("GET", "/jobs", params={"limit": 500}).json()["data"]
    first, second = proxy.attempts
    assert first["key"] == second["key"] and second["at"] - first["at"] >= 1.0
    assert first["upstream"]["job_id"] == second["upstream"]["job_id"] == rows.job["id"]
    assert [j["id"] for j in listed if j.get("name") == "retried"] == [rows.job["id"]]
    _check_ranked(rows, 9, 1)


def test_a_failed_job_in_a_retried_answer_gets_a_new_key(service: Service) -> None:
    # a 503 naming a job that failed inside the service: the old key would only return that failed job
    cif = variant(CIF_DIR / "BUKRUW01_clean.cif", "rotate")
    body = {"detail": "the database is unavailable (simulated)", "job_id": "an-earlier-failed-job"}
    with FlakyProxy(service, "/predict", 503, retry_after="0", body=body) as proxy, \
            client_for(service, proxy.url) as client:
        client.predict(cif)
    first, second = proxy.attempts
    assert first["key"] and second["key"] and first["key"] != second["key"]


def test_no_answer_is_retried_then_raised(tmp_path: Path) -> None:
    from retnet_client import RetNetError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    with client_for(Service(f"http://127.0.0.1:{port}", ""), retries=2, backoff=0.2) as client, \
            pytest.raises(RetNetError) as unreachable:
        client.status("x")
    assert unreachable.value.status_code is None and "cannot reach" in str(unreachable.value)
    assert "3 attempt(s)" in str(unreachable.value)
    assert time.monotonic() - started >= 0.1 + 0.2  # two backoffs, each at least half its ceiling (0.2, 0.4)
    with client_for(Service(f"http://127.0.0.1:{port}", ""), retries=0) as client, \
            pytest.raises(RetNetError) as once:
        client.status("x")
    assert "1 attempt(s)" in str(once.value) and f"127.0.0.1:{port}" in str(once.value)
