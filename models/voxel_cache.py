"""The one voxel-grid cache scheme: key layout and file format (pure: no IO, no settings).

Both the service's object store (:mod:`app.storage`, which re-exports :func:`voxel_key`) and the
library's on-disk cache folder (:mod:`models.pipeline`, ``retnet ... --cache DIR``) store a grid

- under ``voxels/<params_hash>/<sha[:2]>/<sha>_<params_hash>.npy.gz``, where ``sha`` is
  :attr:`models.structure.Crystal.sha256` (a canonical hash of the parsed structure, so the same
  crystal under another file name or with other formatting is a hit) and ``params_hash`` is
  :meth:`models.params.VoxelParams.params_hash` (every voxel parameter);
- as a gzip-compressed float32 ``.npy`` (:func:`encode_grid` / :func:`decode_grid`).

A cache folder is therefore laid out exactly like the service's local store root: the CLI can
read and fill the grids of ``RETNET_DATA_DIR``'s store and the other way round.

A structure's *crystal blocks* (descriptors computed from the crystal rather than from the grid, e.g. its
``ch4_widom`` numbers, :data:`models.descriptors.CRYSTAL_BLOCKS`) are cached beside its grids, under
``crystal-blocks/<tag>/<sha[:2]>/<sha>_<tag>.npy`` as a float64 ``.npy`` (:func:`encode_block`), where ``<tag>``
is :func:`models.descriptors.crystal_block_tag` (the block and a hash of what computes it).
"""

from __future__ import annotations

import gzip
import io

import numpy as np

from models.descriptors import crystal_block_tag

#: Suffix of a cached grid (gzip-compressed ``.npy``).
GRID_SUFFIX = ".npy.gz"


def voxel_key(structure_sha256: str, params_hash: str) -> str:
    """Key of a cached voxel grid: structure hash + voxel-parameter hash.

    Parameters
    ----------
    structure_sha256 : str
        :attr:`models.structure.Crystal.sha256` of the parsed structure (hex).
    params_hash : str
        :meth:`models.params.VoxelParams.params_hash` of the voxel parameters.
    """
    return f"voxels/{params_hash}/{structure_sha256[:2]}/{structure_sha256}_{params_hash}{GRID_SUFFIX}"


def encode_grid(grid: np.ndarray) -> bytes:
    """float32 ``.npy`` compressed with gzip (level 3): the stored form of a cached grid."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(grid, dtype=np.float32), allow_pickle=False)
    return gzip.compress(buffer.getvalue(), compresslevel=3)


def decode_grid(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_grid`."""
    return np.load(io.BytesIO(gzip.decompress(data)), allow_pickle=False)


def crystal_block_key(structure_sha256: str, block: str) -> str:
    """Key of a structure's cached crystal block ``block`` (e.g. ``ch4_widom``), named by its tag
    (:func:`models.descriptors.crystal_block_tag`: a block computed another way is never read as this one)."""
    tag = crystal_block_tag(block)
    return f"crystal-blocks/{tag}/{structure_sha256[:2]}/{structure_sha256}_{tag}.npy"


def encode_block(row: np.ndarray) -> bytes:
    """float64 ``.npy`` of one structure's block (a few numbers): the stored form of a cached crystal block."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(row, dtype=np.float64).ravel(), allow_pickle=False)
    return buffer.getvalue()


def decode_block(data: bytes, width: int) -> np.ndarray:
    """Inverse of :func:`encode_block`; ValueError unless it holds ``width`` finite numbers."""
    row = np.load(io.BytesIO(data), allow_pickle=False)
    if row.shape != (width,) or row.dtype != np.float64 or not np.isfinite(row).all():
        raise ValueError(f"a stored crystal block must hold {width} finite float64 numbers, "
                         f"got {row.dtype} {row.shape}")
    return row
