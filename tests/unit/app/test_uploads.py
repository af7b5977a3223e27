"""Zip safety and upload limits."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from app.core.config import Settings
from app.services.errors import BadRequestError, PayloadTooLargeError, UnprocessableError
from app.services.uploads import cifs_from_zip, read_zip, stem


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil.cif", "a/../../evil.cif", "/abs/evil.cif", "C:\\evil.cif"])
def test_unsafe_paths_are_refused(name: str) -> None:
    with pytest.raises(BadRequestError, match="unsafe"):
        read_zip(_zip({name: b"data_x"}), Settings())


def test_symlinks_are_refused() -> None:
    with pytest.raises(BadRequestError, match="symbolic link"):
        read_zip(_zip({"a.cif": b"data_x"}, symlink="link.cif"), Settings())


def test_zip_without_cifs() -> None:
    with pytest.raises(UnprocessableError, match="no .cif files"):
        cifs_from_zip(_zip({"readme.txt": b"hello", "__MACOSX/._a.cif": b"x"}), Settings())


def test_not_a_zip() -> None:
    with pytest.raises(BadRequestError, match="not a valid zip"):
        read_zip(b"PK\x03\x04 garbage", Settings())


def test_zip_bomb_guard() -> None:
    s = Settings(upload={"max_unzipped_bytes": 1000})
    with pytest.raises(PayloadTooLargeError, match="expands to"):
        read_zip(_zip({"a.cif": b"0" * 5000}), s)


def test_members_grouped_and_nested_folders_flattened() -> None:
    grouped = read_zip(_zip({"x/a.cif": b"1", "b.CIF": b"2", "labels.csv": b"name,y"}), Settings(),
                       suffixes=(".cif", ".csv"))
    assert sorted(m.name for m in grouped[".cif"]) == ["a.cif", "b.CIF"]
    assert [m.name for m in grouped[".csv"]] == ["labels.csv"]
    assert stem("x/ABAVIJ_clean.cif") == "ABAVIJ_clean"
