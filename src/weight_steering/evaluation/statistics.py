"""Statistics shared by every stage: bootstrap intervals (cluster, stratified-cluster, hierarchical: seeds, then rows;
ratios), seed-level t-intervals and rank-agreement permutation tests.

All intervals are percentile intervals (Efron & Tibshirani 1993, ch. 13) from :data:`N_BOOTSTRAP`
resamples with a fixed seed, so the same inputs give the same bytes.

* **cluster**: rows of one cluster (the two actions of a dilemma, the two frames of a vignette)
  are resampled together.
* **stratified**: when rows carry a stratum (e.g. whether a value's action is the "to do" or the
  "not to do" one), the estimate is the equal-weight mean of the stratum means, and clusters are
  resampled *within* each stratum (the stratified bootstrap, Davison & Hinkley 1997 §3.7). With one
  stratum this is exactly the cluster bootstrap (same draws, same numbers).
* **hierarchical**: seeds, then clusters within a seed (Saravanan et al. 2020).
"""

from __future__ import annotations

import numpy as np

N_BOOTSTRAP = 2000


def _single_stratum(strata) -> bool:
    return strata is None or len(np.unique(np.asarray(strata))) <= 1


def stratified_mean(values, strata=None) -> float:
    """Mean of ``values`` ``[N]``; with ``strata`` ``[N]``, the equal-weight mean of the stratum means."""
    values = np.asarray(values, dtype=float)
    if _single_stratum(strata):
        return float(values.mean())
    strata = np.asarray(strata)
    return float(np.mean([values[strata == s].mean() for s in np.unique(strata)]))


def cluster_boot_means(values, clusters, rng: np.random.Generator, n_boot: int, strata=None) -> np.ndarray:
    """``[n_boot]`` resampled (stratified) means of ``values`` ``[N]``, clusters drawn with replacement.

    With ``strata`` (``[N]``, constant within a cluster) clusters are drawn within each stratum and the
    stratum means are averaged with equal weight (:func:`paired_cluster_boot_means` with one array).
    """
    return paired_cluster_boot_means([values], clusters, rng, n_boot, strata)[0]


def paired_cluster_boot_means(values: list, clusters, rng: np.random.Generator, n_boot: int, strata=None) -> np.ndarray:
    """``[len(values), n_boot]`` resampled (stratified) means of several ``[N]`` arrays over the *same*
    resampled clusters (paired), e.g. a variant's and the full dW's per-row effects for a ratio."""
    values = [np.asarray(v, dtype=float) for v in values]
    clusters = np.asarray(clusters)
    strata = np.zeros(len(clusters), dtype=int) if strata is None else np.asarray(strata)
    per_stratum = []
    for s in np.unique(strata):
        rows = strata == s
        _, index = np.unique(clusters[rows], return_inverse=True)
        n = index.max() + 1
        counts = np.bincount(index, minlength=n).astype(float)
        draws = rng.integers(0, n, size=(n_boot, n))
        per_stratum.append([np.bincount(index, weights=v[rows], minlength=n)[draws].sum(1) / counts[draws].sum(1) for v in values])
    return np.mean(np.array(per_stratum), axis=0)  # equal weight per stratum


def percentile_interval(point: float, boot, level: float = 0.95) -> dict:
    """``{"mean", "ci_low", "ci_high"}``: ``point`` with the percentile interval of ``boot``."""
    tail = (1 - level) / 2 * 100
    return {"mean": float(point), "ci_low": float(np.percentile(boot, tail)), "ci_high": float(np.percentile(boot, 100 - tail))}


