"""Energy voxels: the Lennard-Jones energy of a probe on a 3D grid over a crystal.

DESIGN.md §3. For a grid point r,

    V(r) = Σ_j w_j · 4 ε_j' [(σ_j'/r_j)¹² − (σ_j'/r_j)⁶],   r_j ≤ r_c,

over every framework atom j and every periodic image within the cut-off, with
Lorentz-Berthelot mixing ε_j' = sqrt(ε_j ε_probe), σ_j' = (σ_j + σ_probe)/2 and
w_j the site occupancy. V = +∞ when an atom sits within 1e-3 Å of the point and
V = 0 when no atom is within the cut-off. The voxel value is exp(−V/T) (or V).

Method
------
The grid spans the minimum-image supercell (scale s_i = ceil(2 r_c / w_i)),
whose perpendicular widths are all ≥ 2 r_c. Hence every image within r_c of a
point has supercell-fractional offsets in [−½, ½] and is the unique minimum
image: one wrapped displacement per (atom, point) pair covers the whole
periodic sum. Along each supercell axis, an atom only reaches grid indices
within r_c / W_i · n of its own position, so each atom visits a fixed index
box, the squared distance is the metric-tensor quadratic form of separable
per-axis offsets, and energies are scatter-added into the grid. Everything is
vectorised with torch (float64), on CUDA when available; no process pools.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from models.errors import StructureTooLargeError, UnknownElementError
from models.params import VoxelParams, uff_table
from models.structure import Crystal

#: Squared distance (Å²) below which the energy is +∞ (r < 1e-3 Å).
_OVERLAP_R2 = 1e-6
#: Largest supercell (atoms) we grid; beyond this the request is refused.
MAX_SUPERCELL_ATOMS = 200_000
#: Pair elements processed per chunk (bounds memory to ~ 8 bytes × this × a few).
_CHUNK_ELEMENTS = 1 << 21


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def supercell_scale(crystal: Crystal, cutoff: float) -> np.ndarray:
    """Minimum-image scale factors s_i = ceil(2 r_c / w_i) along a, b, c (ints ≥ 1)."""
    return np.ceil(2.0 * cutoff / crystal.widths - 1e-12).astype(np.int64).clip(min=1)


def _mixed_lj(crystal: Crystal, params: VoxelParams) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Expand sites into weighted atoms: (frac (K, 3), 4ε' (K,), σ'² (K,), weight (K,))."""
    table = uff_table()
    unknown = [el for el in crystal.elements if el not in table]
    if unknown:
        error = UnknownElementError(unknown, params.force_field)
        error.args = (f"{crystal.name}: {error.args[0]}",)  # name the structure, like every StructureError
        raise error
    frac, eps4, sig2, weight = [], [], [], []
    for xyz, site in zip(crystal.frac_coords, crystal.species, strict=True):
        for element, occupancy in site:
            eps, sig = table[element]
            frac.append(xyz)
            eps4.append(4.0 * math.sqrt(eps * params.probe_epsilon))
            sig2.append((0.5 * (sig + params.probe_sigma)) ** 2)
            weight.append(occupancy)
    return np.asarray(frac), np.asarray(eps4), np.asarray(sig2), np.asarray(weight)


