"""Real processes to break on purpose: a private Redis, a private PostgreSQL cluster, a storage outage.

Nothing here touches the machine's shared Redis (6379) or PostgreSQL (5432): each fault test gets its own
server on a free port, so it can be killed and restarted without disturbing the other tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, *, up: bool, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            is_up = s.connect_ex(("127.0.0.1", port)) == 0
        if is_up == up:
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not {'up' if up else 'down'} after {timeout} s")


class RedisServer:
    """``redis-server`` on a private port, without persistence (a restart loses every queued message)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Broker URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen([exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        """SIGKILL (an abrupt crash) and wait until the port is closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        _wait_port(self.port, up=False)


class PostgresCluster:
    """A throw-away PostgreSQL cluster (initdb) on a private port, run as the ``postgres`` user when root."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="retnet-pg-"))
        self.data = self.root / "data"
        self._bin = self._find_bin()

    @staticmethod
    def _find_bin() -> Path:
        pg_ctl = shutil.which("pg_ctl")
        if pg_ctl is not None:
            return Path(os.path.realpath(pg_ctl)).parent
        for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (candidate / "pg_ctl").exists():
                return candidate
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")

    def _run(self, *args: str) -> None:
        cmd = [str(self._bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``retnet`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/retnet"

    def init(self) -> None:
        """initdb (trust auth) and create the ``retnet`` database."""
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "retnet")

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")
        _wait_port(self.port, up=True)

    def stop(self, mode: str = "immediate") -> None:
        """Stop (``immediate``: like a crash, every connection dropped)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        _wait_port(self.port, up=False)

    def destroy(self) -> None:
        """Stop if running and delete the cluster."""
        try:
            self.stop()
        except (subprocess.CalledProcessError, TimeoutError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class StorageOutage:
    """The local store's folder disappears and a plain file stands in its place (an unmounted, unreadable
    volume): every read and write raises ``OSError`` (``NotADirectoryError``) until :meth:`end`.

    Works as root too, where permission bits would not stop anything.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.away = root.with_name(root.name + ".away")

    def begin(self) -> None:
        """Take the volume away."""
        os.replace(self.root, self.away)
        self.root.write_bytes(b"storage volume unavailable\n")

    def end(self) -> None:
        """Put it back."""
        self.root.unlink()
        os.replace(self.away, self.root)