def bootstrap_ci(values, clusters, n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95,
                 strata=None) -> tuple[float, float, float]:
    """(Stratified) mean of ``values`` ``[N]`` and its cluster-bootstrap percentile CI.

    Returns:
        ``(mean, low, high)``; NaNs when ``values`` is empty.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    boot = cluster_boot_means(values, clusters, np.random.default_rng(seed), n_boot, strata)
    out = percentile_interval(stratified_mean(values, strata), boot, level)
    return out["mean"], out["ci_low"], out["ci_high"]


def resampled_rows(clusters, n_boot: int, seed: int, strata=None):
    """Yield ``n_boot`` arrays of row indices: the rows of clusters drawn with replacement (within
    each stratum when ``strata`` is given; none if there are no rows)."""
    clusters = np.asarray(clusters)
    if not len(clusters):
        return
    strata = np.zeros(len(clusters), dtype=int) if strata is None else np.asarray(strata)
    members = []  # per stratum: list of row-index arrays, one per cluster
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        _, index = np.unique(clusters[rows], return_inverse=True)
        members.append([rows[index == c] for c in range(index.max() + 1)])
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([group[c] for group in members for c in rng.integers(0, len(group), len(group))])


def bootstrap_statistic(values, clusters, statistic, n_boot: int = N_BOOTSTRAP, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float, float]:
    """Any ``statistic(values) -> float`` (e.g. the 95th percentile) with a cluster-bootstrap percentile CI.

    Returns:
        ``(statistic, low, high)``; NaNs when ``values`` is empty.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    boot = [statistic(values[rows]) for rows in resampled_rows(clusters, n_boot, seed)]
    out = percentile_interval(statistic(values), boot, level)
    return out["mean"], out["ci_low"], out["ci_high"]


