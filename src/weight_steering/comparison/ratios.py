"""What a comparison measures besides the table: the OOD measure of a behaviour and the generalisation ratios (OOD effect per unit of ID effect) per method."""

from __future__ import annotations

import numpy as np

from ..evaluation.effects import dilemma_target, metric_frame, paired_rows
from ..evaluation.statistics import ratio_ci, stratified_mean


def ood_measure(behavior) -> tuple[str, str | None, str | None]:
    """``(effect name, metric, eval)`` of the behaviour's out-of-distribution measure, the y of the effect-vs-KL curve:
    its DailyDilemmas target (``ood_target``, action-stratified), else its OOD sets pooled per reply token
    (``ood_sets_per_token``, each set weighted equally), else ``("ood_target", None, None)`` (no OOD measure)."""
    value, _ = dilemma_target(behavior)
    if value is not None:
        return "ood_target", f"dilemmas_{value}", "dilemmas"
    if behavior.ood_sets:
        return "ood_sets_per_token", "ood_sets_per_token", "ood_pair"
    return "ood_target", None, None


def ood_delta(records: list[dict], alpha: float, behavior) -> float:
    """The behaviour's OOD measure (:func:`ood_measure`) Δ (α − 0) in nats (NaN without one)."""
    _, metric, _ = ood_measure(behavior)
    if metric is None:
        return float("nan")
    values, _, strata = paired_rows(metric_frame(records), metric, alpha, 0.0)
    return stratified_mean(values, strata)


def generalisation_ratios(results: list, records: dict[str, list[dict]], behavior) -> list[dict]:
    """dW's spread (Δ at α₊ − Δ at α₋) over each other method's, paired over identical rows, with a 95% CI:
    for the behaviour's DailyDilemmas target (action-stratified), its OOD sets pooled per reply token (each set
    weighted equally) and, where the behaviour has held-out rows, for the framing-controlled ID score (the opinion
    framing alone when no control was scored) and the paired-completion probe per reply token.

    Args:
        results: :class:`~weight_steering.comparison.result.MethodResult` per method (its calibrated α per arm).
        records: method key -> its evaluation records with the base's (identical rows).
    Returns:
        One dict per (measure, method): ``measure``, ``metric``, ``method``, ``name``, ``ratio`` with ``ci_low``/``ci_high``,
        ``dw_spread``, ``method_spread`` (nats).
    Raises:
        ValueError: dW and a method were not scored on identical rows.
    """
    by_key = {r.key: r for r in results}
    if "dW" not in by_key:
        return []
    frames = {key: metric_frame(records[key]) for key in by_key}
    value, _ = dilemma_target(behavior)
    scored = set(frames["dW"]["metric"])
    measures = {"id": "id_controlled" if "id_controlled" in scored else "id", "id_per_token": "id_per_token", "ood_sets": "ood_sets_per_token"}
    if value:
        measures = {"ood_target": f"dilemmas_{value}", **measures}
    out = []
    for measure, metric in measures.items():
        if metric not in set(frames["dW"]["metric"]):
            continue

        def spread(key, metric=metric):
            result = by_key[key]
            return paired_rows(frames[key], metric, result.plus.alpha, result.minus.alpha)

        numerator, clusters, strata = spread("dW")
        for key, result in by_key.items():
            if key == "dW":
                continue
            denominator, other_clusters, _ = spread(key)
            if not np.array_equal(clusters, other_clusters):
                raise ValueError(f"dW and {key} were not scored on identical rows")
            ratio, low, high = ratio_ci(numerator, denominator, clusters, strata=strata)
            out.append({"measure": measure, "metric": metric, "method": key, "name": result.name, "ratio": ratio, "ci_low": low,
                        "ci_high": high, "dw_spread": stratified_mean(numerator, strata), "method_spread": stratified_mean(denominator, strata)})
    return out
