"""RetNet averaged with Extra Trees on exact descriptors of the same structure (pure computation, no IO).

The network reads the energy image (and the crystal density); a tree ensemble reads the energy histogram of the
same grid, the crystal density and the grid's per-mass quantities (:data:`TREE_FEATURES`, computed by
:func:`models.descriptors.descriptor_matrix`: nothing beyond what serving already has). Their errors differ,
so their weighted mean beats either alone (README, Model). The weight is chosen on the validation split
(:func:`choose_weight`), the trees are fitted on the training split only (:func:`fit_trees`), and σ is
calibrated on the blend (:meth:`HybridTrees.combine`).

Examples
--------
>>> import numpy as np
>>> x = np.random.default_rng(0).random((40, 3)); y = x.sum(axis=1)
>>> trees = fit_trees(x, y, n_trees=10)
>>> hybrid = HybridTrees(trees, weight=0.5, features=("log_density",))
>>> values, spread = hybrid.combine(np.stack([y[:5, None], y[:5, None] + 0.2]), x[:5])
>>> values.shape, spread.shape
((5, 1), (5, 1))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.descriptors import NEEDS_DENSITY, crystal_blocks_of, descriptor_matrix
from models.trees import TreeArrays

#: Descriptor blocks the trees read: the 14-number energy histogram of the model's grid, ln ρ (g/cm³), the
#: grid's 4 per-mass quantities (``gravimetric_grid``; since retnet-ch4:9, chosen on the validation split: trees
#: alone +0.02–0.05 R² at 50–200 labels, level at full size) and the TraPPE CH4 probe's log10 K_H and Q_st⁰ of
#: the crystal itself (``ch4_widom``, a crystal block; since retnet-ch4:10, chosen on the validation split and on
#: cross-validation inside the training + validation structures: trees +0.01–0.02 R² at 50–all labels). A card
#: names its own, so older hybrids load as made.
TREE_FEATURES = ("energy_histogram", "log_density", "gravimetric_grid", "ch4_widom")
#: The crystal blocks among them: what training data for new trees must carry besides grids and densities.
TREE_CRYSTAL_BLOCKS = crystal_blocks_of(TREE_FEATURES)
#: Trees file inside a model folder.
TREES_FILE = "trees.npz"
#: Extra Trees settings: 200 trees of at least 2 structures per leaf (2.5 MB fitted on 1,046 structures, 4.1 MB
#: on 1,677; as accurate as 500 unpruned trees on v7's validation split, 5× smaller).
N_TREES = 200
MIN_SAMPLES_LEAF = 2
#: Fewest validation structures to choose the blend's weight on (else 0.5).
MIN_VALIDATION = 5
#: Network weights tried by :func:`choose_weight`.
WEIGHT_GRID = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


def tree_features(grids: np.ndarray, densities_g_cm3: Sequence[float | None] | np.ndarray | None,
                  names: Sequence[str] = TREE_FEATURES, crystal_blocks: Mapping[str, np.ndarray] | None = None
                  ) -> np.ndarray:
    """The trees' input rows, float64 (N, width): raw descriptors of raw grids (Boltzmann factors), densities and
    the crystal blocks among ``names`` (:func:`models.descriptors.descriptor_matrix`)."""
    return descriptor_matrix(tuple(names), np.asarray(grids), densities_g_cm3, crystal_blocks)


def fit_trees(x: np.ndarray, y: np.ndarray, *, n_trees: int = N_TREES, min_samples_leaf: int = MIN_SAMPLES_LEAF,
              seed: int = 0, jobs: int = 1) -> TreeArrays:
    """Fit Extra Trees on rows ``x`` (N, m) and labels ``y`` (N,), frozen into :class:`TreeArrays`."""
    from sklearn.ensemble import ExtraTreesRegressor

    y = np.asarray(y, dtype=np.float64).reshape(len(x), -1)
    if y.shape[1] != 1:
        raise ValueError("trees are fitted to one output; this label table has several")
    forest = ExtraTreesRegressor(n_estimators=n_trees, min_samples_leaf=min_samples_leaf, random_state=seed,
                                 n_jobs=jobs).fit(np.asarray(x, dtype=np.float64), y[:, 0])
    return TreeArrays.from_sklearn(forest)


def fit_hybrid(rows: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
               network_val: np.ndarray, *, jobs: int = 1,
               features: Sequence[str] = TREE_FEATURES) -> tuple[HybridTrees, str]:
    """Trees fitted on the training rows, blended at the weight that suits the validation rows best.

    ``rows`` (N, m) are every structure's tree inputs (:func:`tree_features`), ``y`` (N,) or (N, 1) the labels,
    ``network_val`` the network's predictions of the validation structures, ``features`` the descriptor blocks
    the rows hold. With fewer than :data:`MIN_VALIDATION` validation structures the weight is 0.5. Returns
    (hybrid, how the weight was chosen).
    """
    y = np.asarray(y, dtype=np.float64).reshape(len(rows), -1)
    trees = fit_trees(rows[train_idx], y[train_idx], jobs=jobs)
    if len(val_idx) < MIN_VALIDATION:
        return (HybridTrees(trees, 0.5, tuple(features)),
                f"fixed at 0.5 (fewer than {MIN_VALIDATION} validation structures)")
    weight = choose_weight(y[val_idx, 0], network_val, trees.predict(rows[val_idx]))
    return (HybridTrees(trees, weight, tuple(features)),
            f"lowest squared error of the blend on the validation split ({len(val_idx)})")


def choose_weight(y_true: np.ndarray, network: np.ndarray, trees: np.ndarray) -> float:
    """The network's weight in [0, 1] (:data:`WEIGHT_GRID`) minimising the squared error of the blend on
    held-out labels (ties: the larger weight, the network)."""
    y, net, tree = (np.asarray(a, dtype=np.float64).ravel() for a in (y_true, network, trees))
    errors = [float(np.mean((w * net + (1 - w) * tree - y) ** 2)) for w in WEIGHT_GRID]
    best = min(errors)
    return float(max(w for w, e in zip(WEIGHT_GRID, errors, strict=True) if e <= best * (1 + 1e-12)))


@dataclass(frozen=True)
class HybridTrees:
    """The trees of a hybrid model and how they are blended with its network.

    Attributes
    ----------
    trees : TreeArrays
    weight : float
        The network's weight w: value = w · network mean + (1 − w) · trees.
    features : tuple of str
        The descriptor blocks the trees read (:data:`TREE_FEATURES`).
    """

    trees: TreeArrays
    weight: float
    features: tuple[str, ...] = TREE_FEATURES

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"the network's weight must lie in [0, 1], got {self.weight}")

    @property
    def needs_density(self) -> bool:
        """Whether the trees read the crystal density."""
        return bool(NEEDS_DENSITY & set(self.features))

    @property
    def crystal_blocks(self) -> tuple[str, ...]:
        """The crystal blocks the trees read (:data:`models.descriptors.CRYSTAL_BLOCKS`): the caller supplies them."""
        return crystal_blocks_of(self.features)

    def features_of(self, grids: np.ndarray, densities_g_cm3: Sequence[float | None] | np.ndarray | None,
                    crystal_blocks: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """The trees' input rows for raw grids (N, 25, 25, 25), densities (g/cm³) and crystal blocks."""
        return tree_features(grids, densities_g_cm3, self.features, crystal_blocks)

    def combine(self, members: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values (N, 1), spread (N, 1)) from the network members' outputs (n, N, 1) and the trees' rows.

        The spread is the standard deviation of the members' outputs and the trees' prediction together: it
        grows where the networks disagree with each other and where the network disagrees with the trees.
        """
        members = np.asarray(members, dtype=np.float64)
        if members.ndim != 3 or members.shape[2] != 1:
            raise ValueError(f"a hybrid model has one output; members have shape {members.shape}")
        tree = self.trees.predict(rows)[None, :, None]
        values = self.blend(members.mean(axis=0), rows)
        spread = np.concatenate([members, tree]).std(axis=0, ddof=1)
        return values, spread

    def blend(self, network: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """w · ``network`` + (1 − w) · the trees' predictions for ``rows``; ``network`` (N,) or (N, 1), shape kept."""
        network = np.asarray(network, dtype=np.float64)
        by_trees = self.trees.predict(rows).reshape(network.shape)
        return self.weight * network + (1.0 - self.weight) * by_trees

    def card_entry(self, sha256: str, **extra: Any) -> dict[str, Any]:
        """The model card's ``trees`` field."""
        return {"file": TREES_FILE, "sha256": sha256, "weight": self.weight, "features": list(self.features),
                "n_trees": self.trees.n_trees, "n_features": self.trees.n_features, **extra}
