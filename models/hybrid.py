"""RetNet averaged with Extra Trees on exact descriptors of the same structure (pure computation, no IO).

The network reads the energy image (and the crystal density); a tree ensemble reads the energy histogram of the
same grid, the crystal density and the grid's per-mass quantities (:data:`TREE_FEATURES`, computed by
:func:`models.descriptors.descriptor_matrix`: nothing beyond what serving already has). Their errors differ,
so their weighted mean beats either alone (README, Model). The weight is chosen on held-out labels
(:func:`choose_weight`: the validation split, or out-of-fold curves for the isotherm model), the trees never see
those labels (:func:`fit_trees`), and σ is calibrated on the blend (:meth:`HybridTrees.combine`). An isotherm
model's trees predict its whole curve (:class:`models.curve_trees.CurveTrees`), blended at one weight for every
pressure, so the blend stays non-decreasing in pressure.

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

from models.curve_trees import CurveTrees
from models.descriptors import NEEDS_DENSITY, crystal_blocks_of, descriptor_matrix
from models.trees import TreeArrays, fit_trees

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


def choose_weight(y_true: np.ndarray, network: np.ndarray, trees: np.ndarray,
                  scales: np.ndarray | None = None) -> float:
    """The network's weight in [0, 1] (:data:`WEIGHT_GRID`) minimising the squared error of the blend on
    held-out labels (ties: the larger weight, the network).

    ``y_true``, ``network`` and ``trees`` are (N,) or, for a curve, (N, k) with NaN where a label is missing
    (ignored); each output's error is divided by its ``scales`` entry (k,) when given (as the isotherm heads'
    loss, so that high pressures' larger uptakes do not drown the others; the labels' unit). One weight serves
    every output: a convex blend of two monotone curves is monotone. The mean runs over every labelled point, so
    an output labelled for more structures weighs more.
    """
    y, net, tree = (np.asarray(a, dtype=np.float64) for a in (y_true, network, trees))
    if y.ndim == 1:
        y = y[:, None]
    net, tree = (a.reshape(y.shape) if a.size == y.size else a for a in (net, tree))
    if net.shape != y.shape or tree.shape != y.shape:
        raise ValueError(f"labels {y.shape}, network {net.shape} and trees {tree.shape} must have one shape")
    scale = np.ones(y.shape[1]) if scales is None else np.asarray(scales, dtype=np.float64).reshape(-1)
    if scale.shape != (y.shape[1],) or not np.all(scale > 0):
        raise ValueError(f"need one positive scale per output ({y.shape[1]}), got {scale}")
    labelled = np.isfinite(y)
    if not labelled.any():
        raise ValueError("no held-out label to choose the weight on")
    if not (np.isfinite(net[labelled]).all() and np.isfinite(tree[labelled]).all()):
        raise ValueError("the network's and the trees' predictions must be finite where a label is")
    errors = [float(np.mean((((w * net + (1 - w) * tree - y) / scale)[labelled]) ** 2)) for w in WEIGHT_GRID]
    best = min(errors)
    return float(max(w for w, e in zip(WEIGHT_GRID, errors, strict=True) if e <= best * (1 + 1e-12)))


@dataclass(frozen=True)
class HybridTrees:
    """The trees of a hybrid model and how they are blended with its network.

    Attributes
    ----------
    trees : TreeArrays or CurveTrees
        One output's ensemble, or a whole isotherm's (:class:`models.curve_trees.CurveTrees`, monotone).
    weight : float
        The network's weight w: value = w · network mean + (1 − w) · trees.
    features : tuple of str
        The descriptor blocks the trees read (:data:`TREE_FEATURES`).
    """

    trees: TreeArrays | CurveTrees
    weight: float
    features: tuple[str, ...] = TREE_FEATURES

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"the network's weight must lie in [0, 1], got {self.weight}")

    @property
    def n_outputs(self) -> int:
        """Outputs the trees predict (k pressures for a curve, else 1)."""
        return self.trees.n_outputs

    def predict_trees(self, rows: np.ndarray) -> np.ndarray:
        """The trees alone for rows (N, m) → (N, :attr:`n_outputs`), the labels' unit."""
        return self.trees.predict(rows).reshape(len(rows), self.n_outputs)

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
        """(values (N, k), spread (N, k)) from the network members' outputs (n, N, k) and the trees' rows.

        The spread is the standard deviation of the members' outputs and the trees' prediction together: it
        grows where the networks disagree with each other and where the network disagrees with the trees.
        """
        return self.combine_predictions(members, self.predict_trees(rows))

    def combine_predictions(self, members: np.ndarray, by_trees: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`combine` from the trees' predictions (N, k) instead of their rows (e.g. out-of-fold trees)."""
        members = np.asarray(members, dtype=np.float64)
        if members.ndim != 3 or members.shape[2] != self.n_outputs:
            raise ValueError(f"these trees predict {self.n_outputs} output(s); members have shape {members.shape}")
        tree = np.asarray(by_trees, dtype=np.float64).reshape(1, *members.shape[1:])
        spread = np.concatenate([members, tree]).std(axis=0, ddof=1)
        return self._mix(members.mean(axis=0), tree[0]), spread

    def blend(self, network: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """w · ``network`` + (1 − w) · the trees' predictions for ``rows``; ``network`` (N,) or (N, k), shape kept."""
        network = np.asarray(network, dtype=np.float64)
        return self._mix(network, self.predict_trees(rows).reshape(network.shape))

    def _mix(self, network: np.ndarray, by_trees: np.ndarray) -> np.ndarray:
        """w · network + (1 − w) · trees, element by element (same shapes)."""
        return self.weight * network + (1.0 - self.weight) * by_trees

    def card_entry(self, sha256: str, **extra: Any) -> dict[str, Any]:
        """The model card's ``trees`` field."""
        curve = ({"outputs": self.n_outputs, "anchor": self.trees.anchor}
                 if isinstance(self.trees, CurveTrees) else {})
        return {**extra, "file": TREES_FILE, "sha256": sha256, "weight": self.weight, "features": list(self.features),
                "n_trees": self.trees.n_trees, "n_features": self.trees.n_features, **curve}