def energy_grid(
    crystal: Crystal,
    params: VoxelParams | None = None,
    *,
    device: torch.device | str | None = None,
    threads: int | None = None,
    engine: str = "auto",
) -> np.ndarray:
    """Return the raw probe energy V (K) on the grid, float64 array of shape (n, n, n).

    Index [i, j, k] is the point at supercell-fractional coordinates (i/n, j/n, k/n),
    or, with ``cubic_box=L``, the Cartesian point (−L/2 + iL/n, −L/2 + jL/n, −L/2 + kL/n) Å.

    ``engine="auto"`` uses the compiled numba kernel on CPU and torch on CUDA;
    ``"torch"`` forces the torch path (any device). On CPU the numba kernel runs on
    ``threads`` threads (default: all cores); give 1 inside worker pools that
    already use one process per core.

    Raises
    ------
    UnknownElementError
        An element has no force-field parameters (the message names it).
    StructureTooLargeError
        The supercell exceeds :data:`MAX_SUPERCELL_ATOMS` atoms.
    """
    params = params or VoxelParams()
    if engine not in ("auto", "torch"):
        raise ValueError(f"unknown engine {engine!r}; use 'auto' or 'torch'")
    dev = torch.device(device) if device is not None else default_device()
    frac, eps4, sig2, weight = _mixed_lj(crystal, params)
    scale = supercell_scale(crystal, params.cutoff)
    n_super = len(frac) * int(scale.prod())
    if n_super > MAX_SUPERCELL_ATOMS:
        raise StructureTooLargeError(
            f"{crystal.name}: the {'×'.join(map(str, scale))} minimum-image supercell holds {n_super} atoms "
            f"(limit {MAX_SUPERCELL_ATOMS})"
        )
    supercell = crystal.lattice * scale[:, None]
    # Atom positions in supercell-fractional coordinates, one entry per image in the supercell.
    shifts = np.stack(np.meshgrid(*(np.arange(s) for s in scale), indexing="ij"), -1).reshape(-1, 3)
    atoms = ((np.mod(frac, 1.0)[None, :, :] + shifts[:, None, :]) / scale).reshape(-1, 3)
    per_atom = [np.tile(x, len(shifts)) for x in (eps4, sig2, weight)]
    metric = supercell @ supercell.T
    n = params.grid_size
    if params.cubic_box is None:
        widths = crystal.widths * scale  # perpendicular widths of the supercell
        offsets = _box_offsets(widths, n, params.cutoff)
        if dev.type == "cpu" and engine == "auto":
            return _scatter_cpu(atoms, per_atom, metric, offsets, n, params.cutoff, threads)
        energy = _supercell_grid(*_tensors(dev, atoms, *per_atom, metric), offsets, n, params.cutoff)
    else:
        axis = np.arange(n) * (params.cubic_box / n) - params.cubic_box / 2
        points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        points_frac = points @ np.linalg.inv(supercell)
        energy = _dense_grid(*_tensors(dev, points_frac, atoms, *per_atom, metric), params.cutoff).reshape(n, n, n)
    return energy.cpu().numpy()


