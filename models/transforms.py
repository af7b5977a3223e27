"""Input transforms for RetNet: scalar standardization and symmetry augmentation.

DESIGN.md §4. Grids are standardized with one scalar mean and standard deviation
computed over every voxel of the training grids (stored with the model). During
training each sample may be replaced by one of the grid symmetries: identity, a
90° rotation about a random axis in a random direction, a flip along a random
axis, or a reflection (transpose) in a random plane. All of them permute voxel
values and never change the input in place.

Examples
--------
>>> import torch
>>> grids = torch.arange(16.0).reshape(2, 1, 2, 2, 2)
>>> std = Standardizer.fit(grids)
>>> std.mean, round(std.std, 4)
(7.5, 4.6098)
>>> abs(float(std(grids).mean())) < 1e-6
True
>>> random_symmetry(grids, torch.Generator().manual_seed(0)).shape
torch.Size([2, 1, 2, 2, 2])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: The four kinds of augmentation, drawn with equal probability per sample.
SYMMETRY_KINDS: tuple[str, ...] = ("identity", "rotation", "flip", "transpose")
SymmetryKind = Literal["identity", "rotation", "flip", "transpose"]
#: Samples per chunk when fitting a standardizer (bounds float64 temporaries).
_FIT_CHUNK = 256
#: Spatial dimensions of a (B, 1, n, n, n) batch, and of one (1, n, n, n) sample.
_PLANES = ((1, 2), (0, 2), (0, 1))


@dataclass(frozen=True)
class Standardizer:
    """Scalar input standardization x ↦ (min(x, clip) − mean) / std.

    Parameters
    ----------
    mean : float
        Mean voxel value of the (clipped) training grids (voxel units: dimensionless Boltzmann factor, or K).
    std : float
        Population standard deviation of the (clipped) training voxels; finite and > 0.
    clip : float or None
        Upper bound applied to voxel values before standardizing, None for none. Boltzmann factors of a
        few strongly binding pockets reach 10⁶ (one structure in ~2,000 CoRE MOFs) and would otherwise
        dominate the standard deviation and the batch statistics.
    """

    mean: float
    std: float
    clip: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.mean):
            raise ValueError(f"standardizer mean must be finite, got {self.mean}")
        if not (math.isfinite(self.std) and self.std > 0.0):
            raise ValueError(f"standardizer std must be finite and > 0, got {self.std}")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0.0):
            raise ValueError(f"standardizer clip must be finite and > 0, got {self.clip}")

    @classmethod
    def fit(cls, grids: np.ndarray | torch.Tensor, clip: float | None = None) -> Standardizer:
        """Compute mean and std over every voxel of ``grids`` (any shape, e.g. (N, n, n, n)), clipped at ``clip``.

        Accumulates in float64 chunk by chunk (Chan et al. pairwise update), so large
        float32 data sets are not copied whole. A constant data set gets std = 1.
        """
        values = grids.detach().cpu().numpy() if isinstance(grids, torch.Tensor) else np.asarray(grids)
        if values.size == 0:
            raise ValueError("cannot fit a standardizer on an empty array")
        chunks = values.reshape(values.shape[0], -1) if values.ndim > 1 else values.reshape(1, -1)
        count, mean, m2 = 0, 0.0, 0.0
        for start in range(0, chunks.shape[0], _FIT_CHUNK):
            block = chunks[start : start + _FIT_CHUNK].astype(np.float64).ravel()
            if clip is not None:
                block = np.minimum(block, clip)
            if not np.all(np.isfinite(block)):
                raise ValueError("grids contain non-finite values; standardize Boltzmann-factor grids")
            b_count, b_mean = block.size, float(block.mean())
            b_m2 = float(np.square(block - b_mean).sum())
            delta = b_mean - mean
            total = count + b_count
            mean += delta * b_count / total
            m2 += b_m2 + delta * delta * count * b_count / total
            count = total
        std = math.sqrt(m2 / count)
        return cls(mean=mean, std=std if std > 0.0 else 1.0, clip=clip)

    def __call__(self, grids: ArrayT) -> ArrayT:
        """Return a clipped, standardized copy (same type; numpy results are float32)."""
        if isinstance(grids, torch.Tensor):
            if self.clip is not None:
                grids = torch.clamp(grids, max=self.clip)
            return (grids - self.mean) / self.std
        values = np.asarray(grids, dtype=np.float64)
        if self.clip is not None:
            values = np.minimum(values, self.clip)
        return ((values - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, float]:
        """Return ``{"mean": ..., "std": ...}`` plus ``"clip"`` when set (JSON-serializable)."""
        out = {"mean": float(self.mean), "std": float(self.std)}
        if self.clip is not None:
            out["clip"] = float(self.clip)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, float | None]) -> Standardizer:
        """Inverse of :meth:`to_dict`."""
        clip = data.get("clip")
        return cls(mean=float(data["mean"]), std=float(data["std"]),  # type: ignore[arg-type]
                   clip=None if clip is None else float(clip))


def _check_batch(batch: torch.Tensor) -> None:
    shape = tuple(batch.shape)
    if batch.dim() != 5 or shape[1] != 1 or not (shape[2] == shape[3] == shape[4]):
        raise ValueError(f"expected a batch of cubic one-channel grids (B, 1, n, n, n), got shape {shape}")


def apply_symmetry(sample: torch.Tensor, kind: SymmetryKind, axis: int = 0, direction: int = 1) -> torch.Tensor:
    """Apply one grid symmetry to a single sample (returns a new tensor).

    Parameters
    ----------
    sample : torch.Tensor, shape (1, n, n, n)
    kind : {"identity", "rotation", "flip", "transpose"}
    axis : {0, 1, 2}
        Spatial axis: rotation axis, flip axis, or the axis normal to the transpose plane.
    direction : {1, -1}
        Rotation sense (rot90 with k = 1 or k = −1); ignored otherwise.
    """
    dims = tuple(d + 1 for d in _PLANES[axis])
    if kind == "identity":
        return sample.clone()
    if kind == "rotation":
        return torch.rot90(sample, k=direction, dims=dims)
    if kind == "flip":
        return torch.flip(sample, dims=(axis + 1,))
    if kind == "transpose":
        return sample.transpose(*dims).contiguous()
    raise ValueError(f"unknown symmetry {kind!r}; expected one of {SYMMETRY_KINDS}")


def random_symmetry(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply to each sample one random symmetry drawn uniformly from :data:`SYMMETRY_KINDS`.

    Parameters
    ----------
    batch : torch.Tensor, shape (B, 1, n, n, n)
        Grids (any device); not modified.
    generator : torch.Generator
        CPU generator for the draws (kind, axis in {0, 1, 2}, direction ±1).

    Returns
    -------
    torch.Tensor, shape (B, 1, n, n, n)
        A new tensor; sample i is a permutation of the voxels of ``batch[i]``.
    """
    _check_batch(batch)
    size = batch.shape[0]
    kinds = torch.randint(len(SYMMETRY_KINDS), (size,), generator=generator).tolist()
    axes = torch.randint(3, (size,), generator=generator).tolist()
    directions = (torch.randint(2, (size,), generator=generator) * 2 - 1).tolist()
    if size == 0:
        return batch.clone()
    return torch.stack(
        [
            apply_symmetry(batch[i], SYMMETRY_KINDS[kinds[i]], axes[i], directions[i])  # type: ignore[arg-type]
            for i in range(size)
        ]
    )


def random_translation(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shift each sample periodically by a random whole number of voxels along every axis.

    The grid samples the periodic supercell at fractional positions i/n, so a circular
    shift by k voxels is the same crystal translated by k/n of the supercell: an exact
    symmetry of the adsorption property, unlike the rotations and reflections of
    :func:`random_symmetry`, which are exact only for cubic cells.

    Parameters
    ----------
    batch : torch.Tensor, shape (B, 1, n, n, n)
        Grids (any device); not modified.
    generator : torch.Generator
        CPU generator for the shifts (three integers in [0, n) per sample).

    Returns
    -------
    torch.Tensor, shape (B, 1, n, n, n)
        A new tensor; sample i is ``batch[i]`` rolled by its three shifts.
    """
    _check_batch(batch)
    size, n = batch.shape[0], batch.shape[-1]
    shifts = torch.randint(n, (size, 3), generator=generator).tolist()
    if size == 0:
        return batch.clone()
    return torch.stack([torch.roll(batch[i], shifts=tuple(shifts[i]), dims=(1, 2, 3)) for i in range(size)])
