"""A fitted regression-tree ensemble as plain arrays, and its prediction in NumPy (pure computation, no IO).

A hybrid model (:mod:`models.hybrid`) averages RetNet with Extra Trees on exact descriptors of the same
structure. The trees are fitted with scikit-learn and then frozen into flat arrays (:class:`TreeArrays`), saved
with ``numpy.savez`` (no pickle: a model file can never run code, and it loads with any scikit-learn version,
or none).

Every tree's nodes are stored one after the other; node ``i`` of the ensemble splits on ``feature[i]`` at
``threshold[i]`` (go ``left[i]`` when x ≤ threshold, else ``right[i]``, both absolute node indices), or is a
leaf (``left[i] == -1``) predicting ``value[i]``. ``roots[t]`` is the root of tree ``t``.

Examples
--------
>>> import numpy as np
>>> from sklearn.ensemble import ExtraTreesRegressor
>>> x = np.arange(20.0)[:, None]
>>> forest = ExtraTreesRegressor(n_estimators=5, random_state=0).fit(x, 2 * x[:, 0])
>>> trees = TreeArrays.from_sklearn(forest)
>>> bool(np.allclose(trees.predict(x), forest.predict(x)))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Extra Trees settings: 200 trees of at least 2 structures per leaf (2.5 MB fitted on 1,046 structures, 4.1 MB
#: on 1,677; as accurate as 500 unpruned trees on v7's validation split, 5× smaller).
N_TREES = 200
MIN_SAMPLES_LEAF = 2
_FIELDS = ("feature", "threshold", "left", "right", "value", "roots")


@dataclass(frozen=True)
class TreeArrays:
    """A regression-tree ensemble (mean of its trees) as flat node arrays.

    Attributes
    ----------
    feature : int32 (n_nodes,)
        Split feature of each node (unused at leaves).
    threshold : float64 (n_nodes,)
        Split threshold: x[feature] ≤ threshold goes left.
    left, right : int32 (n_nodes,)
        Absolute index of each node's children; −1 at leaves.
    value : float64 (n_nodes,)
        Leaf predictions, in the target's unit.
    roots : int32 (n_trees,)
        Root node of each tree.
    n_features : int
        Width of the input rows.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    n_features: int

    def __post_init__(self) -> None:
        """Refuse arrays that do not describe trees: traversal must end at a leaf of the same tree."""
        if any(getattr(self, f).ndim != 1 for f in _FIELDS):
            raise ValueError("tree arrays must be one-dimensional")
        n = len(self.value)
        if any(len(getattr(self, f)) != n for f in _FIELDS[:-1]):
            raise ValueError("tree arrays must all have one entry per node")
        if len(self.roots) == 0 or self.roots[0] != 0 or np.any(np.diff(self.roots) <= 0) or self.roots[-1] >= n:
            raise ValueError("tree roots must be increasing node indices, the first 0")
        if not np.all(np.isfinite(self.value)) or self.n_features < 1:
            raise ValueError("leaf values must be finite and trees need at least one feature")
        # each node's tree ends where the next tree's root begins; scikit-learn numbers children after parents,
        # so children in (node, end of its tree) guarantee that every path ends
        end = np.repeat(np.append(self.roots[1:], n), np.diff(np.append(self.roots, n)))
        node = np.arange(n)
        inner = self.left >= 0
        for children in (self.left, self.right):
            if np.any(inner & ((children <= node) | (children >= end))):
                raise ValueError("tree children must be later nodes of the same tree")
        if np.any(inner & (self.right < 0)):
            raise ValueError("an inner node needs both children")
        if inner.any() and (self.feature[inner].min() < 0 or self.feature[inner].max() >= self.n_features):
            raise ValueError(f"split features must lie in [0, {self.n_features})")

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return len(self.roots)

    @property
    def n_outputs(self) -> int:
        """Outputs predicted: one (a curve's trees are :class:`models.curve_trees.CurveTrees`)."""
        return 1

    @classmethod
    def from_sklearn(cls, forest: Any) -> TreeArrays:
        """Freeze a fitted scikit-learn single-output tree ensemble (``estimators_`` of regression trees)."""
        parts: dict[str, list[np.ndarray]] = {f: [] for f in _FIELDS[:-1]}
        roots, offset = [], 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            if tree.value.shape[1] != 1:
                raise ValueError("only single-output regression trees are supported")
            leaf = tree.children_left < 0
            roots.append(offset)
            parts["feature"].append(np.where(leaf, 0, tree.feature).astype(np.int32))
            parts["threshold"].append(tree.threshold.astype(np.float64))
            parts["left"].append(np.where(leaf, -1, tree.children_left + offset).astype(np.int32))
            parts["right"].append(np.where(leaf, -1, tree.children_right + offset).astype(np.int32))
            parts["value"].append(tree.value[:, 0, 0].astype(np.float64))
            offset += tree.node_count
        return cls(**{f: np.concatenate(v) for f, v in parts.items()}, roots=np.array(roots, dtype=np.int32),
                   n_features=int(forest.n_features_in_))

    def per_tree(self, x: np.ndarray) -> np.ndarray:
        """Every tree's prediction for rows ``x`` (N, n_features) → float64 (n_trees, N)."""
        # scikit-learn compares float32 inputs with its thresholds: the same rounding gives the same leaves
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {x.shape}")
        node = np.broadcast_to(self.roots[:, None], (self.n_trees, len(x))).copy()
        columns = np.broadcast_to(np.arange(len(x)), node.shape)
        active = self.left[node] >= 0
        while active.any():
            at = node[active]
            goes_left = x[columns[active], self.feature[at]] <= self.threshold[at]
            node[active] = np.where(goes_left, self.left[at], self.right[at])
            active = self.left[node] >= 0
        return self.value[node]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The ensemble's mean prediction for rows ``x`` (N, n_features) → float64 (N,)."""
        return self.per_tree(x).mean(axis=0)

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The node arrays and ``n_features`` by name (each name prefixed), as :meth:`save` writes them."""
        return {f"{prefix}n_features": np.int64(self.n_features), **{prefix + f: getattr(self, f) for f in _FIELDS}}

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` (no pickled objects)."""
        with Path(path).open("wb") as handle:
            np.savez_compressed(handle, **self.arrays())

    @classmethod
    def from_arrays(cls, data: Any, prefix: str = "") -> TreeArrays:
        """Rebuild from a mapping of arrays written by :meth:`arrays` (ValueError or KeyError when it holds none)."""
        arrays = {f: np.asarray(data[prefix + f]) for f in _FIELDS}
        n_features = np.asarray(data[f"{prefix}n_features"])
        if n_features.shape != () or not np.issubdtype(n_features.dtype, np.integer):
            raise ValueError("n_features must be one integer")
        for f in ("feature", "left", "right", "roots"):
            index = arrays[f]
            out_of_range = index.size > 0 and (index.min() < -1 or index.max() >= 2**31)
            if not np.issubdtype(index.dtype, np.integer) or out_of_range:
                raise ValueError(f"{f} must hold node or feature indices")
        return cls(feature=arrays["feature"].astype(np.int32), threshold=arrays["threshold"].astype(np.float64),
                   left=arrays["left"].astype(np.int32), right=arrays["right"].astype(np.int32),
                   value=arrays["value"].astype(np.float64), roots=arrays["roots"].astype(np.int32),
                   n_features=int(n_features))

    @classmethod
    def load(cls, path: str | Path) -> TreeArrays:
        """Read a file written by :meth:`save` (ValueError or KeyError when it is not one)."""
        with np.load(path, allow_pickle=False) as data:
            return cls.from_arrays(data)


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
