"""Seed-level summaries of finished comparisons: per-seed values and t-intervals over seeds per method and measure, and dW's paired advantage over each method."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..artifacts import stable_hash
from ..evaluation.statistics import seed_summary
from .result import ComparisonResult, MethodResult, read_comparison

# measures of the across-seed table, as (metric, arm): a strength or audit KL of an arm (``alpha``, ``audit_p95``), an
# effect of the method's table, or a generalisation ratio (arm None). Rows are named :func:`measure_name`.
SEED_MEASURES = (("alpha", "minus"), ("alpha", "plus"), ("audit_p95", "minus"), ("audit_p95", "plus"), ("id_controlled", "minus"),
                 ("id_controlled", "plus"), ("id_controlled", "spread"), ("id_neutral", "plus"), ("ood_target", "minus"),
                 ("ood_target", "plus"), ("ood_target", "spread"), ("action_bias", "plus"), ("nll_change", "minus"),
                 ("nll_change", "plus"), ("si_k2", None))


# behaviours with OOD sets of paired completions (and generation scores): the measures of their across-seed table
PAIR_SEED_MEASURES = (("alpha", "minus"), ("alpha", "plus"), ("audit_p95", "minus"), ("audit_p95", "plus"), ("id", "spread"),
                      ("id_per_token", "plus"), ("id_per_token", "minus"), ("id_per_token", "spread"), ("ood_sets", "spread"),
                      ("ood_sets_per_token", "plus"), ("ood_sets_per_token", "minus"), ("ood_sets_per_token", "spread"),
                      ("generalisation_ratio_per_token", None), ("generalisation_ratio_summed", None), ("gen_id_metric", "spread"),
                      ("gen_ood_metric", "spread"), ("gen_id_judged", "spread"), ("gen_ood_judged", "spread"), ("action_bias", "plus"),
                      ("nll_change", "minus"), ("nll_change", "plus"))


# dW against each other method, per seed (dW − method): the OOD effect and the generalisation ratio
WEIGHT_METHODS = ("dW", "dW_paper")  # the weight-steering methods whose paired advantage over the others is reported
ADVANTAGE_MEASURES = (("ood_sets_per_token", "spread"), ("ood_sets", "spread"), ("generalisation_ratio_per_token", None),
                      ("gen_ood_metric", "spread"))

# the generalisation ratios: (OOD, ID) spreads whose quotient they are
RATIO_PARTS = {"generalisation_ratio_per_token": ("ood_sets_per_token", "id_per_token"), "generalisation_ratio_summed": ("ood_sets", "id")}


class SeedSummaryError(ValueError):
    """Comparisons that cannot be summarised together (different settings, behaviours mixed, a seed twice)."""


def measure_name(metric: str, arm: str | None) -> str:
    """The name of a seed-table row (and its label in :data:`~weight_steering.comparison.render.SEED_MEASURE_LABELS`):
    ``<metric>_<arm>``, or the metric alone."""
    return metric if arm is None else f"{metric}_{arm}"


def load_comparisons(paths) -> list[ComparisonResult]:
    """Every ``comparison.json`` under ``paths`` (files, or folders searched recursively, e.g. the archive), read through
    :func:`~weight_steering.comparison.result.read_comparison` (older formats upgraded).

    Raises:
        SeedSummaryError: a path that does not exist, or no comparison found. ComparisonFormatError: a file this version
        cannot read.
    """
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise SeedSummaryError(f"{path} does not exist; give comparison result folders or the archive folder")
        found += [path] if path.is_file() else sorted(path.rglob("comparison.json"))
    if not found:
        raise SeedSummaryError(f"no comparison.json under {', '.join(map(str, paths))}; run `wsteer compare` first")
    return [read_comparison(p) for p in found]


def _method_value(method: MethodResult, metric: str, arm: str | None) -> float:
    """One number of a method's comparison result: a strength or audit KL of an arm, an effect's mean, or a
    generalisation ratio (``generalisation_ratio_per_token``: OOD spread / ID spread, both pooled per reply token;
    ``_summed``: both summed over the reply, which a longer OOD reply inflates)."""
    if metric in RATIO_PARTS:
        ood, idm = RATIO_PARTS[metric]
        return method.effects.mean(ood, "spread") / method.effects.mean(idm, "spread")
    if metric in ("alpha", "audit_p95"):
        return float(getattr(method.arm(arm), metric))
    return method.effects.mean(metric, arm)


def _row_significant(method: MethodResult, metric: str, arm: str | None) -> bool | None:
    entry = method.effects.get(metric, arm)
    return None if entry is None else entry.excludes_zero()


def method_label(names: list[str]) -> str:
    """One label for a method across seeds: its per-seed names without the seed; where they still differ (the best
    layer is chosen per seed), the differing parts side by side, e.g. ``CAA (layer 0 / layer 10 / layer 26, by seed)``."""
    names = [re.sub(r",? seed \d+", "", n) for n in names]
    if len(set(names)) == 1:
        return names[0]
    parts = [re.match(r"(.*?) \((.*)\)$", n) for n in names]
    if all(parts) and len({m[1] for m in parts}) == 1:
        return f"{parts[0][1]} ({' / '.join(m[2] for m in parts)}, by seed)"
    return " / ".join(names) + " (by seed)"


def summarize_seeds(summaries: list[ComparisonResult]) -> list[dict]:
    """The comparison across seeds, one table per behaviour, KL budget (``config.target``) and set of methods: per method
    and measure the per-seed values and a
    Student-t 95% interval over the seed means (:func:`weight_steering.evaluation.statistics.seed_interval`; 3 seeds: ±2.5 sd).

    Args:
        summaries: comparison results (:func:`load_comparisons`); the seed of each is its ``config.seed``.

    Returns:
        One dict per behaviour, budget, set of methods and pair filter (``filter_pairs``, present only when the pairs
        were filtered, and ``size_control``, only when a random subset of its size replaced them): ``behavior``, ``target``, ``methods`` (their keys, where the
        behaviour has more than one table; else None), ``seeds``, ``data_seeds``, ``rows`` (``method``, ``name``, ``measure``,
        ``per_seed`` values, ``row_significant`` per seed (its row-level CI excludes 0), ``mean``, ``ci_low``, ``ci_high``,
        ``seed_independent``: the method gave identical values at every seed (the prompt methods), so the interval is
        its row-level 95% CI rather than a t-interval over seeds),
        ``ratios`` (dW's spread over each method's, per seed and across), ``advantages`` (behaviours with OOD sets: the
        ``reference`` dW's value (each of :data:`WEIGHT_METHODS` present) minus each other method's per seed,
        :data:`ADVANTAGE_MEASURES`, with a t-interval over seeds: the paired difference) and ``agreement`` (per seed: cos(CAA, PCA) and the per-pair sign agreement of both directions,
        averaged over the slice layers). For behaviours with OOD sets the rows also hold the generalisation ratio
        OOD spread / ID spread per seed (per reply token, and summed).

    Raises:
        SeedSummaryError: two comparisons of one table with the same seed, or with different tolerances, families or models.
    """

    by_run: dict[tuple, list[dict]] = {}  # one table per behaviour, KL budget, set of methods and pair filter
    for summary in summaries:
        run = (summary.behavior, summary.target, tuple(m.key for m in summary.methods), summary.config.get("filter_pairs") or "",
               bool(summary.config.get("size_control")))
        by_run.setdefault(run, []).append(summary)
    several = {behavior for behavior, *_ in by_run if sum(b == behavior for b, *_ in by_run) > 1}
    out = []
    for (behavior, _, _, filter_pairs, size_control), group in sorted(by_run.items(), key=lambda item: item[0]):
        group = sorted(group, key=lambda s: s.seed)
        seeds = [s.seed for s in group]
        if len(set(seeds)) != len(seeds):
            raise SeedSummaryError(f"{behavior}: seed {seeds} appears twice; give one comparison per seed")
        for field in ("tolerance", "family", "model"):
            if len({stable_hash(s.config[field]) for s in group}) > 1:
                raise SeedSummaryError(f"{behavior}: the comparisons differ in {field}; summarise like with like")
        keys = [m.key for m in group[0].methods]
        if any([m.key for m in s.methods] != keys for s in group):
            raise SeedSummaryError(f"{behavior}: the comparisons ran different methods; rerun with the same --methods")
        set_names = [o["name"] for o in group[0].ood_sets]
        wanted = SEED_MEASURES if not set_names else (
            *PAIR_SEED_MEASURES, *((f"ood_{name}_per_token", "spread") for name in set_names), *((f"ood_{name}", "spread") for name in set_names))
        rows = []
        for index, key in enumerate(keys):
            methods = [s.methods[index] for s in group]
            measures = [m for m in wanted if not all(np.isnan([_method_value(x, *m) for x in methods]))]
            # A method no seed changes (the prompts: no data, no training) gives identical values at every seed; an interval
            # over seeds would have width 0, so its interval is the row-level CI of one seed instead.
            seed_independent = len(methods) > 1 and all(len({_method_value(x, *m) for x in methods}) == 1 for m in measures)
            for metric, arm in measures:
                values = [_method_value(m, metric, arm) for m in methods]
                interval = seed_summary(values)
                if seed_independent:
                    entry = methods[0].effects.get(metric, arm)
                    low, high = (entry.ci_low, entry.ci_high) if entry is not None and entry.ci_low is not None else (float("nan"),) * 2
                    interval = {**interval, "ci_low": float(low), "ci_high": float(high)}
                rows.append({"method": key, "name": method_label([m.name for m in methods]), "measure": measure_name(metric, arm),
                             "row_significant": [_row_significant(m, metric, arm) for m in methods], "seed_independent": seed_independent,
                             **interval})
        ratios = []
        for (measure, method) in dict.fromkeys((r["measure"], r["method"]) for r in group[0].ratios):
            values = [next((r["ratio"] for r in s.ratios if (r["measure"], r["method"]) == (measure, method)), float("nan")) for s in group]
            ratios.append({"measure": measure, "method": method, **seed_summary(values)})
        advantages = []
        # each weight-steering dW (the default recipe's, then the paper recipe's) minus every other method, paired by seed
        for reference in [k for k in WEIGHT_METHODS if k in keys] if set_names else []:
            ref_index = keys.index(reference)
            for metric, arm in ADVANTAGE_MEASURES:
                ref_values = np.array([_method_value(s.methods[ref_index], metric, arm) for s in group])
                if np.isnan(ref_values).all():
                    continue
                for index, key in enumerate(keys):
                    if key in WEIGHT_METHODS[:WEIGHT_METHODS.index(reference) + 1]:  # itself, and dW − dW_paper is already there
                        continue
                    values = ref_values - np.array([_method_value(s.methods[index], metric, arm) for s in group])
                    advantages.append({"reference": reference, "reference_name": method_label([s.methods[ref_index].name for s in group]),
                                       "measure": measure_name(metric, arm), "method": key,
                                       "name": method_label([s.methods[index].name for s in group]), **seed_summary(values)})
        agreement = []
        for s in group:
            pca = s.method("pca_slice")
            if pca is None or "direction_agreement" not in pca.spec:
                continue
            layers = [str(layer) for layer in pca.spec["layers"]]
            table = pca.spec["direction_agreement"]
            agreement.append({"seed": s.seed, **{name: float(np.mean([table[layer][name] for layer in layers]))
                                                               for name in ("cos_caa_pca", "sign_agreement_caa", "sign_agreement_pca")}})
        out.append({"behavior": behavior, "seeds": seeds, "methods": keys if behavior in several else None, "data_seeds": [s.config["data_seed"] for s in group],
                    "target": group[0].config["target"], "rows": rows, "ratios": ratios, "advantages": advantages, "agreement": agreement,
                    "ood_sets": set_names, "devices": sorted({f"{s.device} {s.dtype}" for s in group}),
                    **({"filter_pairs": filter_pairs} if filter_pairs else {}), **({"size_control": True} if size_control else {})})
    return out