def hierarchical_bootstrap(per_seed: list[dict[str, tuple]], n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap distributions of per-metric means over seeds, then clusters within a seed.

    Args:
        per_seed: one dict per seed, ``metric -> (values [N], clusters [N])`` or
            ``(values, clusters, strata)``; the same metrics in each.

    Returns:
        ``metric -> [n_boot]`` resampled means (mean over resampled seeds of each seed's
        (stratified) cluster-resampled mean). Seeds are drawn once per resample and shared by all
        metrics, so statistics that combine metrics (off-target |Δ|) see the same seeds. With one
        seed this is the cluster bootstrap.
    """
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, len(per_seed), size=(n_boot, len(per_seed)))
    out = {}
    for metric in per_seed[0]:
        boots = np.stack([cluster_boot_means(*s[metric][:2], rng, n_boot, *s[metric][2:]) for s in per_seed])  # [seeds, n_boot]
        out[metric] = boots[seed_draws, np.arange(n_boot)[:, None]].mean(1)
    return out


def seed_interval(per_seed, level: float = 0.95) -> dict:
    """Mean over seeds with a Student-t interval on the seed means (the seed is the unit of replication).

    With n seeds: mean ± t_{(1+level)/2, n−1} · sd / √n (sd with ddof 1; scipy.stats.t). It cannot be
    narrower than the seeds' spread warrants: with 3 seeds t = 4.30, so the half-width is 2.5 sd.

    Returns:
        ``{"mean", "ci_low", "ci_high", "n"}``; the interval is NaN with fewer than 2 seeds.
    """
    from scipy import stats

    values = np.asarray(per_seed, dtype=float)
    mean = float(values.mean())
    if values.size < 2:
        return {"mean": mean, "ci_low": float("nan"), "ci_high": float("nan"), "n": int(values.size)}
    half = float(stats.t.ppf((1 + level) / 2, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return {"mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": int(values.size)}


def seed_summary(per_seed, skip_nan: bool = False, level: float = 0.95) -> dict:
    """The one seed-level aggregation every study reports: the per-seed values and the Student-t interval over them
    (:func:`seed_interval`).

    Args:
        per_seed: one value per seed, in seed order.
        skip_nan: leave seeds whose value is NaN (undefined there, e.g. an ablation variant with Δ(full) ≈ 0) out of the
            interval, keeping them in ``per_seed``; otherwise a NaN seed makes the mean NaN.

    Returns:
        ``{"per_seed", "mean", "ci_low", "ci_high", "n"}``; every statistic NaN (n = 0) when no seed is left.
    """
    values = [float(v) for v in per_seed]
    kept = [v for v in values if np.isfinite(v)] if skip_nan else values
    if not kept:
        return {"per_seed": values, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    return {"per_seed": values, **seed_interval(kept, level)}


def ratio_ci(numerator, denominator, clusters, n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95,
             strata=None) -> tuple[float, float, float]:
    """mean(numerator) / mean(denominator) over the same rows, with a paired cluster-bootstrap percentile CI.

    Both arrays are ``[N]`` per-row effects on identical rows (e.g. two methods' OOD spread),
    resampled together by cluster (within strata, whose means are averaged with equal weight, when
    ``strata`` is given). When the denominator's resamples straddle 0 the CI is wide or unbounded;
    read it with the denominator's own CI.
    """
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    strata_arr = None if strata is None else np.asarray(strata)

    def ratio(rows):
        s = None if strata_arr is None else strata_arr[rows]
        return stratified_mean(numerator[rows], s) / stratified_mean(denominator[rows], s)

    boot = [ratio(rows) for rows in resampled_rows(clusters, n_boot, seed, strata)]
    out = percentile_interval(ratio(np.arange(len(numerator))), boot, level)
    return out["mean"], out["ci_low"], out["ci_high"]


def spearman_permutation(a, b, n_permutations: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Spearman's ρ of two paired vectors ``[n]`` with a two-sided permutation p-value.

    ρ is Pearson's correlation of the ranks (ties get their mean rank). The null shuffles ``b``'s ranks
    ``n_permutations`` times (seeded); p = (1 + #{|ρ_null| ≥ |ρ|}) / (1 + n_permutations), which is never 0
    (Phipson & Smyth 2010).

    Returns:
        ``(rho, p_value)``; both NaN with fewer than 3 pairs.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 3:
        return float("nan"), float("nan")
    ranks_a, ranks_b = stats.rankdata(a), stats.rankdata(b)
    rho = float(np.corrcoef(ranks_a, ranks_b)[0, 1])
    generator = np.random.default_rng(seed)
    null = np.array([np.corrcoef(ranks_a, generator.permutation(ranks_b))[0, 1] for _ in range(n_permutations)])
    return rho, float((1 + np.sum(np.abs(null) >= abs(rho) - 1e-12)) / (1 + n_permutations))


def mean_rank_agreement(scores, pairs: list[tuple[int, int]], n_permutations: int = 2000, seed: int = 0) -> dict:
    """Do several rankers order the same items alike? The mean Spearman ρ over chosen pairs of rankers, with a null
    that permutes every ranker's scores independently (so no pair agrees but by chance).

    Args:
        scores: ``[n_rankers, n_items]`` (e.g. one row per dW, one column per candidate subspace); no NaN.
        pairs: the ranker pairs ``(i, j)`` whose ρ is averaged (e.g. two seeds of one family, or two families).
        n_permutations: null draws (seeded).

    Returns:
        ``{"mean_rho", "p_value" (one-sided: the null's mean ρ ≥ the observed), "null_mean", "null_p95", "n_pairs"}``;
        NaN when there is no pair or fewer than 3 items.

    Raises:
        ValueError: ``scores`` is not 2-D, holds NaN, or a pair names a ranker out of range.
    """
    from scipy import stats

    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or np.isnan(scores).any():
        raise ValueError(f"scores must be a [n_rankers, n_items] array without NaN; got shape {scores.shape}")
    if any(not (0 <= i < len(scores) and 0 <= j < len(scores)) or i == j for i, j in pairs):
        raise ValueError(f"every pair must name two different rankers in [0, {len(scores)}); got {pairs}")
    nan = {"mean_rho": float("nan"), "p_value": float("nan"), "null_mean": float("nan"), "null_p95": float("nan"), "n_pairs": len(pairs)}
    if not pairs or scores.shape[1] < 3:
        return nan
    ranks = stats.rankdata(scores, axis=1)

    def mean_rho(r):
        return float(np.mean([np.corrcoef(r[i], r[j])[0, 1] for i, j in pairs]))

    observed = mean_rho(ranks)
    generator = np.random.default_rng(seed)
    null = np.array([mean_rho(np.array([generator.permutation(row) for row in ranks])) for _ in range(n_permutations)])
    return {"mean_rho": observed, "p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations)),
            "null_mean": float(null.mean()), "null_p95": float(np.percentile(null, 95)), "n_pairs": len(pairs)}
