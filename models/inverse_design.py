"""Inverse design with a generator: search a VAE's latent space for energy landscapes the predictor scores on target.

For each design, a particle swarm (:func:`models.swarm.particle_swarm`, its own seed) minimises

    cost(z) = mean_q ((f_q(decode(z)) − target_q) / tolerance_q)² + prior · mean(z²)

where f_q are the predictor's quantities (its outputs, or a curve's deliverable capacity) of the decoded,
standardized grid and the prior term keeps codes where the VAE was trained (a standard normal). The designed
grids are returned in raw units (Boltzmann factors, :func:`models.generator.from_generator_space`), ready for
``np.save``, for the predictor's ``predict_detailed`` and for the nearest real structures.

Pure computation on torch modules and arrays; storage and jobs are the service's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.generator import DEFAULT_CLIP, GridVAE, from_generator_space
from models.swarm import particle_swarm

#: Weight of the prior term (mean z²) in the swarm's cost.
PRIOR_WEIGHT = 0.05


@dataclass
class Design:
    """One designed landscape.

    Attributes
    ----------
    grid : np.ndarray (25, 25, 25) float32
        Raw energy grid (Boltzmann factors).
    latent : np.ndarray (latent_dim,)
    cost : float
        The swarm's final cost (0: on target with a code at the prior's centre).
    history : list of float
        Best cost per swarm iteration.
    """

    grid: np.ndarray
    latent: np.ndarray
    cost: float
    history: list[float]


def design_landscapes(vae: GridVAE, predictor: torch.nn.Module, standardizer: object,
                      quantities: np.ndarray, target: Sequence[float],
                      tolerance: Sequence[float], *, designs: int = 3, particles: int = 24, iterations: int = 30,
                      seed: int = 0, clip: float = DEFAULT_CLIP) -> list[Design]:
    """Run ``designs`` independent swarms and decode their best codes.

    Parameters
    ----------
    vae : GridVAE
        Trained on grids of the predictor's voxel parameters (in generator space).
    predictor : torch.nn.Module
        A RetNet-like model (``forward`` on standardized grids → (B, k) outputs, label units).
    standardizer : models.transforms.Standardizer
        The predictor's input standardization (applied to each decoded raw grid).
    quantities : np.ndarray (k, m)
        The target's m quantities as combinations of the k outputs: ``outputs @ quantities`` (a column with one
        1 picks an output; +1 at 65 bar and −1 at 5.8 bar is the deliverable capacity).
    target, tolerance : sequence of float, length m
    """
    weights = torch.as_tensor(np.asarray(quantities, dtype=np.float32))
    t = torch.as_tensor(np.asarray(target, dtype=np.float32))
    tol = torch.as_tensor(np.asarray(tolerance, dtype=np.float32))
    vae.eval()
    predictor.eval()

    def cost(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            codes = torch.as_tensor(z, dtype=torch.float32)
            raw = from_generator_space(vae.decode(codes), clip)
            q = predictor(standardizer(raw)) @ weights  # type: ignore[operator]
            off = (((q - t) / tol) ** 2).mean(dim=1)
            return (off + PRIOR_WEIGHT * (codes**2).mean(dim=1)).double().numpy()

    out = []
    for i in range(designs):
        best, value, history = particle_swarm(cost, vae.latent_dim, particles=particles, iterations=iterations,
                                              seed=seed + i)
        with torch.no_grad():
            raw = from_generator_space(vae.decode(torch.as_tensor(best[None], dtype=torch.float32)), clip)
        out.append(Design(raw[0, 0].numpy().astype(np.float32), best.astype(np.float32), value, history))
    return out


__all__ = ["PRIOR_WEIGHT", "Design", "design_landscapes"]
