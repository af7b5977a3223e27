"""Compiled (numba) CPU kernel for the supercell energy grid; see :mod:`models.voxels` for the method.

Serial on purpose: parallelism comes from worker processes (Celery concurrency),
and numba's default threading layer is unsafe under concurrent calls from threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def scatter_lj(atoms: np.ndarray, eps4: np.ndarray, sig2: np.ndarray, weight: np.ndarray,
               metric: np.ndarray, off0: np.ndarray, off1: np.ndarray, off2: np.ndarray,
               n: int, cutoff2: float, overlap_r2: float) -> np.ndarray:  # pragma: no cover - compiled
    """Add every atom's LJ energy (K) to the grid points of its index box; returns a float64 (n, n, n) grid."""
    grid = np.zeros((n, n, n))
    g00, g11, g22 = metric[0, 0], metric[1, 1], metric[2, 2]
    g01, g02, g12 = 2.0 * metric[0, 1], 2.0 * metric[0, 2], 2.0 * metric[1, 2]
    inv4g22 = 0.25 / metric[2, 2]
    nc = off2.shape[0]
    dc = np.empty(nc)
    dc2 = np.empty(nc)
    ic = np.empty(nc, dtype=np.int64)
    for m in range(atoms.shape[0]):
        ax, ay, az = atoms[m, 0], atoms[m, 1], atoms[m, 2]
        s2, we4 = sig2[m], weight[m] * eps4[m]
        i0, j0, k0 = int(np.round(ax * n)), int(np.round(ay * n)), int(np.round(az * n))
        for t in range(nc):
            k = k0 + off2[t]
            d = k / n - az
            d -= np.round(d)
            dc[t] = d
            dc2[t] = g22 * d * d
            ic[t] = k % n
        for oa in off0:
            i = i0 + oa
            da = i / n - ax
            da -= np.round(da)
            ii = i % n
            qa = g00 * da * da
            la = g02 * da
            for ob in off1:
                j = j0 + ob
                db = j / n - ay
                db -= np.round(db)
                jj = j % n
                qab = qa + g11 * db * db + g01 * da * db
                lab = la + g12 * db
                # Closest approach along the c row: skip rows that never enter the cut-off sphere.
                if qab - lab * lab * inv4g22 > cutoff2:
                    continue
                row = grid[ii, jj]
                for t in range(nc):
                    r2 = qab + dc2[t] + lab * dc[t]
                    if r2 <= cutoff2:
                        if r2 < overlap_r2:
                            row[ic[t]] = np.inf
                        else:
                            sr6 = s2 / r2
                            sr6 = sr6 * sr6 * sr6
                            row[ic[t]] += we4 * (sr6 * sr6 - sr6)
    return grid
