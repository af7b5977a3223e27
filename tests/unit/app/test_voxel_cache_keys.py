"""One voxel cache: the service's storage key (app.storage) and the library's cache folder (models.pipeline) agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.services.registry import params_hash_of
from app.storage import decode_grid, encode_grid, voxel_key
from app.storage.local import LocalStore
from models import voxel_cache
from models.params import VoxelParams
from models.pipeline import CifSource, cache_path, voxelize_one
from models.structure import load_crystal


def test_the_service_key_is_the_shared_one_and_unchanged() -> None:
    assert voxel_key is voxel_cache.voxel_key
    # Grids already stored by the service live under this exact key: it must never change.
    assert voxel_key("ab" * 32, "0123456789abcdef") == (
        "voxels/0123456789abcdef/ab/" + "ab" * 32 + "_0123456789abcdef.npy.gz")


def test_both_caches_use_the_same_params_hash() -> None:
    params = VoxelParams(grid_size=6, temperature=77.0)
    assert params_hash_of({"voxel_params": params.model_dump()}) == params.params_hash()
    assert params_hash_of({}) == VoxelParams().params_hash()


def test_pipeline_and_service_give_the_same_key_for_the_same_structure(tmp_path: Path, cif_dir: Path) -> None:
    params = VoxelParams(grid_size=6)
    crystal = load_crystal(cif_dir / "FIGXAU_clean.cif")
    key = voxel_key(crystal.sha256, params.params_hash())
    assert cache_path(tmp_path, crystal.sha256, params) == tmp_path / key
    # The same crystal in other files (deuterium written as D) is one cache entry in both.
    assert load_crystal(cif_dir / "FIGXAU_deuterated.cif").sha256 == crystal.sha256


def test_a_cache_folder_is_a_local_store_of_grids(tmp_path: Path, cif_dir: Path) -> None:
    params = VoxelParams(grid_size=6)
    store = LocalStore(tmp_path)
    source = CifSource("FIGXAU_clean", path=cif_dir / "FIGXAU_clean.cif")
    grid = voxelize_one(source, params, tmp_path, threads=1)  # the library writes ...
    key = voxel_key(load_crystal(source.path).sha256, params.params_hash())  # type: ignore[arg-type]
    assert store.list("voxels/") == [key]
    np.testing.assert_array_equal(decode_grid(store.get(key)), grid)  # ... what the service reads
    marked = np.full((6, 6, 6), 3.0, dtype=np.float32)
    store.put(key, encode_grid(marked))  # the service writes ...
    renamed = CifSource("another_name", data=(cif_dir / "FIGXAU_deuterated.cif").read_bytes())
    np.testing.assert_array_equal(voxelize_one(renamed, params, tmp_path), marked)  # ... what the library reads


def test_grid_encoding_is_the_stores(tmp_path: Path) -> None:
    grid = np.random.default_rng(0).random((5, 5, 5)).astype(np.float32)
    assert voxel_cache.encode_grid(grid) == encode_grid(grid)
    np.testing.assert_array_equal(voxel_cache.decode_grid(encode_grid(grid)), grid)
    np.testing.assert_array_equal(decode_grid(voxel_cache.encode_grid(grid)), grid)


def test_a_corrupt_cache_file_is_recomputed(tmp_path: Path, cif_dir: Path) -> None:
    params = VoxelParams(grid_size=5)
    source = CifSource("SAYTUJ_clean", path=cif_dir / "SAYTUJ_clean.cif")
    path = cache_path(tmp_path, load_crystal(source.path).sha256, params)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True)
    for junk in (b"not gzip", voxel_cache.encode_grid(np.zeros((5, 5, 5), np.float32))[:20],
                 voxel_cache.encode_grid(np.zeros((4, 4, 4), np.float32))):
        path.write_bytes(junk)
        grid = voxelize_one(source, params, tmp_path)
        assert grid.shape == (5, 5, 5) and (grid != 0).any()
        np.testing.assert_array_equal(voxel_cache.decode_grid(path.read_bytes()), grid)
