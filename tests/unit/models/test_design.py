"""Unit tests for models.design: ranking candidates against a target, with and without σ."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.design import rank_candidates, target_arrays


def test_candidates_rank_by_rms_distance_and_tolerance_is_per_quantity() -> None:
    values = np.array([[4.0, 12.0],    # exact
                       [4.5, 11.0],    # rms sqrt((0.25 + 1) / 2) = 0.79, 65 bar off by 1.0
                       [6.0, 12.0],    # rms sqrt(4 / 2) = 1.41
                       [np.nan, 12.0],  # not predicted: never ranks
                       [3.9, 12.2]])   # rms sqrt((0.01 + 0.04) / 2) = 0.158
    ranking = rank_candidates(values, [4.0, 12.0], [0.6, 1.5], top_k=10)
    assert ranking.index.tolist() == [0, 4, 1, 2]
    assert ranking.distance.tolist() == pytest.approx([0.0, math.sqrt(0.025), math.sqrt(0.625), math.sqrt(2.0)])
    assert ranking.within_tolerance.tolist() == [True, True, True, False]  # 6.0 is 2.0 from 4.0 > 0.6
    assert ranking.p_within is None
    assert rank_candidates(values, [4.0, 12.0], [0.6, 1.5], top_k=2).index.tolist() == [0, 4]


def test_p_within_is_the_normal_probability_and_breaks_distance_ties() -> None:
    values = np.array([[5.0], [5.0], [3.0]])
    sigma = np.array([[1.0], [0.1], [0.5]])
    ranking = rank_candidates(values, [5.0], [1.0], sigma=sigma)
    assert ranking.index.tolist() == [1, 0, 2]  # equal distance: the confident one first
    # P(|N(0, 1)| <= 1) = erf(1/√2); P(|N(0, 0.1)| <= 1) ≈ 1; for 3 ± 0.5: P(4 <= X <= 6) = 1 - Φ(2)
    expected = [1.0, math.erf(1 / math.sqrt(2)), 0.5 * (1 - math.erf(2 / math.sqrt(2)))]
    assert ranking.p_within.tolist() == pytest.approx(expected, abs=1e-9)


def test_only_eligible_candidates_rank() -> None:
    values = np.array([[1.0], [2.0], [3.0]])
    ranking = rank_candidates(values, [1.0], [0.5], eligible=np.array([False, True, True]))
    assert ranking.index.tolist() == [1, 2]


@pytest.mark.parametrize("target,tolerance", [([1.0], [0.0]), ([], []), ([np.inf], [1.0]), ([1.0, 2.0], [1.0])])
def test_bad_targets_are_refused(target: list[float], tolerance: list[float]) -> None:
    with pytest.raises(ValueError):
        rank_candidates(np.ones((3, len(target) or 1)), target, tolerance)


def test_target_arrays_take_one_tolerance_or_one_per_quantity() -> None:
    assert target_arrays({"a": 1.0, "b": 2.0}, 0.5) == (["a", "b"], [1.0, 2.0], [0.5, 0.5])
    assert target_arrays({"a": 1.0, "b": 2.0}, {"b": 0.2, "a": 0.1}) == (["a", "b"], [1.0, 2.0], [0.1, 0.2])
