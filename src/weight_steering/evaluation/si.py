"""Surgical informedness (SI): how much a steering moves items the intended way, with a penalty k for breaking items the base model already got right ("first do no harm"); per item or pooled, with bootstrap CIs."""

from __future__ import annotations

import numpy as np

from .statistics import resampled_rows

SI_K = 2.0  # penalty on breaking already-correct items ("first do no harm"); printed with every SI


def surgical_informedness(y_ref, y_plus, y_minus=None, pmass_plus: float = 1.0, pmass_minus: float | None = None,
                          k: float = SI_K, weights=None) -> dict:
    """Surgical Informedness of one steering pair from per-item signed states.

    Args:
        y_ref, y_plus, y_minus: ``[N]`` signed "in the intended state" values without steering, at the
            positive arm and at the negative arm (only signs matter; 0 counts in neither set).
            ``y_minus=None`` gives the forward-only version (prompt baselines, ablations).
        pmass_plus, pmass_minus: mean answer-format mass of the two arms (probability, 0..1).
        k: penalty weight on items the steer breaks (forward) or pushes toward intent (reverse).
        weights: optional ``[N]`` item weights (e.g. foundation loadings); default 1.

    Returns:
        ``si, si_forward, si_reverse, pmass_scale, k, n_chosen, n_rejected`` where, with
        cho = {y_ref > 0}, rej = {y_ref < 0}:
        SI_fwd = fix/|rej| − k·broke/|cho| (fix: rej with y₊ > 0; broke: cho with y₊ < 0),
        SI_rev = flip/|cho| − k·counter/|rej| (flip: cho with y₋ < 0; counter: rej with y₋ > 0),
        pmass_scale = min(pmass₊, pmass₋)² × 100, SI = nanmean(SI_fwd, SI_rev) × pmass_scale
        (forward-only: SI_fwd × pmass₊² × 100). NaN where |cho| or |rej| is 0, never a division error.
        Reference: steering-lite's SI (github.com/wassname/steering-lite), as this docstring states it.
    """
    y_ref, y_plus = np.asarray(y_ref, float), np.asarray(y_plus, float)
    w = np.ones_like(y_ref) if weights is None else np.asarray(weights, float)
    cho, rej = y_ref > 0, y_ref < 0
    n_cho, n_rej = float(w[cho].sum()), float(w[rej].sum())

    defined = n_cho > 0 and n_rej > 0
    forward = reverse = float("nan")
    if defined:
        forward = w[rej & (y_plus > 0)].sum() / n_rej - k * w[cho & (y_plus < 0)].sum() / n_cho
    if y_minus is None:
        scale = pmass_plus ** 2 * 100
        si = forward * scale
    else:
        y_minus = np.asarray(y_minus, float)
        if defined:
            reverse = w[cho & (y_minus < 0)].sum() / n_cho - k * w[rej & (y_minus > 0)].sum() / n_rej
        scale = min(pmass_plus, pmass_minus if pmass_minus is not None else pmass_plus) ** 2 * 100
        si = float(np.nanmean([forward, reverse])) * scale if defined else float("nan")
    return {"si": float(si), "si_forward": float(forward), "si_reverse": float(reverse), "pmass_scale": scale, "k": k,
            "n_chosen": int(cho.sum()), "n_rejected": int(rej.sum())}


def si_with_ci(y_ref, y_plus, y_minus, pmass_plus, pmass_minus, k, clusters, n_boot: int = 1000, seed: int = 0) -> dict:
    """:func:`surgical_informedness` plus a percentile 95% CI from resampling clusters of items
    (pmass held at the arm means)."""
    result = surgical_informedness(y_ref, y_plus, y_minus, pmass_plus, pmass_minus, k)
    y_ref, y_plus = np.asarray(y_ref, float), np.asarray(y_plus, float)
    y_minus = None if y_minus is None else np.asarray(y_minus, float)
    draws = np.asarray([surgical_informedness(y_ref[rows], y_plus[rows], None if y_minus is None else y_minus[rows],
                                              pmass_plus, pmass_minus, k)["si"]
                        for rows in resampled_rows(clusters, n_boot, seed)], float)
    finite = draws[np.isfinite(draws)]
    low, high = (np.percentile(finite, [2.5, 97.5]) if finite.size else (float("nan"), float("nan")))
    return {**result, "si_ci_low": float(low), "si_ci_high": float(high)}


