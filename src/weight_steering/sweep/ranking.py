"""The sweep's ranking of adapter families by seed-level effects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.behavior_files import load_behavior
from ..evaluation.datasets import VALUES
from ..evaluation.effects import dilemma_target, metric_frame, paired_rows
from ..evaluation.statistics import hierarchical_bootstrap, percentile_interval, seed_interval, stratified_mean


def ranking_contrasts(target_value: str | None) -> dict[str, tuple[str, float, float]]:
    """name -> (metric, α_high, α_low): the paired per-row contrasts of one sweep cell."""
    specs = {"id_spread": ("id", 1.0, -1.0), "id_controlled_spread": ("id_controlled", 1.0, -1.0),
             "id_neutral_spread": ("id_neutral", 1.0, -1.0), "action_bias_plus": ("action_bias", 1.0, 0.0)}
    if target_value:
        specs.update({"ood_target_plus": (f"dilemmas_{target_value}", 1.0, 0.0), "ood_target_minus": (f"dilemmas_{target_value}", -1.0, 0.0),
                      "ood_target_pooled_plus": (f"dilemmas_{target_value}_pooled", 1.0, 0.0)})
    specs.update({f"off_target_{v}": (f"dilemmas_{v}", 1.0, 0.0) for v in VALUES if v != target_value})
    return specs


RANKED = ("id_controlled_spread", "id_spread", "id_neutral_spread", "ood_target_plus", "ood_target_minus", "ood_target_pooled_plus", "action_bias_plus")


def rank_families(cells: list[dict], behaviors: dict | None = None) -> pd.DataFrame:
    """Per (behaviour, family): mean and 95% CI over seeds of the ranking metrics, sorted by ID spread.

    Args:
        cells: finished sweep cells (``cell.json`` content plus ``records``).
        behaviors: behaviour name -> :class:`~weight_steering.core.behaviors.Behavior` (its OOD target);
            default: the shipped behaviour of each cell's name.

    Returns:
        One row per (behaviour, family) with ``n_seeds``; for each of ``id_controlled_spread``
        (framing-controlled held-out score, α=+1 − α=−1; only where the cells scored the control
        framing), ``id_spread`` / ``id_neutral_spread`` (the opinion and neutral framings alone),
        ``ood_target_plus`` / ``ood_target_minus`` (the behaviour's DailyDilemmas target, action-
        stratified, α=±1 − α=0), ``ood_target_pooled_plus`` (the same, pooled), ``action_bias_plus``
        (shift toward the "to do" action, α=+1 − 0) and ``off_target`` (mean over the other values
        of the stratified |Δ(α=+1 − 0)|) the columns ``<name>``, ``<name>_ci_low``, ``<name>_ci_high``;
        ``ood_target`` and ``ood_sign`` (the target and its intended sign); ``min_pmass``: the lowest
        mean answer-format mass over (metric, α) and seeds; ``norm_dw`` (mean over seeds, Frobenius);
        ``sign_agreement`` (share of seeds whose ID spread and OOD Δ(+1) have the sign of the family
        mean); ``<name>_per_seed`` (each seed's value) and ``interval`` (how the CIs were made). With two or
        more seeds the CI is a t-interval over the seed means (:func:`~weight_steering.evaluation.statistics.seed_interval`):
        the seed is the unit of replication. With one seed it is a bootstrap over rows and says so. All
        scores in nats (log-odds).
    """

    groups: dict[tuple[str, str], list[dict]] = {}
    for cell in cells:
        groups.setdefault((cell["cell"]["behavior"], cell["cell"]["family"]), []).append(cell)
    rows = []
    for (behavior, family), members in groups.items():
        value, sign = dilemma_target((behaviors or {}).get(behavior) or load_behavior(behavior))
        specs = ranking_contrasts(value)
        per_seed, pmass = [], []
        for cell in members:
            frame = metric_frame(cell["records"])
            per_seed.append({name: paired_rows(frame, *spec) for name, spec in specs.items() if spec[0] in set(frame["metric"])})
            pmass.append(float(frame.groupby(["metric", "alpha"])["pmass"].mean().min()))
        order = np.argsort([c["cell"]["seed"] for c in members])
        per_seed = [per_seed[i] for i in order]
        seed_points = {name: [stratified_mean(s[name][0], s[name][2]) for s in per_seed] for name in per_seed[0]}
        point = {name: float(np.mean(values)) for name, values in seed_points.items()}
        off = [name for name in per_seed[0] if name.startswith("off_target_")]
        if off:
            seed_points["off_target"] = [float(np.mean([abs(seed_points[n][i]) for n in off])) for i in range(len(per_seed))]
        several = len(per_seed) > 1
        boot = None if several else hierarchical_bootstrap(per_seed)
        row = {"behavior": behavior, "family": family, "n_seeds": len(members), "seeds": sorted(c["cell"]["seed"] for c in members),
               "ood_target": value, "ood_sign": sign,
               "interval": "t over seed means" if several else "bootstrap over rows (1 seed: no seed-level interval)"}
        for name in (*RANKED, "off_target"):
            if name not in seed_points:
                continue
            if several:
                interval = seed_interval(seed_points[name])
            elif name == "off_target":
                interval = percentile_interval(seed_points[name][0], np.mean([np.abs(boot[n]) for n in off], axis=0))
            else:
                interval = percentile_interval(point[name], boot[name])
            row.update({name: interval["mean"], f"{name}_ci_low": interval["ci_low"], f"{name}_ci_high": interval["ci_high"],
                        f"{name}_per_seed": [float(v) for v in seed_points[name]]})
        row["min_pmass"] = min(pmass)
        row["norm_dw"] = float(np.mean([c["norm_dw"] for c in members]))
        lead = "id_controlled_spread" if "id_controlled_spread" in point else "id_spread"
        agree = [all(np.sign(stratified_mean(s[n][0], s[n][2])) == np.sign(point[n]) for n in (lead, "ood_target_plus") if n in s) for s in per_seed]
        row["sign_agreement"] = f"{sum(agree)}/{len(agree)}"
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    key = next((k for k in ("id_controlled_spread", "id_spread", "ood_target_plus") if k in frame), "family")
    return frame.sort_values(["behavior", key], ascending=[True, False], ignore_index=True)
