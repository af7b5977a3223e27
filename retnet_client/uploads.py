"""What a submission uploads: CIFs gathered from files, folders and zips, packed into multipart parts.

``POST /screenings`` takes CIF files and/or zips of CIFs in its ``files`` field. Up to :data:`LOOSE_MAX_FILES`
CIFs (and :data:`LOOSE_MAX_BYTES` in all) go as separate parts; a larger batch is zipped (deflate) into one
part, in memory up to :data:`SPOOL_BYTES` and in a temporary file beyond, so the request stays far below
Starlette's 1000 parts per form. The service's own limits (20 MB per CIF, 500 MB per zip, 20,000 structures
per request: ``RETNET_UPLOAD__*``) are checked by the service, which names the limit in its 413.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: Separate CIF parts at most; more are zipped into one part.
LOOSE_MAX_FILES = 100
#: Bytes of separate CIF parts at most (summed); more are zipped into one part.
LOOSE_MAX_BYTES = 32 * 1024 * 1024
#: The in-memory zip moves to a temporary file beyond this many bytes.
SPOOL_BYTES = 64 * 1024 * 1024
#: Multipart parts per request at most (Starlette refuses more than 1000 files in one form).
MAX_PARTS = 1000
#: Name of the zip the client builds.
BATCH_ZIP_NAME = "structures.zip"

Source = str | os.PathLike[str] | tuple[str, bytes]


@dataclass(frozen=True)
class CifSource:
    """One CIF: a file on disk, or bytes with a name."""

    name: str
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        """The file's bytes."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def size(self) -> int:
        """Bytes of the file."""
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        return self.path.stat().st_size


def _hidden(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def gather(sources: Source | Iterable[Source]) -> tuple[list[CifSource], list[Path]]:
    """CIFs and zips named by ``sources``: files, folders (searched recursively for ``*.cif`` and ``*.zip``,
    hidden files skipped) and ``(name, bytes)`` pairs. Any file named explicitly that is not a ``.zip`` is sent
    as a CIF (the service reports a non-CIF as that item's error). Raises FileNotFoundError, ValueError (empty)."""
    if isinstance(sources, str | os.PathLike) or (isinstance(sources, tuple) and len(sources) == 2
                                                  and isinstance(sources[1], bytes | bytearray)):
        sources = [sources]  # type: ignore[list-item]
    cifs: list[CifSource] = []
    zips: list[Path] = []
    for source in sources:  # type: ignore[union-attr]
        if isinstance(source, tuple):
            name, data = source
            cifs.append(CifSource(name=str(name), data=bytes(data)))
            continue
        path = Path(source)
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if not p.is_file() or _hidden(p, path):
                    continue
                suffix = p.suffix.lower()
                if suffix == ".zip":
                    zips.append(p)
                elif suffix == ".cif":
                    cifs.append(CifSource(name=p.name, path=p))
        elif path.is_file():
            if path.suffix.lower() == ".zip":
                zips.append(path)
            else:
                cifs.append(CifSource(name=path.name, path=path))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    if not cifs and not zips:
        raise ValueError("no CIF or zip files to send (a folder is searched for *.cif and *.zip)")
    return cifs, zips


@dataclass
class Part:
    """One multipart file of the ``files`` field."""

    filename: str
    content: bytes | IO[bytes]
    content_type: str

    def rewound(self) -> bytes | IO[bytes]:
        """The content, a file object rewound to its start (every attempt sends the same bytes)."""
        if not isinstance(self.content, bytes):
            self.content.seek(0)
        return self.content


@dataclass
class Batch:
    """The parts of one submission; ``zipped`` tells whether the client zipped the CIFs itself."""

    parts: list[Part]
    n_cifs: int
    n_zips: int
    zipped: bool = False
    _open: list[IO[bytes]] = field(default_factory=list, repr=False)

    def files(self, field_name: str = "files") -> list[tuple[str, tuple[str, Any, str]]]:
        """httpx ``files=`` for one attempt."""
        return [(field_name, (p.filename, p.rewound(), p.content_type)) for p in self.parts]

    def close(self) -> None:
        """Close the files opened for the parts."""
        for fh in self._open:
            fh.close()
        self._open.clear()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unique_names(cifs: list[CifSource]) -> list[str]:
    """Member names for a zip: each CIF's name, with ``<k>/`` in front of a repeated one (the service keeps only
    the last path component, so every structure keeps its file name)."""
    seen: dict[str, int] = {}
    names = []
    for c in cifs:
        k = seen.get(c.name, 0)
        seen[c.name] = k + 1
        names.append(c.name if k == 0 else f"{k}/{c.name}")
    return names


def zip_cifs(cifs: list[CifSource]) -> IO[bytes]:
    """One deflated zip of ``cifs`` (in memory up to :data:`SPOOL_BYTES`, then a temporary file), rewound."""
    fh: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (closed by Batch)
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for name, cif in zip(unique_names(cifs), cifs, strict=True):
            archive.writestr(name, cif.read())
    fh.seek(0)
    return fh


def pack(cifs: list[CifSource], zips: list[Path], *, loose_max_files: int = LOOSE_MAX_FILES,
         loose_max_bytes: int = LOOSE_MAX_BYTES) -> Batch:
    """The parts of a screening: each zip as it is, then the CIFs as separate parts or, when there are more
    than ``loose_max_files`` of them or more than ``loose_max_bytes`` in all, as one zip built here."""
    batch = Batch(parts=[], n_cifs=len(cifs), n_zips=len(zips))
    try:
        for z in zips:
            fh = z.open("rb")
            batch._open.append(fh)
            batch.parts.append(Part(z.name, fh, "application/zip"))
        if cifs:
            if len(cifs) > loose_max_files or sum(c.size() for c in cifs) > loose_max_bytes:
                fh = zip_cifs(cifs)
                batch._open.append(fh)
                batch.parts.append(Part(BATCH_ZIP_NAME, fh, "application/zip"))
                batch.zipped = True
            else:
                batch.parts += [Part(c.name, c.read(), "chemical/x-cif") for c in cifs]
        if len(batch.parts) > MAX_PARTS:
            raise ValueError(f"{len(batch.parts)} zips in one screening; the service reads at most {MAX_PARTS} files "
                             "per request: merge them into fewer zips")
    except BaseException:
        batch.close()
        raise
    return batch
