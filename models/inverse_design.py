"""Inverse design with a generator: search a VAE's latent space for energy landscapes the predictor scores on target.

For each design, a particle swarm (:func:`models.swarm.particle_swarm`, its own seed) minimises

    cost(z) = mean_q ((f_q(decode(z)) − target_q) / tolerance_q)² + prior · mean(z²)

where f_q are the predictor's quantities (its outputs, or a curve's deliverable capacity) of the decoded,
standardized grid and the prior term keeps codes where the VAE was trained (a standard normal). Given the
predictor's applicability domain (:class:`models.uncertainty.Domain`), the cost adds

    domain_weight · max(0, score(decode(z)) / threshold − margin)²

where score is the landscape's domain score (mean fingerprint distance to its nearest training structures): the
swarm is pulled to landscapes the predictor recognises, where its value and σ mean something (a VAE's decoded
grids are smoother than real ones, and without this term every design fell outside the domain). A predictor that
reads the crystal density gets one more coordinate ε: the design's density is ln ρ = head(z) + s·ε
(:class:`models.generator.DensityHead`, p(ln ρ | z) fitted on real grids), ε under the same prior. The designed
grids are returned in raw units (Boltzmann factors, :func:`models.generator.from_generator_space`), ready for
``np.save``, for the predictor's ``predict_detailed`` and for the nearest real structures.

Pure computation on torch modules and arrays; storage and jobs are the service's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from models.descriptors import DescriptorSpec
from models.design import quantities_of
from models.generator import DEFAULT_CLIP, DensityHead, GridVAE, from_generator_space
from models.hybrid import HybridTrees
from models.swarm import particle_swarm
from models.uncertainty import Domain
from models.units import mol_per_kg_to_cm3_stp_per_cm3

#: Weight of the prior term (mean z²) in the swarm's cost.
PRIOR_WEIGHT = 0.05
#: Weight of the domain term: a domain score 10 % over ``DOMAIN_MARGIN`` × threshold costs as much as missing the
#: target by one tolerance.
DOMAIN_WEIGHT = 100.0
#: Designs are pulled below this fraction of the in-domain threshold (a margin: the threshold is a 95th percentile).
DOMAIN_MARGIN = 0.9


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
    density_g_cm3 : float or None
        The design's crystal density (g/cm³) for a predictor that reads it (None: a grid-only predictor).
    """

    grid: np.ndarray
    latent: np.ndarray
    cost: float
    history: list[float]
    density_g_cm3: float | None = None


