"""CIF parsing with a per-structure time limit, safe in prefork children and in the embedded threads pool.

CoRE MOF-style P1 files go through the fast reader in the worker itself (milliseconds) when they are at most
:data:`FAST_INPROCESS_MAX_BYTES`. Everything else (pymatgen's ``CifParser`` for symmetry operations, partial
occupancies, unusual tags; any bigger file) is parsed in a helper process that is killed when the parse passes
``pipeline.parse_timeout_s``: the structure then fails its item with :class:`ParseTimeoutError`.

The helper is a plain ``subprocess`` running this module (``python -m worker.parsing``), not ``multiprocessing``:
Celery's prefork children are daemonic and may not start multiprocessing children. Each worker thread takes a
helper from a small per-process pool and gives it back, so the helper's start (Python + pymatgen import, about
a second, not counted against the limit) is paid once per thread, not once per structure. Requests and replies
are pickles framed by an 8-byte length over the helper's stdin/stdout; a helper whose parent dies reads EOF and
exits.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from models.errors import StructureError

log = logging.getLogger(__name__)

#: Files up to this size (bytes) try the fast P1 reader in the worker process itself.
FAST_INPROCESS_MAX_BYTES = 2 * 1024 * 1024
#: Seconds a new helper may take to start (Python + pymatgen import); not part of the parse time limit.
HELPER_START_TIMEOUT_S = 120.0
_HEADER = struct.Struct(">Q")
_READY = b"R"
_ROOT = Path(__file__).resolve().parents[1]


class ParseTimeoutError(StructureError):
    """Reading one CIF took longer than ``pipeline.parse_timeout_s``."""


class ParserCrashedError(StructureError):
    """The helper process died while reading the CIF (killed for memory, a crash in a native library)."""


class _HelperGone(Exception):
    """The helper's pipe broke before it took the request (an idle helper that died): try a fresh one."""


def parse_limited(data: bytes, name: str, timeout_s: float) -> Any:
    """Parse CIF bytes into a validated ``Crystal`` within ``timeout_s`` seconds (raises ``StructureError``).

    The same result and errors as :func:`models.structure.parse_cif`, plus :class:`ParseTimeoutError` and
    :class:`ParserCrashedError`.
    """
    from models.structure import parse_cif_fast

    fast_tried = False
    if len(data) <= FAST_INPROCESS_MAX_BYTES:
        crystal = parse_cif_fast(data, name)
        if crystal is not None:
            return crystal
        fast_tried = True
    return _POOL.parse(data, name, timeout_s, fast=not fast_tried)


def _timeout_message(name: str, timeout_s: float) -> str:
    return (f"{name}: reading this CIF took longer than the limit of {timeout_s:g} s "
            "(RETNET_PIPELINE__PARSE_TIMEOUT_S); the structure was not read")


class _Helper:
    """One helper process (``python -m worker.parsing``) and its framed pipe protocol."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "worker.parsing"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0, env=env, close_fds=True)
        self.pid = os.getpid()
        try:
            greeting = self._read(1, time.monotonic() + HELPER_START_TIMEOUT_S)
        except (TimeoutError, EOFError) as exc:
            self.kill()
            raise RuntimeError(f"the CIF parser helper process did not start within {HELPER_START_TIMEOUT_S:g} s "
                               f"({type(exc).__name__}); see the worker log") from None
        except BaseException:
            self.kill()
            raise
        if greeting != _READY:
            self.kill()
            raise RuntimeError("the CIF parser helper process sent an unexpected greeting")

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill and reap the process (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover  (SIGKILL is not ignorable)
            log.warning("CIF parser helper %s did not exit after SIGKILL", self.proc.pid)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def _read(self, n: int, deadline: float) -> bytes:
        """Exactly ``n`` bytes from the helper before ``deadline`` (monotonic s); TimeoutError, EOFError."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
            if time.monotonic() > deadline:  # descheduled in select: a reply seen after the deadline is late
                raise TimeoutError
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
        return bytes(buf)

    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        fd, view = self.proc.stdin.fileno(), memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _HelperGone from exc

    def request(self, data: bytes, name: str, fast: bool, timeout_s: float) -> Any:
        """Parse in the helper; the reply's crystal, or its structure error raised here."""
        payload = pickle.dumps((data, name, fast), protocol=pickle.HIGHEST_PROTOCOL)
        self._write(_HEADER.pack(len(payload)) + payload)
        deadline = time.monotonic() + timeout_s
        try:
            (size,) = _HEADER.unpack(self._read(_HEADER.size, deadline))
            reply = pickle.loads(self._read(size, deadline))
        except TimeoutError:
            raise ParseTimeoutError(_timeout_message(name, timeout_s)) from None
        except EOFError:
            code = self.proc.wait(timeout=5)
            raise ParserCrashedError(f"{name}: the CIF parser process died while reading this CIF (exit status "
                                     f"{code}); the structure was not read") from None
        if reply[0] == "ok":
            return reply[1]
        raise _rebuild_error(*reply[1:])