def _scatter_cpu(atoms: np.ndarray, per_atom: list[np.ndarray], metric: np.ndarray,
                 offsets: list[np.ndarray], n: int, cutoff: float, threads: int | None) -> np.ndarray:
    """Run the numba kernel over atom slices on threads (it releases the GIL) and add the partial grids."""
    from models._lj_kernel import scatter_lj

    workers = max(1, min(threads or os.cpu_count() or 1, len(atoms) // 64 or 1))
    bounds = np.linspace(0, len(atoms), workers + 1).astype(int)

    def part(k: int) -> np.ndarray:
        sl = slice(bounds[k], bounds[k + 1])
        return scatter_lj(atoms[sl], *(x[sl] for x in per_atom), metric, *offsets, n, cutoff ** 2, _OVERLAP_R2)

    if workers == 1:
        return part(0)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(part, range(workers)))  # type: ignore[return-value]


def _tensors(device: torch.device, *arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.as_tensor(a, dtype=torch.float64, device=device) for a in arrays]


def _pair_energy(r2: torch.Tensor, eps4: torch.Tensor, sig2: torch.Tensor, weight: torch.Tensor,
                 cutoff2: float) -> torch.Tensor:
    """Weighted LJ energy (K) of pairs at squared distance r2 (Å²); 0 beyond the cut-off, +∞ on overlap."""
    sr6 = (sig2 / r2) ** 3
    e = weight * eps4 * (sr6 * sr6 - sr6)
    e = torch.where(r2 <= cutoff2, e, torch.zeros((), dtype=e.dtype, device=e.device))
    return torch.where(r2 < _OVERLAP_R2, torch.full((), math.inf, dtype=e.dtype, device=e.device), e)


def _quadratic(metric: torch.Tensor, u0: torch.Tensor, u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Squared length Σ g_ab u_a u_b of broadcastable fractional offsets."""
    return (metric[0, 0] * u0 * u0 + metric[1, 1] * u1 * u1 + metric[2, 2] * u2 * u2
            + 2.0 * (metric[0, 1] * u0 * u1 + metric[0, 2] * u0 * u2 + metric[1, 2] * u1 * u2))


def _box_offsets(widths: np.ndarray, n: int, cutoff: float) -> list[np.ndarray]:
    """Per axis, the grid-index offsets from an atom's nearest index that can lie within the cut-off."""
    offsets = []
    for w in widths:
        half = int(math.ceil(cutoff / w * n)) + 1
        offsets.append(np.arange(-half, half + 1) if 2 * half + 1 <= n else np.arange(n) - n // 2)
    return offsets


def _supercell_grid(atoms: torch.Tensor, eps4: torch.Tensor, sig2: torch.Tensor, weight: torch.Tensor,
                    metric: torch.Tensor, box_offsets: list[np.ndarray], n: int, cutoff: float) -> torch.Tensor:
    """Scatter each atom's energy over the grid indices within its cut-off box (torch, any device)."""
    dev = atoms.device
    offsets = [torch.as_tensor(o, device=dev) for o in box_offsets]
    box = math.prod(len(o) for o in offsets)
    nearest = torch.round(atoms * n).long()
    grid = torch.zeros(n ** 3, dtype=torch.float64, device=dev)
    chunk = max(1, _CHUNK_ELEMENTS // box)
    cutoff2 = cutoff * cutoff
    for start in range(0, len(atoms), chunk):
        sl = slice(start, start + chunk)
        idx, u = [], []
        for axis in range(3):
            i = nearest[sl, axis, None] + offsets[axis][None, :]  # (m, L_axis)
            d = i.double() / n - atoms[sl, axis, None]
            u.append(d - torch.round(d))
            idx.append(torch.remainder(i, n))
        u0, u1, u2 = u[0][:, :, None, None], u[1][:, None, :, None], u[2][:, None, None, :]
        r2 = _quadratic(metric, u0, u1, u2)
        e = _pair_energy(r2, eps4[sl, None, None, None], sig2[sl, None, None, None],
                         weight[sl, None, None, None], cutoff2)
        flat = (idx[0][:, :, None, None] * (n * n) + idx[1][:, None, :, None] * n + idx[2][:, None, None, :])
        inside = r2 <= cutoff2
        grid.index_add_(0, flat[inside], e[inside])
    return grid.reshape(n, n, n)


def _dense_grid(points: torch.Tensor, atoms: torch.Tensor, eps4: torch.Tensor, sig2: torch.Tensor,
                weight: torch.Tensor, metric: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Energy at arbitrary points (supercell-fractional), all atoms by minimum image."""
    out = torch.empty(len(points), dtype=torch.float64, device=points.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, len(atoms)))
    for start in range(0, len(points), chunk):
        d = points[start:start + chunk, None, :] - atoms[None, :, :]
        d = d - torch.round(d)
        r2 = _quadratic(metric, d[..., 0], d[..., 1], d[..., 2])
        out[start:start + chunk] = _pair_energy(r2, eps4, sig2, weight, cutoff * cutoff).sum(dim=1)
    return out


def boltzmann(energy: np.ndarray, temperature: float) -> np.ndarray:
    """exp(−V/T) as float32: 0 inside atoms (V = +∞), 1 in empty space, > 1 in attractive pockets."""
    with np.errstate(over="ignore"):
        return np.exp(-energy / temperature).astype(np.float32)


def compute_voxels(
    crystal: Crystal,
    params: VoxelParams | None = None,
    *,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Return the energy voxels of one crystal: float32 array of shape (n, n, n).

    With ``params.boltzmann`` (default) the values are exp(−V/T) (dimensionless);
    otherwise the raw energy V in K.

    Examples
    --------
    >>> import numpy as np
    >>> from models.structure import Crystal
    >>> argon = Crystal("Ar", np.eye(3) * 4.0, np.zeros((1, 3)), ((("Ar", 1.0),),))
    >>> grid = compute_voxels(argon, VoxelParams(grid_size=5), device="cpu")
    >>> grid.shape, grid.dtype, float(grid[0, 0, 0])
    ((5, 5, 5), dtype('float32'), 0.0)
    """
    params = params or VoxelParams()
    energy = energy_grid(crystal, params, device=device, threads=threads)
    if params.boltzmann:
        return boltzmann(energy, params.temperature)
    return energy.astype(np.float32)


def compute_voxels_batch(
    crystals: Iterable[Crystal],
    params: VoxelParams | None = None,
    *,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> np.ndarray:
    """Voxelize many crystals on one device; float32 array of shape (N, n, n, n)."""
    params = params or VoxelParams()
    grids: Sequence[np.ndarray] = [compute_voxels(c, params, device=device, threads=threads) for c in crystals]
    n = params.grid_size
    return np.stack(grids) if grids else np.zeros((0, n, n, n), dtype=np.float32)


def warm_up() -> None:
    """Compile (or load from numba's cache) the CPU kernel on a one-atom crystal, so the first real
    structure does not pay the ~1 s JIT compilation."""
    argon = Crystal("warm-up", np.eye(3) * 4.0, np.zeros((1, 3)), ((("Ar", 1.0),),))
    energy_grid(argon, VoxelParams(grid_size=4), device="cpu", threads=1)
