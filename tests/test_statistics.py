"""Rank-agreement permutation tests (weight_steering.evaluation.statistics)."""

import numpy as np
import pytest

from weight_steering.evaluation.statistics import mean_rank_agreement, spearman_permutation


def test_spearman_permutation_finds_a_monotone_relation_and_not_a_shuffle():
    a = np.arange(12.0)
    rho, p = spearman_permutation(a, a ** 3, n_permutations=999)
    assert rho == pytest.approx(1.0) and p == pytest.approx(1 / 1000)  # no shuffle reaches |ρ| = 1; p is never 0
    rho, p = spearman_permutation(a, -a, n_permutations=999)
    assert rho == pytest.approx(-1.0) and p < 0.01  # two-sided
    rho, p = spearman_permutation(a, np.random.default_rng(1).permutation(a), n_permutations=999)
    assert abs(rho) < 0.7 and p > 0.01
    assert all(np.isnan(spearman_permutation([1, 2], [2, 1])))


def test_mean_rank_agreement_against_its_permutation_null():
    rng = np.random.default_rng(0)
    base = np.arange(10.0)
    alike = np.array([base + rng.normal(0, 0.3, 10) for _ in range(4)])
    pairs = [(0, 1), (2, 3)]
    result = mean_rank_agreement(alike, pairs, n_permutations=500)
    assert result["mean_rho"] > 0.9 and result["p_value"] < 0.01 and result["null_p95"] < 0.9 and abs(result["null_mean"]) < 0.1
    unrelated = np.array([rng.permutation(base) for _ in range(4)])
    assert mean_rank_agreement(unrelated, pairs, n_permutations=500)["p_value"] > 0.01
    assert np.isnan(mean_rank_agreement(alike, [], n_permutations=10)["mean_rho"])
    with pytest.raises(ValueError, match="without NaN"):
        mean_rank_agreement(np.array([[1.0, np.nan, 2.0], [1.0, 2.0, 3.0]]), [(0, 1)])
    with pytest.raises(ValueError, match="two different rankers"):
        mean_rank_agreement(alike, [(0, 0)])
    with pytest.raises(ValueError, match="two different rankers"):
        mean_rank_agreement(alike, [(0, 7)])