def design_landscapes(vae: GridVAE, predictor: torch.nn.Module, standardizer: object,
                      quantities: np.ndarray, target: Sequence[float],
                      tolerance: Sequence[float], *, designs: int = 3, particles: int = 24, iterations: int = 30,
                      seed: int = 0, clip: float = DEFAULT_CLIP, descriptors: DescriptorSpec | None = None,
                      density: DensityHead | None = None, volumetric: bool = False,
                      domain: Domain | None = None, start: np.ndarray | None = None,
                      trees: HybridTrees | None = None) -> list[Design]:
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
    descriptors : DescriptorSpec, optional
        The crystal descriptors the predictor reads beside the grid (its card's); a density needs ``density``.
    density : DensityHead, optional
        p(ln ρ | z) of the generator, for a predictor that reads the density.
    volumetric : bool
        Target and tolerance in cm³(STP)/cm³: the predictions (mol/kg) are converted with each design's density
        (needs a density: a predictor that reads it).
    domain : Domain, optional
        The predictor's applicability domain (its members' fingerprints): adds the domain term to the cost.
    start : np.ndarray (n, latent_dim [+ 1]), optional
        Swarm coordinates to start particles at (codes of real structures,
        :meth:`models.generator.LatentCodes.start`; with a density, the last column is ε); design i starts from
        rows i, i + designs, … (each swarm from different ones).
    trees : HybridTrees, optional
        A hybrid predictor's trees: the swarm scores the same blend that serving reports.
    """
    weights = torch.as_tensor(np.asarray(quantities, dtype=np.float32))
    t = torch.as_tensor(np.asarray(target, dtype=np.float32))
    tol = torch.as_tensor(np.asarray(tolerance, dtype=np.float32))
    with_density = ((descriptors is not None and descriptors.needs_density)
                    or (trees is not None and trees.needs_density))
    if with_density and density is None:
        raise ValueError("the predictor reads the crystal density: the generator needs a density head")
    if volumetric and not with_density:
        raise ValueError("a volumetric target needs each design's density: a predictor that reads it")
    latent = vae.latent_dim
    vae.eval()
    predictor.eval()

    def decoded(z: np.ndarray) -> tuple[torch.Tensor, np.ndarray | None, torch.Tensor | None]:
        """Raw grids (B, 1, n, n, n), densities (B,) g/cm³ or None, standardized descriptors or None."""
        raw = from_generator_space(vae.decode(torch.as_tensor(z[:, :latent], dtype=torch.float32)), clip)
        rho = np.exp(density.log_density(z[:, :latent], z[:, latent])) if with_density else None  # type: ignore[union-attr]
        described = None if descriptors is None else torch.as_tensor(descriptors.compute(raw[:, 0].numpy(), rho))
        return raw, rho, described

    def cost(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            raw, rho, described = decoded(z)
            inputs = (standardizer(raw),) if described is None else (standardizer(raw), described)  # type: ignore[operator]
            if domain is None:
                outputs = predictor(*inputs)
                outside = np.zeros(len(z))
            else:
                fingerprints, members = predictor.member_outputs(*inputs)  # (n, B, 20), (n, B, k)
                outputs = members.mean(dim=0)
                score = domain.score(fingerprints.permute(1, 0, 2).reshape(len(z), -1).double().numpy())
                outside = np.maximum(score / domain.threshold - DOMAIN_MARGIN, 0.0) ** 2
            if trees is not None:  # the blend serving reports
                rows = trees.features_of(raw[:, 0].numpy(), rho)
                outputs = torch.as_tensor(trees.blend(outputs.double().numpy(), rows), dtype=outputs.dtype)
            q = outputs @ weights
            if volumetric:
                q = q * torch.as_tensor(mol_per_kg_to_cm3_stp_per_cm3(1.0, rho), dtype=q.dtype)[:, None]
            off = (((q - t) / tol) ** 2).mean(dim=1)
            prior = torch.as_tensor(z, dtype=torch.float32).pow(2).mean(dim=1)  # z and ε alike
            return (off + PRIOR_WEIGHT * prior).double().numpy() + DOMAIN_WEIGHT * outside

    out = []
    for i in range(designs):
        best, value, history = particle_swarm(cost, latent + (1 if with_density else 0), particles=particles,
                                              iterations=iterations, seed=seed + i,
                                              start=None if start is None else start[i::designs])
        with torch.no_grad():
            raw, rho, _ = decoded(best[None])
        out.append(Design(raw[0, 0].numpy().astype(np.float32), best.astype(np.float32), value, history,
                          None if rho is None else float(rho[0])))
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


def landscape_trees(loaded: object) -> HybridTrees | None:
    """The trees that score designed landscapes as serving scores crystals: a hybrid's trees, unless they read a
    crystal block (``ch4_widom``: numbers of the crystal itself, which a landscape does not have); then the
    network alone scores the designs."""
    trees = getattr(loaded, "trees", None)
    return None if trees is None or trees.crystal_blocks else trees


def design_and_match(vae: GridVAE, loaded: object, quantities: np.ndarray, target: Sequence[float],
                     tolerance: Sequence[float], library_names: Sequence[str] | None,
                     library_fingerprints: np.ndarray | None, *, designs: int = 1, particles: int = 16,
                     iterations: int = 20, seed: int = 0, clip: float = DEFAULT_CLIP,
                     nearest: int = 5, density: DensityHead | None = None,
                     volumetric: bool = False, keep_in_domain: bool = True,
                     start: np.ndarray | None = None) -> list[MatchedDesign]:
    """Design landscapes for ``loaded`` (a :class:`models.artifacts.LoadedModel`), score them with its calibrated
    σ and domain, and find each one's nearest real structures among the library's fingerprints (``density``: the
    generator's density head, for a predictor that reads the crystal density; ``volumetric``: target, values and
    σ in cm³(STP)/cm³, converted with each design's density; ``keep_in_domain``: the swarm's cost has the domain
    term when the model has a domain; ``start``: swarm coordinates to start from, as :func:`design_landscapes`)."""
    trees = landscape_trees(loaded)
    found = design_landscapes(vae, loaded.model, loaded.standardizer, quantities, target, tolerance,  # type: ignore[attr-defined]
                              designs=designs, particles=particles, iterations=iterations, seed=seed, clip=clip,
                              descriptors=loaded.card.descriptor_spec, density=density,  # type: ignore[attr-defined]
                              volumetric=volumetric,
                              domain=getattr(loaded, "domain", None) if keep_in_domain else None, start=start,
                              trees=trees)
    densities = [d.density_g_cm3 for d in found] if found and found[0].density_g_cm3 is not None else None
    detailed = loaded.predict_detailed(np.stack([d.grid for d in found]), densities_g_cm3=densities,  # type: ignore[attr-defined]
                                       network_only=trees is None)
    values, sigma = quantities_of(detailed.values, detailed.sigma, quantities)
    if volumetric:
        factor = mol_per_kg_to_cm3_stp_per_cm3(1.0, np.asarray(densities, dtype=np.float64))[:, None]
        values, sigma = values * factor, sigma * factor
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


__all__ = ["DOMAIN_MARGIN", "DOMAIN_WEIGHT", "PRIOR_WEIGHT", "Design", "MatchedDesign", "design_and_match",
           "design_landscapes"]
