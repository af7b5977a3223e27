"""Local object store, storage URIs, keys and settings defaults."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.config import Settings
from app.storage import decode_grid, encode_grid, store_from_uri, voxel_key
from app.storage.local import LocalStore


def test_local_store_roundtrip(tmp_path: Path) -> None:
    store = store_from_uri((tmp_path / "s").as_uri())
    assert isinstance(store, LocalStore)
    store.put("a/b/c.bin", b"hello")
    assert store.exists("a/b/c.bin") and store.get("a/b/c.bin") == b"hello"
    assert store.list("a/") == ["a/b/c.bin"]
    store.delete("a/b/c.bin")
    assert not store.exists("a/b/c.bin")
    with pytest.raises(KeyError):
        store.get("a/b/c.bin")
    with pytest.raises(ValueError):
        store.put("../escape", b"x")


def test_grid_codec_is_float32() -> None:
    grid = np.random.default_rng(0).random((5, 5, 5))
    back = decode_grid(encode_grid(grid))
    assert back.dtype == np.float32 and np.allclose(back, grid.astype(np.float32))


def test_voxel_key_contains_both_hashes() -> None:
    key = voxel_key("ab" * 32, "0123456789abcdef")
    assert "ab" * 32 in key and "0123456789abcdef" in key and key.endswith(".npy.gz")


def test_settings_defaults_are_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETNET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RETNET_INFERENCE__BATCH_SIZE", "7")
    s = Settings()
    assert s.embedded and s.broker.startswith("memory://")
    assert s.db_url == f"sqlite:///{tmp_path.resolve() / 'retnet.db'}"
    assert s.store_uri.startswith("file://")
    assert s.inference.batch_size == 7
    assert Settings(database_url="postgresql://u@h/db").db_url == "postgresql+psycopg://u@h/db"
    assert not Settings(broker_url="redis://localhost/0").embedded


def test_unknown_storage_scheme() -> None:
    with pytest.raises(ValueError, match="unsupported storage URI"):
        store_from_uri("ftp://x/y")


def test_migrations_upgrade_downgrade_roundtrip(tmp_path: Path) -> None:
    from app.db.migrate import current_revision, downgrade, head_revision, upgrade

    url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    assert current_revision(url) == head_revision()
    downgrade(url, "base")
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()
