"""Physics-informed augmentation by molecular vibration: thermally jittered copies of a crystal.

From "Deep Spatial Learning with Molecular Vibration": a framework at 298 K is not the static X-ray
structure; each atom vibrates about its site. Each copy displaces every atom by an independent isotropic
Gaussian of standard deviation ``amplitude`` (Å, per Cartesian axis); the copy is re-voxelized and trained on
with the original's label. The lattice is kept (the cell does not vibrate).

Default amplitude: :data:`DEFAULT_AMPLITUDE` = 0.12 Å, the root-mean-square displacement per axis
√U_iso for U_iso ≈ 0.015 Å², typical of the framework atoms (metal, carboxylate O and C) of MOFs refined from
room-temperature single-crystal X-ray data (isotropic displacement parameters in the CSD are mostly
0.01–0.03 Å² at 293–298 K, hydrogens excluded). Hydrogen atoms move more, but their riding-model U values are
not measured, so one amplitude is used for every atom.

Each copy is reproducible: its displacements come from ``seed`` and the copy index, and its cache hash is
derived from the original crystal's content hash, the amplitude and the seed (:func:`vibration_hash`), so
the voxel cache stores each jittered grid once.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from models.structure import Crystal

#: RMS thermal displacement per Cartesian axis at 298 K (Å); see the module docstring for the source.
DEFAULT_AMPLITUDE = 0.12
#: Upper bound of the amplitude (Å): beyond this the "vibration" would break bonds (C–C is 1.4–1.5 Å).
MAX_AMPLITUDE = 0.5


def vibration_hash(content_sha256: str, amplitude: float, seed: int) -> str:
    """Cache hash of a jittered copy: the original's content hash + the amplitude (Å, 4 decimals) + the seed."""
    return hashlib.sha256(f"{content_sha256}:vibration:{amplitude:.4f}:{seed}".encode()).hexdigest()


def vibrate(crystal: Crystal, amplitude: float = DEFAULT_AMPLITUDE, seed: int = 0) -> Crystal:
    """A copy of ``crystal`` whose atoms are displaced by N(0, amplitude²) per Cartesian axis (Å).

    Raises
    ------
    ValueError
        ``amplitude`` outside [0, :data:`MAX_AMPLITUDE`].
    """
    if not 0.0 <= amplitude <= MAX_AMPLITUDE:
        raise ValueError(f"vibration amplitude must lie in [0, {MAX_AMPLITUDE}] Å, got {amplitude}")
    amplitude = round(float(amplitude), 4)  # the precision of the cache key: equal keys, equal displacements
    rng = np.random.default_rng([seed, int(crystal.sha256[:12], 16)])
    displacement = rng.normal(scale=amplitude, size=crystal.frac_coords.shape)  # Cartesian, Å
    frac = crystal.frac_coords + displacement @ np.linalg.inv(crystal.lattice)
    copy = dataclasses.replace(crystal, frac_coords=np.mod(frac, 1.0), _hash="")
    object.__setattr__(copy, "_hash", vibration_hash(crystal.sha256, amplitude, seed))
    return copy


def vibrated_copies(crystal: Crystal, copies: int, amplitude: float = DEFAULT_AMPLITUDE, seed: int = 0
                    ) -> list[Crystal]:
    """``copies`` jittered copies, copy i with seed ``seed · 1000 + i`` (reproducible, distinct)."""
    if copies < 0:
        raise ValueError(f"copies must be >= 0, got {copies}")
    return [vibrate(crystal, amplitude, seed * 1000 + i) for i in range(copies)]


def with_vibrated(x: np.ndarray, y: np.ndarray, copies: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Training grids (N, n, n, n) and labels (N, k) extended by their jittered copies (N, c, n, n, n).

    Each copy keeps its original's label; ``copies=None`` returns the inputs unchanged.
    """
    if copies is None or copies.shape[1] == 0:
        return x, y
    if copies.shape[0] != len(x) or copies.shape[2:] != x.shape[1:]:
        raise ValueError(f"copies {copies.shape} do not match the grids {x.shape}")
    return (np.concatenate([x, copies.reshape(-1, *x.shape[1:]).astype(x.dtype)]),
            np.concatenate([y, np.repeat(y, copies.shape[1], axis=0)]))
