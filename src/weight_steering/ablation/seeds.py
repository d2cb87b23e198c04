"""Ablations over seeds: agreement of variant rankings across seeds (permutation test) and seed-level summaries of retained effect."""

from __future__ import annotations

import re
from pathlib import Path

from ..artifacts import read_dw_results
from ..evaluation.statistics import seed_summary, spearman_permutation
from .variants import AblationError

DISJOINT_SETS = {
    "single_layers": re.compile(r"^layer_\d+_only$"),
    "single_projections": re.compile(r"^(q|k|v|o|gate|up|down)_proj_only$"),
}


def agreement(tables: dict[str, list[dict]], metric: str, groups: tuple[str, ...] | None = None, n_permutations: int = 2000,
              seed: int = 0, disjoint: str | None = None) -> dict:
    """Do several dW (e.g. adapter families) put their effect in the same places?

    For every pair of dW, the Spearman rank correlation of ``retained`` over the variants that are
    defined in both, on one ``metric`` (e.g. ``"sycophancy"``), with a two-sided permutation p-value
    (``n_permutations`` shuffles of one side, seeded). Anchors (full, zero) and random controls are
    left out: their retained is fixed at 1 / ≈ 0 for every dW and would inflate the correlation.

    Args:
        tables: ``{name: rows}`` with ``rows`` the ``"rows"`` of :func:`weight_steering.ablation.run.run_ablation`.
        metric: the score the retained values belong to.
        groups: only variants of these groups (e.g. ``("layer",)``: do the dW use the same layers?);
            None: every group. Complementary keep / drop variants (an SVD crop and the rest) are
            anti-correlated by construction for any dW, and nested ones (top 25% inside top 50%)
            correlated, so an all-group ρ is partly structural.
        disjoint: ``"single_layers"`` or ``"single_projections"`` (:data:`DISJOINT_SETS`): only variants
            that share no tensor (each layer alone, or each projection alone), the set on which ρ
            measures agreement and nothing built in.

    Returns:
        ``{"retained": DataFrame [variant × name] of retained (NaN where undefined or unavailable),
        "pairs": [{"a", "b", "spearman", "p_value", "n_variants"}]}``. A pair with fewer than three
        shared variants gets ``spearman = NaN``.
    """
    import itertools

    import pandas as pd

    frame = pd.DataFrame({
        name: {r["variant"]: (r["retained"] if r.get("defined", True) else float("nan"))
               for r in rows if r.get("available") and r.get("metric") == metric
               and r["group"] != "anchor" and not r.get("control_of") and (groups is None or r["group"] in groups)
               and (disjoint is None or DISJOINT_SETS[disjoint].match(r["variant"]))}
        for name, rows in tables.items()
    })
    pairs = []
    for a, b in itertools.combinations(frame.columns, 2):
        shared = frame[[a, b]].dropna()
        rho, p_value = spearman_permutation(shared[a], shared[b], n_permutations, seed)  # per pair: its p does not depend on the other pairs
        pairs.append({"a": a, "b": b, "spearman": rho, "p_value": p_value, "n_variants": len(shared)})
    return {"retained": frame, "pairs": pairs}


# Variants whose retained the seed summary tabulates (every one is built by the module and svd groups), and the
# metrics: the framing-controlled agreement effect, the two framings, and the action-stratified OOD honesty score.
SUMMARY_VARIANTS = ("attention", "mlp", "read_side", "write_side", "q_proj_only", "k_proj_only", "v_proj_only", "o_proj_only",
                    "gate_proj_only", "up_proj_only", "down_proj_only", "top_25pct_rank_S", "not_top_25pct_rank_S",
                    "top_50pct_energy_S", "not_top_50pct_energy_S", "top_90pct_energy_S", "not_top_90pct_energy_S")


SUMMARY_METRICS = ("id_controlled", "id", "id_neutral", "dilemmas_honesty")


def load_ablations(paths: list[str | Path]) -> list[dict]:
    """The ``ablation.json`` of each finished ``wsteer ablate`` folder, with ``family`` and ``dw_seed`` (the dW's training
    seed) read from the dW's folder name (``dw-<family>-seed<s>-<hash>``; :func:`weight_steering.artifacts.read_dw_results`).

    Raises:
        AblationError: a folder without ``ablation.json``, a file that is not JSON, a dW path that does not name its
            family and seed, or two ablations of the same (family, seed).
    """

    return read_dw_results(paths, "ablation.json", "wsteer ablate", AblationError)


def summarize_ablation_seeds(results: list[dict], n_permutations: int = 2000) -> list[dict]:
    """Per family, each summary variant's retained at every seed and across seeds, next to its nulls.

    The summary variants are :data:`SUMMARY_VARIANTS` and, where the runs have them, the causal check's subspace
    variants (``in_<candidate>_k<k>``, ``outside_<candidate>_k<k>``; not their controls, which are the nulls).

    The seed is the unit of replication: the across-seed interval is a Student-t interval over the per-seed retained
    (:func:`weight_steering.evaluation.statistics.seed_summary`). Per seed, the norm-matched random controls and the within-dW
    null (energy-matched random subsets of dW's own singular directions) are given as mean ± sd over their draws.
    Rank agreement between seeds is the Spearman ρ over the projections taken alone (variants that share no tensor,
    :data:`DISJOINT_SETS`), with a permutation p-value.

    Returns:
        ``[{"family", "seeds", "rows": [{"variant", "metric", "per_seed", "row_ci", "random", "within", "mean",
        "ci_low", "ci_high", "n", "energy"}], "agreement": {metric: pairs}}]``. A seed where a variant is undefined
        (Δ(full) ≈ 0) holds NaN and is left out of the interval.
    """

    by_family: dict[str, list[dict]] = {}
    for result in sorted(results, key=lambda r: (r["family"], r["dw_seed"])):
        by_family.setdefault(result["family"], []).append(result)
    summary = []
    for family, runs in by_family.items():
        index = [{(r["variant"], r.get("metric")): r for r in run["rows"]} for run in runs]
        rows = []
        subspace = dict.fromkeys(r["variant"] for run in runs for r in run["rows"]  # the causal check's candidates
                                 if r.get("group") == "subspace" and r.get("control_of") is None)
        for metric in SUMMARY_METRICS:
            for variant in (*SUMMARY_VARIANTS, *subspace):
                found = [ix.get((variant, metric)) for ix in index]
                if all(r is None for r in found):
                    continue
                defined = [r if r is not None and r.get("available", True) and r.get("defined", True) else None for r in found]
                interval = seed_summary([r["retained"] if r else float("nan") for r in defined], skip_nan=True)
                rows.append({
                    "variant": variant, "metric": metric,
                    "row_ci": [(r["ci_low"], r["ci_high"]) if r else (float("nan"), float("nan")) for r in defined],
                    "random": [(r.get("control_random_mean"), r.get("control_random_sd")) if r else (None, None) for r in defined],
                    "within": [(r.get("control_within_dw_mean"), r.get("control_within_dw_sd")) if r else (None, None) for r in defined],
                    "energy": [r.get("energy_fraction") if r else None for r in defined], **interval,
                })
        agreement_by_metric = {}
        if len(runs) > 1:
            tables = {f"seed {run['dw_seed']}": run["rows"] for run in runs}
            for metric in SUMMARY_METRICS:
                agreement_by_metric[metric] = agreement(tables, metric, n_permutations=n_permutations, disjoint="single_projections")["pairs"]
        summary.append({"family": family, "seeds": [run["dw_seed"] for run in runs], "dw": [run["dw"] for run in runs],
                        "rows": rows, "agreement": agreement_by_metric})
    return summary
