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

from models.design import quantities_of
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


@dataclass
class MatchedDesign:
    """A designed landscape scored by the predictor, with its nearest real structures.

    Attributes
    ----------
    design : Design
    predicted, sigma : np.ndarray (m,)
        The target's quantities predicted for the landscape and their σ (NaN without a calibration).
    in_domain : bool or None
    nearest : list of (name, distance)
        Nearest library structures in the predictor's fingerprint space (standardized as its domain).
    """

    design: Design
    predicted: np.ndarray
    sigma: np.ndarray
    in_domain: bool | None
    nearest: list[tuple[str, float]]


def design_and_match(vae: GridVAE, loaded: object, quantities: np.ndarray, target: Sequence[float],
                     tolerance: Sequence[float], library_names: Sequence[str] | None,
                     library_fingerprints: np.ndarray | None, *, designs: int = 1, particles: int = 16,
                     iterations: int = 20, seed: int = 0, clip: float = DEFAULT_CLIP,
                     nearest: int = 5) -> list[MatchedDesign]:
    """Design landscapes for ``loaded`` (a :class:`models.artifacts.LoadedModel`), score them with its calibrated
    σ and domain, and find each one's nearest real structures among the library's fingerprints."""
    from models.uncertainty import Domain

    found = design_landscapes(vae, loaded.model, loaded.standardizer, quantities, target, tolerance,  # type: ignore[attr-defined]
                              designs=designs, particles=particles, iterations=iterations, seed=seed, clip=clip)
    detailed = loaded.predict_detailed(np.stack([d.grid for d in found]))  # type: ignore[attr-defined]
    values, sigma = quantities_of(detailed.values, detailed.sigma, quantities)
    matches: list[list[tuple[str, float]]] = [[] for _ in found]
    domain = getattr(loaded, "domain", None)
    if domain is not None and library_names is not None and library_fingerprints is not None:
        library = Domain(fingerprints=domain.standardize(np.asarray(library_fingerprints, dtype=np.float64)),
                         mean=domain.mean, std=domain.std, names=[str(n) for n in library_names],
                         labels=np.zeros(len(library_names)), threshold=domain.threshold, k=nearest)
        dist, idx = library.nearest(detailed.fingerprints)
        matches = [[(library.names[j], float(d)) for d, j in zip(dist[i], idx[i], strict=True)]
                   for i in range(len(found))]
    return [MatchedDesign(d, values[i], sigma[i], None if detailed.in_domain is None else bool(detailed.in_domain[i]),
                          matches[i]) for i, d in enumerate(found)]


__all__ = ["PRIOR_WEIGHT", "Design", "MatchedDesign", "design_and_match", "design_landscapes"]
