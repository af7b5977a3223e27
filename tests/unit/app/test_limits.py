"""Limits that hold under attack: request bytes counted while they arrive, zip members checked one at a time
(headers first, then the real bytes), capped file names, CIF parsing out of the API with a time limit."""

from __future__ import annotations

import asyncio
import io
import random
import struct
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.services.errors import BadRequestError, PayloadTooLargeError

REQUEST_LIMIT = 300_000


@pytest.fixture()
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Small limits (overrides conftest's ``settings``: ``client`` and ``model_row`` use these)."""
    from app.db.migrate import upgrade

    s = Settings(data_dir=tmp_path, embedded_workers=False, register_shipped_model=False,
                 upload={"max_cif_bytes": 50_000, "max_zip_bytes": 200_000, "max_unzipped_bytes": 400_000,
                         "max_files": 20, "max_request_bytes": REQUEST_LIMIT, "max_compression_ratio": 50,
                         "compression_ratio_min_bytes": 10_000})
    upgrade(s.db_url)
    return s


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def _noise(n: int, seed: int = 0) -> bytes:
    """Incompressible-ish text: ratio about 2 under deflate."""
    return random.Random(seed).randbytes(n // 2).hex().encode()[:n]


def _jobs(settings) -> list[Any]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.db.session import session_scope
    from app.db.tables import Job

    with session_scope(settings.db_url) as session:
        return list(session.scalars(select(Job)).all())


def _item_names(settings) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from app.db.session import session_scope
    from app.db.tables import JobItem

    with session_scope(settings.db_url) as session:
        return [n for (n,) in session.execute(select(JobItem.name).order_by(JobItem.position)).all()]


class CountingStore:
    """An object store that keeps only keys and sizes, and counts puts (the data itself is dropped)."""

    uri = "memory://counting"

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.puts = 0

    def put(self, key: str, data: bytes) -> None:
        self.puts += 1
        self.sizes[key] = len(data)

    def exists(self, key: str) -> bool:
        return key in self.sizes


# --- the request body limit --------------------------------------------------------------------------------------

def _run_asgi(app: Any, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[list[dict], int]:
    """Drive an ASGI app with a POST body in ``chunks``; (messages sent, chunks the app received)."""
    sent: list[dict] = []
    taken = 0

    async def receive() -> dict:
        nonlocal taken
        if taken >= len(chunks):
            return {"type": "http.disconnect"}
        taken += 1
        return {"type": "http.request", "body": chunks[taken - 1], "more_body": taken < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/screenings", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent, taken


def test_body_over_the_limit_is_refused_while_it_arrives() -> None:
    """No Content-Length (chunked): the 413 goes out as soon as the count passes the limit, the rest is never read."""
    import json

    from app.api.limits import BodyLimitMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:  # reads everything, like a form parser
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent, taken = _run_asgi(BodyLimitMiddleware(app, max_bytes=1000), [], [b"x" * 300] * 100)
    assert taken == 4  # 1200 bytes > 1000: stopped at the 4th chunk of 100
    assert sent[0]["status"] == 413
    detail = json.loads(sent[1]["body"])["detail"]
    assert "1000 bytes" in detail and "RETNET_UPLOAD__MAX_REQUEST_BYTES" in detail
    sent, taken = _run_asgi(BodyLimitMiddleware(app, max_bytes=1000), [], [b"x" * 500, b"x" * 500])
    assert sent[0]["status"] == 200 and taken == 2  # exactly at the limit is fine


def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    from app.api.limits import BodyLimitMiddleware

    called = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(True)

    sent, taken = _run_asgi(BodyLimitMiddleware(app, max_bytes=1000), [(b"content-length", b"5000")], [b"x" * 5000])
    assert sent[0]["status"] == 413 and taken == 0 and not called


def test_api_refuses_big_bodies_with_json_413(client, settings, model_row) -> None:  # type: ignore[no-untyped-def]
    # Content-Length known: refused before the route (no job, nothing parsed)
    r = client.post("/screenings", files=[("files", ("a.cif", b"x" * (REQUEST_LIMIT + 10)))])
    assert r.status_code == 413, r.text
    assert f"{REQUEST_LIMIT} bytes" in r.json()["detail"]

    # chunked (no Content-Length): counted while it arrives, a valid multipart file part that never ends
    def body() -> Any:
        yield b'--zz\r\nContent-Disposition: form-data; name="files"; filename="a.cif"\r\n\r\n'
        for _ in range(40):
            yield b"x" * 10_000

    r = client.post("/screenings", content=body(), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413 and f"{REQUEST_LIMIT} bytes" in r.json()["detail"]
    assert _jobs(settings) == []
    assert client.get("/health").status_code == 200  # the server is fine afterwards


# --- zips: header values first, then the real bytes --------------------------------------------------------------

def test_member_over_the_per_file_limit(settings) -> None:  # type: ignore[no-untyped-def]
    from app.services.uploads import check_zip, iter_zip

    data = _zip({"big.cif": _noise(60_000)})
    with pytest.raises(PayloadTooLargeError, match=r"per-file limit of 50000 bytes"):
        check_zip(data, settings)
    with pytest.raises(PayloadTooLargeError, match="MAX_CIF_BYTES"):
        list(iter_zip(data, settings))


def test_member_count_over_the_limit(settings) -> None:  # type: ignore[no-untyped-def]
    from app.services.uploads import MemberBudget, check_zip

    data = _zip({f"s{i}.cif": b"data_x\n" for i in range(21)})
    with pytest.raises(PayloadTooLargeError, match="21 structures in one request; the limit is 20"):
        check_zip(data, settings)
    budget = MemberBudget(settings.upload)  # counted across the files of one request
    check_zip(_zip({f"s{i}.cif": b"data_x\n" for i in range(15)}), settings, budget)
    with pytest.raises(PayloadTooLargeError, match="the limit is 20"):
        check_zip(_zip({f"t{i}.cif": b"data_x\n" for i in range(6)}), settings, budget)


def test_zip_with_too_many_entries_is_refused_before_the_central_directory_is_read(settings) -> None:  # type: ignore[no-untyped-def]
    from app.services.uploads import open_zip

    data = _zip({f"dir{i}/readme.txt": b"" for i in range(41)})  # 41 > 2 × max_files, none of them CIFs
    with pytest.raises(PayloadTooLargeError, match="41 entries; at most 40"):
        open_zip(data, settings.upload)


def test_total_expanded_size_over_the_limit(settings) -> None:  # type: ignore[no-untyped-def]
    from app.services.uploads import iter_zip

    data = _zip({f"s{i}.cif": _noise(45_000, seed=i) for i in range(9)}, method=zipfile.ZIP_STORED)
    with pytest.raises(PayloadTooLargeError, match=r"expands to at least \d+ bytes; the limit is .*400000 bytes"):
        list(iter_zip(data, settings))


def test_compression_ratio_over_the_limit(client, settings, model_row) -> None:  # type: ignore[no-untyped-def]
    data = _zip({"bomb.cif": b"\0" * 45_000})  # ~900x
    r = client.post("/screenings", files=[("files", ("bomb.zip", data))])
    assert r.status_code == 413, r.text
    assert "the limit is 50x" in r.json()["detail"] and "MAX_COMPRESSION_RATIO" in r.json()["detail"]
    small = _zip({"tiny.cif": b"\0" * 5_000})  # as compressible, but below compression_ratio_min_bytes
    assert client.post("/screenings", files=[("files", ("ok.zip", small))]).status_code == 202


def test_unsupported_compression_is_refused(settings) -> None:  # type: ignore[no-untyped-def]
    from app.services.uploads import check_zip

    with pytest.raises(BadRequestError, match="only stored and deflate"):
        check_zip(_zip({"a.cif": b"data_x\n" * 100}, method=zipfile.ZIP_BZIP2), settings)


def _lie_about_size(data: bytes, claimed: int) -> bytes:
    """Rewrite the uncompressed size in the local header and the central directory (both agree: a lie)."""
    raw = bytearray(data)
    local = raw.find(b"PK\x03\x04")
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, claimed)
    struct.pack_into("<I", raw, central + 24, claimed)
    return bytes(raw)


def test_a_zip_whose_headers_lie_about_the_size_is_refused(client, settings, model_row) -> None:  # type: ignore[no-untyped-def]
    from app.services.uploads import iter_zip

    honest = _zip({"liar.cif": _noise(150_000)}, method=zipfile.ZIP_STORED)  # over max_cif_bytes (50,000)
    lying = _lie_about_size(honest, 1_000)
    with pytest.raises(BadRequestError, match="liar.cif"):
        list(iter_zip(lying, Settings(upload={"max_zip_bytes": 10**6})))
    r = client.post("/screenings", files=[("files", ("liar.zip", lying))])
    assert r.status_code == 400 and "does not match its data" in r.json()["detail"]
    assert _jobs(settings) == []


class _LyingArchive:
    """A zip reader whose member yields more bytes than its header declares (a decompressor that disagrees)."""

    def __init__(self, real: bytes) -> None:
        self.real = real

    def open(self, info: zipfile.ZipInfo) -> io.BytesIO:
        return io.BytesIO(self.real)


def test_real_bytes_are_counted_whatever_the_header_says(settings) -> None:  # type: ignore[no-untyped-def]
    from app.services.uploads import MemberBudget, read_member

    info = zipfile.ZipInfo("liar.cif")
    info.file_size, info.compress_size = 1_000, 900
    limits = settings.upload
    with pytest.raises(PayloadTooLargeError, match="its header says 1000 bytes"):
        read_member(_LyingArchive(b"x" * 10**7), info, "liar.cif", limits, MemberBudget(limits))  # type: ignore[arg-type]
    info.compress_size = 10
    with pytest.raises(PayloadTooLargeError, match="MAX_COMPRESSION_RATIO"):  # the ratio on real bytes too
        read_member(_LyingArchive(b"x" * 40_000), info, "liar.cif", limits, MemberBudget(limits))  # type: ignore[arg-type]
    budget = MemberBudget(limits, expanded=380_000)
    info.compress_size = 40_000
    with pytest.raises(PayloadTooLargeError, match="MAX_UNZIPPED_BYTES"):
        read_member(_LyingArchive(b"x" * 40_000), info, "liar.cif", limits, budget)  # type: ignore[arg-type]


def test_a_20000_member_screening_zip_is_stored_member_by_member(tmp_path: Path) -> None:
    """20,000 CIFs of 20 kB (400 MB expanded): stored one by one; the peak of Python allocations (member metadata
    and one member at a time) stays far below the total."""
    from app.services.uploads import store_zip_cifs

    n, size = 20_000, 20_000
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for i in range(n):
            z.writestr(f"set/s{i:05d}.cif", f"data_s{i}\n".encode() + bytes([65 + i % 26]) * size)
    store = CountingStore()
    settings = Settings()  # the defaults: max_files 20,000
    tracemalloc.start()
    try:
        with path.open("rb") as fh:
            stored = store_zip_cifs(fh, settings, store)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(stored) == n and store.puts == n and len(store.sizes) == n
    assert stored[0].filename == "s00000.cif" and stored[-1].size == size + len(f"data_s{n - 1}\n")
    assert peak < n * size / 10, f"peak of Python allocations {peak / 1e6:.1f} MB for {n * size / 1e6:.0f} MB"


# --- file names ----------------------------------------------------------------------------------------------------

def test_safe_filename() -> None:
    from app.services.uploads import MAX_NAME_CHARS, safe_filename

    long = "A" * 400 + ".cif"
    capped = safe_filename(long)
    assert len(capped) <= MAX_NAME_CHARS and capped.startswith("A" * 200 + "…") and capped.endswith(".cif")
    assert safe_filename("B" * 400 + ".cif") != capped and len(safe_filename("A" * 255)) == 255
    assert safe_filename("../../etc/passwd.cif") == "passwd.cif"
    assert safe_filename("C:\\Users\\x\\evil.cif") == "evil.cif"
    assert safe_filename("a\x00b\r\nc\u202e\u200bd.cif") == "abcd.cif"
    assert safe_filename("..", default="structure.cif") == "structure.cif"
    assert safe_filename("", default="x.cif") == "x.cif" and safe_filename(None) == "structure.cif"


def test_long_and_hostile_names_are_stored_capped(client, settings, model_row, sent) -> None:  # type: ignore[no-untyped-def]
    members = {"deep/" + "m" * 300 + ".cif": b"data_m\n", "ok.cif": b"data_ok\n"}
    parts = [("z.zip", _zip(members)), ("f" * 400 + ".cif", b"data_f\n"), ("../../../etc/x.cif", b"data_x\n"),
             ("a\tb\u202e\u200b.cif", b"data_y\n")]
    body = b"".join(b'--zz\r\nContent-Disposition: form-data; name="files"; filename="' + name.encode() + b'"\r\n'
                    b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n" for name, data in parts)
    r = client.post("/screenings", content=body + b"--zz--\r\n",  # raw: httpx would escape the control characters
                    headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 202, r.text
    names = _item_names(settings)
    assert len(names) == 5
    assert all(len(n) <= 255 and "/" not in n and "\\" not in n for n in names)
    assert all(n.isprintable() and "\u202e" not in n for n in names)
    assert names[0].startswith("m" * 200 + "…") and names[0].endswith(".cif")
    assert names[2].startswith("f" * 200 + "…") and names[3] == "x.cif" and names[4] == "ab.cif"
    r = client.post("/predict", files={"file": ("p" * 1000 + ".cif", b"data_p\n")}, data={"wait": "0"})
    assert r.status_code == 202, r.text
    assert max(len(n) for n in _item_names(settings)) <= 255


# --- idempotency over stored uploads -------------------------------------------------------------------------------

def test_idempotency_key_with_stored_uploads(client, settings, model_row, sent) -> None:  # type: ignore[no-untyped-def]
    files = [("files", ("z.zip", _zip({"a.cif": b"data_a\n", "b.cif": b"data_b\n"})))]
    first = client.post("/screenings", files=files, headers={"Idempotency-Key": "k1"})
    again = client.post("/screenings", files=files, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 202 and first.json()["job_id"] == again.json()["job_id"]
    other = [("files", ("z.zip", _zip({"a.cif": b"data_a\n", "b.cif": b"data_B\n"})))]
    r = client.post("/screenings", files=other, headers={"Idempotency-Key": "k1"})
    assert r.status_code == 422 and "Idempotency-Key" in r.json()["detail"]


def test_fingerprint_is_the_same_for_bytes_and_stored_uploads() -> None:
    import hashlib

    from app.services.submit import Upload, request_fingerprint
    from app.services.uploads import StoredUpload

    data = b"data_x\n"
    stored = StoredUpload("x.cif", "uploads/k", hashlib.sha256(data).hexdigest(), len(data))
    assert request_fingerprint("s", [Upload("x.cif", data)], m=1) == request_fingerprint("s", [stored], m=1)


# --- parsing: never in the API, time-limited in the worker ---------------------------------------------------------

def test_predict_does_not_parse_in_the_api(client, settings, model_row, sent, cif_dir: Path,  # type: ignore[no-untyped-def]
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import models.structure

    def no_parsing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the API parsed a CIF")

    monkeypatch.setattr(models.structure, "parse_cif", no_parsing)
    monkeypatch.setattr(models.structure, "parse_cif_fast", no_parsing)
    r = client.post("/predict", files={"file": ("x.cif", b"not a cif at all")}, data={"wait": "0"})
    assert r.status_code == 202, r.text
    assert len(sent["voxelize"]) == 1  # the voxels worker parses it (and fails the item: 422 from the route)


def test_parse_time_limit_fails_the_item(client, settings, model_row, sent, cif_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """A non-P1 CIF goes through pymatgen in the helper process; over the limit it fails its item with the limit."""
    from worker.pipeline import voxelize_chunk
    from worker.runtime import WorkerContext

    cif = (cif_dir / "FIGXAU_disordered.cif").read_bytes()  # partial occupancies: the pymatgen path
    r = client.post("/screenings", files=[("files", ("FIGXAU_disordered.cif", cif))])
    assert r.status_code == 202, r.text
    slow = settings.model_copy(update={"pipeline": settings.pipeline.model_copy(update={"parse_timeout_s": 1e-4})})
    voxelize_chunk(WorkerContext(slow), sent["voxelize"])
    items = client.get(f"/jobs/{r.json()['job_id']}/results").json()["items"]
    assert items[0]["status"] == "failed", items
    assert "longer than the limit of 0.0001 s" in items[0]["error"] and "PARSE_TIMEOUT_S" in items[0]["error"]


def test_parse_helper_recovers_after_a_timeout(cif_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.structure import parse_cif
    from worker import parsing

    cif = (cif_dir / "KEGZOL04_oxidation_states.cif").read_bytes()  # oxidation states: the pymatgen path
    with pytest.raises(parsing.ParseTimeoutError, match="limit of 1e-05 s"):
        parsing.parse_limited(cif, "KEGZOL04_oxidation_states", 1e-5)
    crystal = parsing.parse_limited(cif, "KEGZOL04_oxidation_states", 60)  # a fresh helper
    assert crystal.sha256 == parse_cif(cif, name="KEGZOL04_oxidation_states").sha256
    with pytest.raises(parsing.StructureError, match="not a CIF"):
        parsing.parse_limited(b"data_x\n" + b"\0" * 100, "bad", 60)
    # a slow parser in the helper is simulated by a tiny limit; the fast P1 path never starts a helper
    started = []
    monkeypatch.setattr(parsing, "_Helper", lambda: started.append(1))
    p1 = (cif_dir / "KEGZOL04_clean.cif").read_bytes()
    assert parsing.parse_limited(p1, "KEGZOL04_clean", 1e-6).n_atoms == 40 and not started
