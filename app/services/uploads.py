"""Upload checks: safe file names, size limits while reading, zip safety (paths, bombs), members stored one by one.

A zip is read from the file Starlette spooled to disk, never as one ``bytes``: its central directory is checked
first (entry count, per-member and total sizes, compression ratios, methods, paths), then each member is
decompressed on its own with the real bytes counted against the same limits (headers can lie), and in a
screening stored at once, so a screening of 20,000 CIFs holds one member in memory at a time.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from fastapi import UploadFile

from app.core.config import Settings, UploadSettings
from app.services.errors import BadRequestError, PayloadTooLargeError, UnprocessableError
from app.storage import ObjectStore, put_fileobj, raw_key

#: Bytes read (or decompressed) per step.
CHUNK = 1024 * 1024
#: File names longer than this (characters) are shortened before they reach the database (columns of 300).
MAX_NAME_CHARS = 255
#: Characters of a too-long name kept in front of ``…<sha8>.<ext>``.
NAME_KEEP_CHARS = 200
#: Compression methods a zip member may use. bzip2/lzma decompress without an output bound in ``zipfile``.
ALLOWED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
#: Errors of a corrupt, truncated or encrypted member while it is decompressed.
MEMBER_READ_ERRORS = (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError, ValueError)


def human(n: int) -> str:
    """Bytes in MB with one decimal (in bytes below 0.1 MB)."""
    return f"{n / (1024 * 1024):.1f} MB" if n >= 104858 else f"{n} bytes"


def _limit(n: int) -> str:
    """A byte limit for messages: MB and exact bytes."""
    return f"{human(n)} ({n} bytes)" if n >= 104858 else f"{n} bytes"


# --- names ---------------------------------------------------------------------------------------------------------

def _extension(name: str) -> str:
    """The name's extension with its dot (``.cif``), or ``""`` when it has none or an implausible one."""
    if "." not in name:
        return ""
    ext = name.rsplit(".", 1)[1]
    return f".{ext}" if 0 < len(ext) <= 10 and ext.isalnum() else ""


def safe_filename(name: str | None, default: str = "structure.cif") -> str:
    """A file name that is safe to store and show: no folders, no control characters, at most 255 characters.

    Path separators (``/``, ``\\``) keep only the last component; control and format characters (C* Unicode
    categories: NUL, newlines, bidi overrides, zero-width characters) are removed. A name longer than
    :data:`MAX_NAME_CHARS` becomes its first :data:`NAME_KEEP_CHARS` characters + ``…`` + the first 8 hex digits
    of the full name's sha256 + its extension, so distinct long names stay distinct. Empty results → ``default``.
    """
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if not unicodedata.category(c).startswith("C")).strip()
    if not base.strip("."):
        return default
    if len(base) <= MAX_NAME_CHARS:
        return base
    ext = _extension(base)
    digest = hashlib.sha256(base.encode("utf-8", errors="replace")).hexdigest()[:8]
    return f"{base[:len(base) - len(ext)][:NAME_KEEP_CHARS]}…{digest}{ext}"


def is_zip_name(filename: str | None) -> bool:
    """True for a ``.zip`` file name."""
    return bool(filename) and str(filename).lower().endswith(".zip")


def stem(filename: str) -> str:
    """File name without folder and extension."""
    base = posixpath.basename(filename.replace("\\", "/"))
    return base.rsplit(".", 1)[0] if "." in base else base


# --- whole uploads ---------------------------------------------------------------------------------------------------

