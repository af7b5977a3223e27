"""Local-folder object store (embedded default)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from app.storage import ObjectNotFoundError, validate_key


class LocalStore:
    """Objects are files under ``root``; writes go to a temp file and are renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put(self, key: str, data: bytes) -> None:
        """Write atomically (temp file + rename)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        """Read an object."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(key) from exc

    def exists(self, key: str) -> bool:
        """True when the file exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the file if present."""
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``."""
        keys = []
        for path in self.root.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def ping(self) -> None:
        """The root must be a folder where a file can be written and removed (a real write, not a permission
        check: root passes those, and an unmounted volume can look writable)."""
        if not self.root.is_dir():
            raise OSError(f"storage folder {self.root} is missing or not a folder")
        fd, probe = tempfile.mkstemp(dir=self.root, prefix=".tmp-ping-")
        os.close(fd)
        os.unlink(probe)
