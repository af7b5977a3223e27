"""Upload checks: size limits while reading, zip safety (paths, bombs), CIF selection."""

from __future__ import annotations

import io
import posixpath
import stat
import zipfile
from dataclasses import dataclass

from fastapi import UploadFile

from app.core.config import Settings
from app.services.errors import BadRequestError, PayloadTooLargeError, UnprocessableError

CHUNK = 1024 * 1024


def human(n: int) -> str:
    """Bytes in MB with one decimal."""
    return f"{n / (1024 * 1024):.1f} MB"


async def read_limited(upload: UploadFile, limit: int, *, what: str = "file", allow_empty: bool = False) -> bytes:
    """Read an upload, refusing it with 413 as soon as it exceeds ``limit`` bytes and with 400 when empty.

    ``allow_empty`` returns ``b""`` instead (a screening fails that one item, as it does for an empty zip member).
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(
                f"{what} '{upload.filename}' is larger than the limit of {human(limit)} ({limit} bytes)"
            )
        chunks.append(chunk)
    if size == 0 and not allow_empty:
        raise BadRequestError(f"{what} '{upload.filename or 'upload'}' is empty")
    return b"".join(chunks)


def is_zip_name(filename: str | None) -> bool:
    """True for a ``.zip`` file name."""
    return bool(filename) and str(filename).lower().endswith(".zip")


@dataclass(frozen=True)
class ZipMember:
    """One file of an uploaded zip."""

    name: str
    data: bytes


def _safe_member_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BadRequestError(f"unsafe zip entry '{name}': symbolic links are not allowed")
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BadRequestError(f"unsafe path in zip: '{name}' (absolute paths are not allowed)")
    parts = name.split("/")
    if ".." in parts:
        raise BadRequestError(f"unsafe path in zip: '{name}' ('..' components are not allowed)")
    return posixpath.normpath(name)


def read_zip(data: bytes, settings: Settings, *, suffixes: tuple[str, ...] = (".cif",)) -> dict[str, list[ZipMember]]:
    """Open a zip upload safely; return its members grouped by suffix (``{".cif": [...], ".csv": [...]}``).

    Raises 400 for a corrupt zip or unsafe entries (absolute, ``..``, symlinks) and 413 when the
    uncompressed size exceeds the limit. Hidden files and ``__MACOSX`` folders are skipped.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BadRequestError(f"the upload is not a valid zip archive ({exc})") from exc
    limits = settings.upload
    infos = [i for i in archive.infolist() if not i.is_dir()]
    for info in infos:
        _safe_member_name(info)
    if len(infos) > limits.max_files:
        raise PayloadTooLargeError(f"the zip holds {len(infos)} files; the limit is {limits.max_files}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_unzipped_bytes:
        raise PayloadTooLargeError(
            f"the zip expands to {human(total)}; the limit is {human(limits.max_unzipped_bytes)}"
        )
    grouped: dict[str, list[ZipMember]] = {s: [] for s in suffixes}
    for info in infos:
        name = _safe_member_name(info)
        base = posixpath.basename(name)
        if base.startswith(".") or name.startswith("__MACOSX/"):
            continue
        suffix = next((s for s in suffixes if base.lower().endswith(s)), None)
        if suffix is None:
            continue
        if info.file_size > limits.max_cif_bytes and suffix == ".cif":
            raise PayloadTooLargeError(
                f"'{name}' in the zip is larger than the per-CIF limit of {human(limits.max_cif_bytes)}"
            )
        try:
            content = archive.read(info)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:  # corrupt or encrypted member
            raise BadRequestError(f"cannot read '{name}' from the zip ({exc})") from exc
        grouped[suffix].append(ZipMember(name=base, data=content))
    return grouped


def cifs_from_zip(data: bytes, settings: Settings) -> list[ZipMember]:
    """The CIF members of a zip; 422 when there are none."""
    cifs = read_zip(data, settings)[".cif"]
    if not cifs:
        raise UnprocessableError("the zip holds no .cif files")
    return cifs


def stem(filename: str) -> str:
    """File name without folder and extension."""
    base = posixpath.basename(filename.replace("\\", "/"))
    return base.rsplit(".", 1)[0] if "." in base else base