def _rebuild_error(module: str, qualname: str, message: str) -> StructureError:
    """The helper's structure error as the same class (its message as the only argument)."""
    try:
        cls: Any = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        cls = StructureError
    if not (isinstance(cls, type) and issubclass(cls, StructureError)):
        cls = StructureError
    exc = cls.__new__(cls)
    StructureError.__init__(exc, message)
    return exc


class _HelperPool:
    """Idle helpers of this process; a thread takes one per parse (so concurrent parses never wait on each
    other) and gives it back unless it was killed. Helpers inherited through ``fork`` belong to the parent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Helper] = []
        self._pid = os.getpid()

    def _take(self) -> _Helper:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's helpers are not ours to use or kill
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                helper = self._idle.pop()
                if helper.alive():
                    return helper
                helper.kill()
        return _Helper()

    def _give(self, helper: _Helper) -> None:
        with self._lock:
            if helper.pid == os.getpid() and helper.alive():
                self._idle.append(helper)
                return
        helper.kill()

    def parse(self, data: bytes, name: str, timeout_s: float, *, fast: bool = True) -> Any:
        """Parse in a helper within ``timeout_s`` s; a helper that timed out, crashed or was interrupted (a
        Celery soft time limit) is killed, never reused."""
        for attempt in (1, 2):
            helper = self._take()
            clean = False
            try:
                result = helper.request(data, name, fast, timeout_s)
                clean = True
                return result
            except _HelperGone:
                if attempt == 2:
                    raise RuntimeError("the CIF parser helper process exits at once; see the worker log") from None
            except StructureError as exc:  # the helper's answer about this structure: the helper is still good
                clean = not isinstance(exc, ParseTimeoutError | ParserCrashedError)
                raise
            finally:
                if clean:
                    self._give(helper)
                else:
                    helper.kill()
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Kill this process's idle helpers (at exit)."""
        with self._lock:
            helpers, self._idle = (self._idle, []) if self._pid == os.getpid() else ([], [])
        for helper in helpers:
            helper.kill()


_POOL = _HelperPool()
atexit.register(_POOL.close)


# --- the helper process ----------------------------------------------------------------------------------------------

def _read_exact(stream: Any, n: int) -> bytes | None:
    """``n`` bytes from a binary stream, None at EOF."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _parse_reply(data: bytes, name: str, fast: bool) -> tuple[Any, ...]:
    from models.structure import parse_cif

    try:
        return ("ok", parse_cif(data, name=name, fast=fast))
    except StructureError as exc:
        return ("error", type(exc).__module__, type(exc).__qualname__, str(exc))
    except Exception as exc:  # noqa: BLE001  (whatever a hostile file makes a parser raise fails that file)
        return ("error", "models.errors", "InvalidCIFError", f"{name}: cannot read this CIF ({type(exc).__name__})")


def serve() -> None:
    """The helper's loop: preload pymatgen, greet, then answer framed requests until stdin closes."""
    import warnings

    import pymatgen.io.cif  # noqa: F401  (imported before the greeting: the time limit measures parsing only)

    warnings.simplefilter("ignore")  # numpy overflow warnings on hostile numbers: the reply says what is wrong

    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # the protocol owns stdout; stray prints go to the log
    out.write(_READY)
    out.flush()
    while (header := _read_exact(inp, _HEADER.size)) is not None:
        request = _read_exact(inp, _HEADER.unpack(header)[0])
        if request is None:
            return
        data, name, fast = pickle.loads(request)
        reply = pickle.dumps(_parse_reply(data, name, fast), protocol=pickle.HIGHEST_PROTOCOL)
        out.write(_HEADER.pack(len(reply)) + reply)
        out.flush()


if __name__ == "__main__":
    serve()