async def read_limited(upload: UploadFile, limit: int, *, what: str = "file", allow_empty: bool = False) -> bytes:
    """Read an upload, refusing it with 413 as soon as it exceeds ``limit`` bytes and with 400 when empty.

    ``allow_empty`` returns ``b""`` instead (a screening fails that one item, as it does for an empty zip member).
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"{what} '{upload.filename}' is larger than the limit of {_limit(limit)}")
        chunks.append(chunk)
    if size == 0 and not allow_empty:
        raise BadRequestError(f"{what} '{upload.filename or 'upload'}' is empty")
    return b"".join(chunks)


def spooled_file(upload: UploadFile, limit: int, *, what: str = "zip", allow_empty: bool = False) -> BinaryIO:
    """The upload's spooled file, rewound, after checking its size (413 over ``limit`` bytes, 400 when empty
    unless ``allow_empty``). Starlette keeps files above 1 MB on disk: nothing is read into memory here."""
    fh = upload.file
    fh.seek(0, io.SEEK_END)
    size = fh.tell()
    fh.seek(0)
    if size > limit:
        raise PayloadTooLargeError(f"{what} '{upload.filename}' is larger than the limit of {_limit(limit)}")
    if size == 0 and not allow_empty:
        raise BadRequestError(f"{what} '{upload.filename or 'upload'}' is empty")
    return fh  # type: ignore[return-value]


@dataclass(frozen=True)
class StoredUpload:
    """A file already in object storage (content-addressed), as a screening item references it."""

    filename: str
    key: str
    sha256: str
    size: int


def store_upload(store: ObjectStore, filename: str, data: bytes) -> StoredUpload:
    """Store ``data`` under its content-addressed key (once) and describe it."""
    sha = hashlib.sha256(data).hexdigest()
    key = raw_key(sha, filename)
    if not store.exists(key):
        store.put(key, data)
    return StoredUpload(filename=filename, key=key, sha256=sha, size=len(data))


@dataclass(frozen=True)
class FileUpload:
    """A received file left in its spooled temporary file (a training zip), never read whole into memory."""

    filename: str
    file: BinaryIO
    sha256: str
    size: int


def file_upload(fh: BinaryIO, filename: str) -> FileUpload:
    """Describe a spooled upload: its sha256 and size, read in chunks of :data:`CHUNK` bytes (then rewound)."""
    digest = hashlib.sha256()
    fh.seek(0)
    size = 0
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    fh.seek(0)
    return FileUpload(filename=filename, file=fh, sha256=digest.hexdigest(), size=size)


def store_file(store: ObjectStore, upload: FileUpload) -> str:
    """Store a spooled upload under its content-addressed key (once), streamed; the key."""
    key = raw_key(upload.sha256, upload.filename)
    if not store.exists(key):
        upload.file.seek(0)
        put_fileobj(store, key, upload.file)
    return key


def store_spooled(store: ObjectStore, fh: BinaryIO, filename: str) -> StoredUpload:
    """Hash and store a spooled upload in chunks (one screening file); describe it."""
    upload = file_upload(fh, filename)
    return StoredUpload(filename=filename, key=store_file(store, upload), sha256=upload.sha256, size=upload.size)


# --- zips ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZipMember:
    """One file of an uploaded zip."""

    name: str
    data: bytes


@dataclass
class MemberBudget:
    """Running totals of one request against its limits: structures accepted and bytes expanded from zips."""

    limits: UploadSettings
    files: int = 0
    expanded: int = 0

    def add_files(self, n: int = 1) -> None:
        """Count ``n`` more structures; 413 when that passes ``max_files``."""
        if self.files + n > self.limits.max_files:
            raise PayloadTooLargeError(f"{self.files + n} structures in one request; the limit is "
                                       f"{self.limits.max_files} (RETNET_UPLOAD__MAX_FILES)")
        self.files += n

    def check_expanded(self, extra: int) -> None:
        """413 when ``extra`` more expanded bytes pass ``max_unzipped_bytes``."""
        if self.expanded + extra > self.limits.max_unzipped_bytes:
            raise PayloadTooLargeError(
                f"the zip expands to at least {self.expanded + extra} bytes; the limit is "
                f"{_limit(self.limits.max_unzipped_bytes)} of uncompressed data (RETNET_UPLOAD__MAX_UNZIPPED_BYTES)")


def _safe_member_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise BadRequestError(f"unsafe zip entry '{safe_filename(name)}': symbolic links are not allowed")
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BadRequestError(f"unsafe path in zip: '{safe_filename(name)}' (absolute paths are not allowed)")
    parts = name.split("/")
    if ".." in parts:
        raise BadRequestError(f"unsafe path in zip: '{safe_filename(name)}' ('..' components are not allowed)")
    return posixpath.normpath(name)


def _entry_count(fileobj: BinaryIO) -> int | None:
    """Entries the zip's end-of-central-directory record declares, read before ``zipfile`` builds one object per
    entry (a crafted central directory of millions of empty entries would cost gigabytes); None if unreadable."""
    try:
        end = zipfile._EndRecData(fileobj)  # type: ignore[attr-defined]  # private, stable since Python 2
    except (OSError, AttributeError):
        return None
    finally:
        fileobj.seek(0)
    return None if not end else int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]


def open_zip(source: bytes | BinaryIO, limits: UploadSettings) -> zipfile.ZipFile:
    """Open a zip (bytes or a seekable file); 400 when corrupt, 413 when it declares too many entries.

    At most 2 × ``max_files`` entries (folders and non-CIF files included) are read from the central directory.
    """
    fileobj: BinaryIO = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    fileobj.seek(0)
    cap = 2 * limits.max_files
    declared = _entry_count(fileobj)
    if declared is not None and declared > cap:
        raise PayloadTooLargeError(f"the zip holds {declared} entries; at most {cap} are read (twice the limit of "
                                   f"{limits.max_files} structures, RETNET_UPLOAD__MAX_FILES)")
    try:
        return zipfile.ZipFile(fileobj)
    except (zipfile.BadZipFile, zlib.error, ValueError, EOFError) as exc:
        raise BadRequestError(f"the upload is not a valid zip archive ({exc})") from exc


def _select(infos: list[zipfile.ZipInfo], suffixes: tuple[str, ...]) -> list[tuple[zipfile.ZipInfo, str, str]]:
    """The members to read as (info, safe base name, suffix): every path checked, folders, hidden files,
    ``__MACOSX`` and other suffixes skipped."""
    selected = []
    for info in infos:
        if info.is_dir():
            continue
        name = _safe_member_name(info)
        base = posixpath.basename(name)
        if base.startswith(".") or name.startswith("__MACOSX/"):
            continue
        suffix = next((s for s in suffixes if base.lower().endswith(s)), None)
        if suffix is not None:
            selected.append((info, safe_filename(base, default=f"member{suffix}"), suffix))
    return selected


def _ratio_refused(size: int, compressed: int, limits: UploadSettings) -> bool:
    """True when ``size`` uncompressed bytes from ``compressed`` bytes pass the compression-ratio limit."""
    return size > limits.compression_ratio_min_bytes and size > limits.max_compression_ratio * max(compressed, 1)


def _ratio_error(name: str, size: int, compressed: int, limits: UploadSettings) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"'{name}' in the zip expands {size / max(compressed, 1):.0f}x ({human(size)} from {compressed} bytes); "
        f"the limit is {limits.max_compression_ratio:g}x for members above {human(limits.compression_ratio_min_bytes)}"
        " (RETNET_UPLOAD__MAX_COMPRESSION_RATIO)")


def _member_too_large(name: str, limits: UploadSettings, claimed: int | None = None) -> PayloadTooLargeError:
    lie = f" (its header says {claimed} bytes)" if claimed is not None else ""
    return PayloadTooLargeError(f"'{name}' in the zip is larger than the per-file limit of "
                                f"{_limit(limits.max_cif_bytes)}{lie} (RETNET_UPLOAD__MAX_CIF_BYTES)")


def check_headers(selected: list[tuple[zipfile.ZipInfo, str, str]], limits: UploadSettings,
                  budget: MemberBudget) -> None:
    """Refuse from the central directory alone, before anything is decompressed: too many CIFs, a member over the
    per-file limit, a total over the expanded limit, an unsupported compression method, a suspicious ratio."""
    budget.add_files(sum(1 for _, _, suffix in selected if suffix == ".cif"))
    budget.check_expanded(sum(info.file_size for info, _, _ in selected))
    for info, name, _ in selected:
        if info.compress_type not in ALLOWED_COMPRESSION:
            raise BadRequestError(f"'{name}' in the zip uses compression method {info.compress_type}; only stored "
                                  "and deflate members are accepted")
        if info.file_size > limits.max_cif_bytes:
            raise _member_too_large(name, limits)
        if _ratio_refused(info.file_size, info.compress_size, limits):
            raise _ratio_error(name, info.file_size, info.compress_size, limits)


def read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limits: UploadSettings,
                budget: MemberBudget) -> bytes:
    """Decompress one member, counting the real bytes against the per-file, total and ratio limits as they come
    (a header that understates the size is caught here), and add them to ``budget.expanded``."""
    chunks: list[bytes] = []
    size = 0
    try:
        with archive.open(info) as fh:
            while chunk := fh.read(CHUNK):
                size += len(chunk)
                if size > limits.max_cif_bytes:
                    raise _member_too_large(name, limits, claimed=info.file_size)
                budget.check_expanded(size)
                if _ratio_refused(size, info.compress_size, limits):
                    raise _ratio_error(name, size, info.compress_size, limits)
                chunks.append(chunk)
    except MEMBER_READ_ERRORS as exc:
        raise BadRequestError(f"cannot read '{name}' from the zip: it is corrupt, encrypted or its header does not "
                              f"match its data ({exc})") from exc
    if size != info.file_size:
        raise BadRequestError(f"'{name}' in the zip holds {size} bytes but its header says {info.file_size}")
    budget.expanded += size
    return b"".join(chunks)


def iter_zip(source: bytes | BinaryIO, settings: Settings, *, suffixes: tuple[str, ...] = (".cif",),
             budget: MemberBudget | None = None) -> Iterator[tuple[str, ZipMember]]:
    """Yield ``(suffix, member)`` one at a time from a zip (bytes or a seekable file), every limit checked.

    Raises 400 for a corrupt zip or unsafe entries (absolute, ``..``, symlinks), 413 over a limit (structures,
    per-file size, expanded total, compression ratio; header values first, then the real bytes).
    """
    limits = settings.upload
    budget = budget or MemberBudget(limits)
    with open_zip(source, limits) as archive:
        selected = _select(archive.infolist(), suffixes)
        check_headers(selected, limits, budget)
        for info, name, suffix in selected:
            yield suffix, ZipMember(name=name, data=read_member(archive, info, name, limits, budget))


def read_zip(data: bytes | BinaryIO, settings: Settings, *, suffixes: tuple[str, ...] = (".cif",)
             ) -> dict[str, list[ZipMember]]:
    """All selected members grouped by suffix (``{".cif": [...], ".csv": [...]}``), in memory (see
    :func:`iter_zip` for the checks). For screenings use :func:`store_zip_cifs`, which keeps one at a time."""
    grouped: dict[str, list[ZipMember]] = {s: [] for s in suffixes}
    for suffix, member in iter_zip(data, settings, suffixes=suffixes):
        grouped[suffix].append(member)
    return grouped


def cifs_from_zip(data: bytes | BinaryIO, settings: Settings) -> list[ZipMember]:
    """The CIF members of a zip, in memory; 422 when there are none."""
    cifs = read_zip(data, settings)[".cif"]
    if not cifs:
        raise UnprocessableError("the zip holds no .cif files")
    return cifs


def training_zip_contents(source: bytes | BinaryIO, settings: Settings) -> tuple[list[str], list[ZipMember]]:
    """The CIF member names and the CSV members (with their bytes) of a training zip, every member read and
    checked one at a time (see :func:`iter_zip`); CIF bytes are dropped as soon as they are checked."""
    names: list[str] = []
    csvs: list[ZipMember] = []
    for suffix, member in iter_zip(source, settings, suffixes=(".cif", ".csv")):
        if suffix == ".cif":
            names.append(member.name)
        else:
            csvs.append(member)
    return names, csvs


def check_zip(source: bytes | BinaryIO, settings: Settings, budget: MemberBudget | None = None) -> int:
    """Every check that needs only the central directory (see :func:`check_headers`), nothing decompressed;
    the number of CIF members (422 when there are none)."""
    limits = settings.upload
    budget = budget or MemberBudget(limits)
    with open_zip(source, limits) as archive:
        selected = _select(archive.infolist(), (".cif",))
        check_headers(selected, limits, budget)
    if not selected:
        raise UnprocessableError("the zip holds no .cif files")
    return len(selected)


def store_zip_cifs(source: bytes | BinaryIO, settings: Settings, store: ObjectStore,
                   budget: MemberBudget | None = None) -> list[StoredUpload]:
    """Store each CIF member of a zip as soon as it is read (one member in memory at a time); 422 without CIFs.

    ``budget`` carries the structure count and expanded bytes across the files of one request.
    """
    stored = [store_upload(store, m.name, m.data) for _, m in iter_zip(source, settings, budget=budget)]
    if not stored:
        raise UnprocessableError("the zip holds no .cif files")
    return stored
