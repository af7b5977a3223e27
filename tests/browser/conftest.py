"""Browser tests: a real ``retnet serve`` process (embedded mode) and a real headless Chromium driven by Selenium.

The browser is Debian's ``chromium`` with ``chromium-driver`` (``/usr/bin/chromium``, ``/usr/bin/chromedriver``;
``.ci/run`` installs them); nothing downloads a browser of its own. Without them the tests skip locally and fail
in CI / with ``RETNET_TEST_REQUIRE_SERVICES=1``. Screenshots go to ``$RETNET_SCREENSHOTS_DIR``
(default ``build/screenshots``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import strict_environment
from tests.integration.helpers import REPO, make_test_model

CHROMIUM = Path(os.environ.get("RETNET_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("RETNET_CHROMEDRIVER", "/usr/bin/chromedriver"))
#: Browser window (CSS px): wide enough for the results table without a horizontal scroll bar.
WINDOW = (1366, 900)


def _unavailable(message: str) -> None:
    if strict_environment():
        pytest.fail(f"{message} (required because CI / RETNET_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    """Where the tests save a PNG of each page they saw."""
    folder = Path(os.environ.get("RETNET_SCREENSHOTS_DIR") or REPO / "build" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``python -m app.cli serve`` on a free port with its own data folder (SQLite, local store, workers inside),
    started at once; :meth:`wait_ready` waits for it."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "serve.log"
        # only the settings given here: a developer's RETNET_* (a Postgres URL, a broker) must not leak in
        clean = {k: v for k, v in os.environ.items() if not k.startswith("RETNET_")}
        clean.update({"RETNET_DEVICE": "cpu", "RETNET_EMBEDDED_CONCURRENCY": "2", "RETNET_METRICS_CACHE_S": "0"})
        clean.update(env or {})
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            cwd=REPO, env=clean, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait for GET /health to answer 200 (database migrated, models registered, workers started)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"retnet serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"retnet serve not ready after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def register(srv: Server, model: Path, keys: tuple[str, ...] = ()) -> dict[str, str]:
    """Register the model folder ``model`` in a running server's data folder (its registry is read per request) and
    create API keys named ``keys``; returns ``{key name: secret}``."""
    from app.core.config import Settings
    from app.db.session import dispose_all, session_scope
    from app.services.keys import create_key
    from app.services.registry import register_model_dir
    from app.storage import store_from_uri

    settings = Settings(data_dir=srv.data_dir)
    try:
        with session_scope(settings.db_url) as session:
            register_model_dir(session, store_from_uri(settings.store_uri), model)
            return {name: create_key(session, name) for name in keys}
    finally:
        dispose_all()


@pytest.fixture(scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Server, dict[str, str]]]]:
    """Both servers, started together (their start-ups overlap each other and the test model's making): the
    default one and one that requires keys, each with the small untrained test model
    (tests/integration/helpers.py) registered once it is up, as a user would with ``retnet serve``."""
    servers: list[Server] = []
    try:
        servers.append(Server(tmp_path_factory.mktemp("browser") / "data"))
        servers.append(Server(tmp_path_factory.mktemp("browser-keys") / "data",
                              {"RETNET_AUTH__REQUIRED": "true", "RETNET_REGISTER_SHIPPED_MODEL": "false"}))
        model = make_test_model(tmp_path_factory.mktemp("browser-model") / "test-retnet")
        prepared = {}
        for name, srv, keys in (("open", servers[0], ()), ("keys", servers[1], ("chemist",))):
            srv.wait_ready()
            prepared[name] = (srv, register(srv, model, keys))
        yield prepared
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture(scope="session")
def server(_servers: dict[str, tuple[Server, dict[str, str]]]) -> Server:
    """The service as a user starts it (embedded, keys not required, the shipped models registered)."""
    return _servers["open"][0]


@pytest.fixture(scope="session")
def key_server(_servers: dict[str, tuple[Server, dict[str, str]]]) -> tuple[Server, str]:
    """A service that requires API keys (RETNET_AUTH__REQUIRED=true) and the secret of its key 'chemist'."""
    srv, secrets = _servers["keys"]
    return srv, secrets["chemist"]


@pytest.fixture(scope="session")
def browser(optional_module) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """Headless Debian Chromium under chromedriver (one browser for the session)."""
    webdriver = optional_module("selenium.webdriver", "selenium (the browser tests' driver)")
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        _unavailable(f"Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): apt-get install -y chromium "
                     "chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", "--lang=en-US", "--no-first-run",
                 "--disable-extensions", "--disable-background-networking"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def save_screenshot(driver: Any, path: Path, max_height: int = 3000) -> Path:
    """A PNG of the whole page from the top (Chrome DevTools' capture beyond the viewport), at most
    ``max_height`` CSS px tall."""
    import base64

    driver.execute_script("window.scrollTo(0, 0)")
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                             "clip": clip})
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@pytest.fixture()
def screenshot(browser, screenshots_dir: Path):  # type: ignore[no-untyped-def]
    """``screenshot("dashboard")`` saves ``<screenshots_dir>/dashboard.png``."""
    def take(name: str) -> Path:
        return save_screenshot(browser, screenshots_dir / f"{name}.png")

    return take
