"""Tree ensembles that predict a whole isotherm, ≥ 0 and non-decreasing in pressure by construction (pure computation).

Isotherm labels are scarce and uneven: every labelled structure has its uptake at the anchor pressure (5.8 bar,
the primary output), far fewer have the whole curve. A curve u_0 ≤ … ≤ u_{k-1} (mol/kg) is therefore written as
k non-negative components anchored there (:func:`curve_components`):

    a   = u_anchor                       the anchor's uptake (every labelled structure)
    f_i = u_i / u_{i+1} ∈ [0, 1]         i < anchor: the fraction of the next pressure's uptake
    d_i = u_i − u_{i−1} ≥ 0              i > anchor: the step from the previous pressure

and each component gets its own Extra Trees ensemble, fitted on the structures that label it
(:meth:`CurveTrees.fit`). A tree ensemble predicts a mean of training targets, so every predicted component stays
inside its targets' range, and the curve rebuilt from them (:func:`curve_from_components`) is ≥ 0 and
non-decreasing for any input, like the network's :class:`models.isotherm.MonotoneHead`. A convex blend of two
such curves (:class:`models.hybrid.HybridTrees` with one weight for all pressures) is one too.

Examples
--------
>>> import numpy as np
>>> curves = np.array([[0.5, 2.0, 5.0, 6.0], [0.2, 1.0, np.nan, np.nan]])
>>> curve_components(curves, anchor=1)
array([[0.25, 2.  , 3.  , 1.  ],
       [0.2 , 1.  ,  nan,  nan]])
>>> curve_from_components(curve_components(curves[:1], anchor=1), anchor=1)
array([[0.5, 2. , 5. , 6. ]])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.trees import TreeArrays, fit_trees

#: Fewest labelled structures a component's trees are fitted on.
MIN_COMPONENT_LABELS = 5


def _check_anchor(k: int, anchor: int) -> None:
    if not 0 <= anchor < k:
        raise ValueError(f"the anchor must index one of the {k} pressures, got {anchor}")


def curve_components(curves: np.ndarray, anchor: int) -> np.ndarray:
    """Uptake curves (N, k), mol/kg, NaN where not labelled → their components (N, k) (module docstring).

    A component is NaN where a point it needs is missing (or, for a fraction, where the next uptake is not
    positive). GCMC noise can make a labelled curve dip or go below zero by a hair: anchors are clipped at 0,
    fractions to [0, 1] and steps at 0, so the targets always describe a monotone curve.
    """
    u = np.asarray(curves, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"expected curves of shape (N, k), got {u.shape}")
    _check_anchor(u.shape[1], anchor)
    out = np.full(u.shape, np.nan)
    out[:, anchor] = np.clip(u[:, anchor], 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(anchor):
            upper = u[:, i + 1]
            usable = np.isfinite(upper) & (upper > 0)
            out[:, i] = np.where(usable, np.clip(u[:, i] / np.where(usable, upper, 1.0), 0.0, 1.0), np.nan)
            out[~np.isfinite(u[:, i]), i] = np.nan
        for i in range(anchor + 1, u.shape[1]):
            out[:, i] = np.clip(u[:, i] - u[:, i - 1], 0.0, None)
    return out


def curve_from_components(components: np.ndarray, anchor: int) -> np.ndarray:
    """Components (N, k) → uptake curves (N, k): the inverse of :func:`curve_components`.

    With an anchor ≥ 0, fractions in [0, 1] and steps ≥ 0 the curve is ≥ 0 and non-decreasing exactly
    (also in floating point: a product with a factor ≤ 1 and a sum with a term ≥ 0 never cross).
    """
    c = np.asarray(components, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"expected components of shape (N, k), got {c.shape}")
    _check_anchor(c.shape[1], anchor)
    out = np.empty(c.shape)
    out[:, anchor] = c[:, anchor]
    for i in range(anchor - 1, -1, -1):
        out[:, i] = c[:, i] * out[:, i + 1]
    for i in range(anchor + 1, c.shape[1]):
        out[:, i] = out[:, i - 1] + c[:, i]
    return out


@dataclass(frozen=True)
class CurveTrees:
    """One tree ensemble per component of a curve (module docstring): rows → monotone curves.

    Attributes
    ----------
    components : tuple of TreeArrays
        k ensembles, in pressure order; all read the same rows.
    anchor : int
        Index of the anchor pressure (the curve's fully labelled point).
    """

    components: tuple[TreeArrays, ...]
    anchor: int

    def __post_init__(self) -> None:
        """Refuse components whose leaves could rebuild a curve that decreases or goes below zero."""
        if not self.components:
            raise ValueError("a curve needs at least one component")
        _check_anchor(len(self.components), self.anchor)
        if len({c.n_features for c in self.components}) != 1 or len({c.n_trees for c in self.components}) != 1:
            raise ValueError("every component's trees must read the same rows and be as many")
        for j, trees in enumerate(self.components):  # a mean of leaves in range stays in range
            high = 1.0 if j < self.anchor else np.inf
            if trees.value.min() < 0.0 or trees.value.max() > high:
                kind = "a fraction in [0, 1]" if j < self.anchor else "an uptake or step ≥ 0"
                raise ValueError(f"component {j} of a curve anchored at {self.anchor} must predict {kind}")

    @property
    def n_outputs(self) -> int:
        """Number k of pressures."""
        return len(self.components)

    @property
    def n_features(self) -> int:
        """Width of the input rows."""
        return self.components[0].n_features

    @property
    def n_trees(self) -> int:
        """Trees per component (every component has as many)."""
        return self.components[0].n_trees

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Uptake curves (N, k), in the labels' unit (mol/kg), ≥ 0 and non-decreasing, for rows (N, n_features)."""
        parts = np.column_stack([trees.predict(rows) for trees in self.components])
        return curve_from_components(parts, self.anchor)

    @classmethod
    def fit(cls, rows: np.ndarray, curves: np.ndarray, anchor: int, *, n_trees: int, min_samples_leaf: int,
            seed: int = 0, jobs: int = 1) -> CurveTrees:
        """Fit each component's Extra Trees on the rows (N, m) whose curves (N, k) label that component.

        ``curves`` are uptakes (mol/kg) at increasing pressures, NaN where not labelled (:func:`curve_components`).

        Raises
        ------
        ValueError
            A component has fewer than :data:`MIN_COMPONENT_LABELS` labelled structures.
        """
        targets = curve_components(curves, anchor)
        fitted = []
        for j in range(targets.shape[1]):
            labelled = np.isfinite(targets[:, j])
            if labelled.sum() < MIN_COMPONENT_LABELS:
                raise ValueError(f"component {j} has {int(labelled.sum())} labelled structures; "
                                 f"at least {MIN_COMPONENT_LABELS} are needed")
            fitted.append(fit_trees(rows[labelled], targets[labelled, j], n_trees=n_trees,
                                    min_samples_leaf=min_samples_leaf, seed=seed, jobs=jobs))
        return cls(tuple(fitted), anchor)

    def save(self, path: str | Path) -> None:
        """Write one ``.npz`` (no pickled objects): every component's arrays, prefixed ``c<j>_``, and the anchor."""
        arrays: dict[str, Any] = {"anchor": np.int64(self.anchor), "n_components": np.int64(self.n_outputs)}
        for j, trees in enumerate(self.components):
            arrays.update(trees.arrays(prefix=f"c{j}_"))
        with Path(path).open("wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> CurveTrees:
        """Read a file written by :meth:`save` (ValueError or KeyError when it is not one)."""
        with np.load(path, allow_pickle=False) as data:
            return cls.from_arrays(data)

    @classmethod
    def from_arrays(cls, data: Mapping[str, Any]) -> CurveTrees:
        """Rebuild from the arrays :meth:`save` writes."""
        counts = [np.asarray(data[key]) for key in ("n_components", "anchor")]
        if any(c.shape != () or not np.issubdtype(c.dtype, np.integer) for c in counts):
            raise ValueError("n_components and anchor must be integers")
        n, anchor = (int(c) for c in counts)
        if not 1 <= n <= 64:
            raise ValueError(f"a curve has 1 to 64 components, the file says {n}")
        return cls(tuple(TreeArrays.from_arrays(data, prefix=f"c{j}_") for j in range(n)), anchor)


def out_of_fold_curve_trees(rows: np.ndarray, curves: np.ndarray, anchor: int, assignment: np.ndarray, *,
                            n_trees: int, min_samples_leaf: int, jobs: int = 1) -> np.ndarray:
    """Curves (N, k), mol/kg, of every structure from curve trees fitted on the other folds only.

    ``assignment`` (N,) is each structure's fold (e.g. :func:`models.isotherm_training.fold_assignment`, the
    same the network heads' out-of-fold curves use, so the two can be blended fold by fold).
    """
    assignment = np.asarray(assignment)
    if assignment.shape != (len(curves),) or len(rows) != len(curves):
        raise ValueError(f"need one fold per structure: {assignment.shape} folds, {len(rows)} rows, "
                         f"{len(curves)} curves")
    out = np.full(np.shape(curves), np.nan)
    for fold in np.unique(assignment):
        held = assignment == fold
        trees = CurveTrees.fit(rows[~held], curves[~held], anchor, n_trees=n_trees,
                               min_samples_leaf=min_samples_leaf, seed=0, jobs=jobs)
        out[held] = trees.predict(rows[held])
    return out


__all__ = ["MIN_COMPONENT_LABELS", "CurveTrees", "curve_components", "curve_from_components",
           "out_of_fold_curve_trees"]
