"""Particle-swarm optimisation (global-best, inertia weight), the search over a generator's latent space.

Pure numpy: ``objective`` takes a batch of points (P, d) and returns their costs (P,), so a swarm is one batched
call per iteration (one decoder + predictor forward pass in inverse design).

Examples
--------
>>> best, cost, _ = particle_swarm(lambda z: ((z - 1.0) ** 2).sum(axis=1), dim=3, seed=0)
>>> bool(abs(best - 1.0).max() < 1e-2)
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def particle_swarm(objective: Callable[[np.ndarray], np.ndarray], dim: int, *, particles: int = 32,
                   iterations: int = 60, bound: float = 3.0, inertia: float = 0.7, cognitive: float = 1.5,
                   social: float = 1.5, seed: int = 0, start: np.ndarray | None = None
                   ) -> tuple[np.ndarray, float, list[float]]:
    """Minimise ``objective`` over the box [−bound, bound]^dim.

    ``start`` (n, dim), optional: the first n particles start there (clipped to the box; at most ``particles``
    rows are used) instead of uniformly at random, e.g. at the codes of known good points.

    Returns
    -------
    best : np.ndarray (dim,)
        The best point found.
    cost : float
        Its cost.
    history : list of float
        The best cost after each iteration (non-increasing).
    """
    if dim < 1 or particles < 2 or iterations < 1 or bound <= 0:
        raise ValueError("need dim >= 1, particles >= 2, iterations >= 1 and bound > 0")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-bound, bound, size=(particles, dim))
    if start is not None and len(start):
        start = np.asarray(start, dtype=np.float64)[:particles]
        if start.ndim != 2 or start.shape[1] != dim:
            raise ValueError(f"start must be (n, {dim}), got {start.shape}")
        x[: len(start)] = np.clip(start, -bound, bound)
    v = rng.uniform(-bound, bound, size=(particles, dim)) * 0.1
    cost = np.asarray(objective(x), dtype=np.float64)
    own_best, own_cost = x.copy(), cost.copy()
    g = int(np.argmin(own_cost))
    history = [float(own_cost[g])]
    for _ in range(iterations):
        r1, r2 = rng.random((particles, dim)), rng.random((particles, dim))
        v = inertia * v + cognitive * r1 * (own_best - x) + social * r2 * (own_best[g] - x)
        x = np.clip(x + v, -bound, bound)
        cost = np.asarray(objective(x), dtype=np.float64)
        better = cost < own_cost
        own_best[better], own_cost[better] = x[better], cost[better]
        g = int(np.argmin(own_cost))
        history.append(float(own_cost[g]))
    return own_best[g].copy(), float(own_cost[g]), history


__all__ = ["particle_swarm"]
