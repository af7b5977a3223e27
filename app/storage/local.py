"""Local-folder object store (embedded default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

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

    def put_file(self, key: str, fileobj: BinaryIO) -> None:
        """Write a file object atomically, copied in chunks (never whole in memory)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(fileobj, fh, 1024 * 1024)
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

    def list_with_times(self, prefix: str) -> list[tuple[str, datetime]]:
        """``(key, file mtime in UTC)`` under ``prefix``, walking only the folder the prefix names."""
        folder = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return []
        found = []
        for path in folder.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not path.name.startswith(".tmp-"):
                try:
                    if path.is_file():
                        found.append((key, datetime.fromtimestamp(path.stat().st_mtime, UTC)))
                except FileNotFoundError:  # removed while walking
                    continue
        return sorted(found)

    def ping(self) -> None:
        """The root must be a folder where a file can be written and removed (a real write, not a permission
        check: root passes those, and an unmounted volume can look writable)."""
        if not self.root.is_dir():
            raise OSError(f"storage folder {self.root} is missing or not a folder")
        fd, probe = tempfile.mkstemp(dir=self.root, prefix=".tmp-ping-")
        os.close(fd)
        os.unlink(probe)
