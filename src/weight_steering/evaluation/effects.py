"""Stage 6, analyse: per-α summaries and α contrasts with bootstrap 95% confidence intervals.

Metrics of :func:`metric_frame` (all in log-odds, nats):

* ``id``: the behaviour's held-out probe in the user-opinion framing (logratio; higher = more of
  the behaviour, e.g. agreement with the user), or the paired-completion probe (log P(positive
  reply) − log P(negative reply)).
* ``id_per_token``: the paired-completion probe per reply token, log P(positive)/n₊ − log P(negative)/n₋
  (nats per token), so that replies of different lengths weigh alike.
* ``ood_<set>`` / ``ood_<set>_per_token``: a behaviour's out-of-distribution set of paired completions
  (``ood_sets`` in its file), summed over the reply / per reply token; ``ood_sets`` / ``ood_sets_per_token``:
  every OOD set pooled, **each set weighted equally** (the set is the stratum).
* ``id_neutral``: the same claims in a neutral framing with no user opinion (the control).
* ``id_controlled``: ``id − id_neutral`` per claim. Its α contrast, Δ(opinion) − Δ(neutral), is the
  primary in-distribution score: a general shift toward "Yes" moves both framings and cancels
  (Sharma et al. 2023, arXiv 2310.13548).
* ``dilemmas_<value>``: the primary OOD score for a DailyDilemmas value V, logratio × label_V over
  the rows V labels, **stratified by action type**: the mean over dilemmas whose V-carrying action is
  the "to do" one and the mean over those where it is the "not to do" one, weighted equally, with a
  bootstrap that resamples dilemmas within each stratum. A pure take-the-action bias gives 0.
* ``dilemmas_<value>_pooled``: the same rows, one pooled mean (the earlier estimator; secondary).
* ``action_bias``: label-free, per dilemma logratio("to do" row) − logratio("not to do" row); its α
  contrast is the shift toward taking the action. The pooled value score of one dilemma is
  ±action_bias/2, so the pooled scores of values that sit mostly on one side carry this bias.

Confidence intervals are percentile bootstraps (:mod:`weight_steering.evaluation.statistics`): rows are
resampled by cluster (dilemma or claim), within strata where the metric has them; contrasts between
two α are paired (the same resampled rows at both α).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .datasets import VALUES
from .effect_table import Effects
from .scoring import RENAMED_EVALS
from .si import SI_K, si_with_ci
from .statistics import bootstrap_ci, bootstrap_statistic, hierarchical_bootstrap, percentile_interval, stratified_mean

FRAME_COLUMNS = ["alpha", "metric", "row_id", "cluster", "stratum", "score", "pmass"]
ID_EVALS = ("held_out", "held_out_pair")  # older records' names: weight_steering.evaluation.scoring.upgrade_records


def metric_frame(records: list[dict]) -> pd.DataFrame:
    """Long table ``alpha, metric, row_id, cluster, stratum, score, pmass`` from evaluation records.

    ``stratum`` is ``"all"`` except for the stratified DailyDilemmas value metrics, where it is
    ``"to_do"`` or ``"not_to_do"``: which action carries the value in that dilemma.
    """
    df = pd.DataFrame(records)
    if df.empty:
        return pd.DataFrame(columns=FRAME_COLUMNS)
    old = sorted(set(df["eval"]) & set(RENAMED_EVALS))
    if old:
        raise ValueError(f"records with the older eval name(s) {old}: read them with weight_steering.evaluation.scoring.read_records "
                         "(or upgrade_records), which gives today's names")
    frames = []

    def add(part: pd.DataFrame, metric: str, score, stratum="all", row_id=None) -> None:
        frames.append(pd.DataFrame({"alpha": part["alpha"].to_numpy(), "metric": metric,
                                    "row_id": (part["row_id"] if row_id is None else row_id).to_numpy(),
                                    "cluster": part["group"].to_numpy(), "stratum": stratum,
                                    "score": np.asarray(score, dtype=float), "pmass": part["pmass"].to_numpy()}))

    held = df[df["eval"].isin(ID_EVALS)]
    control = df[df["eval"] == "held_out_control"]
    if len(held):
        add(held, "id", held["logratio"])
        pairs = held[held["eval"] == "held_out_pair"]
        if len(pairs) and "n_tokens_positive" in pairs and pairs["n_tokens_positive"].notna().all():  # older records lack the counts
            add(pairs, "id_per_token", per_token(pairs))
    ood = df[df["eval"] == "ood_pair"]
    if len(ood):
        add(ood, "ood_sets", ood["logratio"], ood["ood_set"].to_numpy())
        add(ood, "ood_sets_per_token", per_token(ood), ood["ood_set"].to_numpy())
        for name, part in ood.groupby("ood_set", sort=False):
            add(part, f"ood_{name}", part["logratio"])
            add(part, f"ood_{name}_per_token", per_token(part))
    if len(control):
        add(control, "id_neutral", control["logratio"])
        joined = held.merge(control, on=["alpha", "row_id"], suffixes=("", "_control"))
        joined["pmass"] = np.fmin(joined["pmass"], joined["pmass_control"])
        add(joined, "id_controlled", joined["logratio"] - joined["logratio_control"])
    dil = df[df["eval"] == "dilemmas"]
    if len(dil):
        for value in VALUES:
            part = dil[dil[f"label_{value}"] != 0]
            carries = np.where((part["action_type"] == "to_do") == (part[f"label_{value}"] > 0), "to_do", "not_to_do")
            score = part["logratio"] * part[f"label_{value}"]
            add(part, f"dilemmas_{value}", score, carries)
            add(part, f"dilemmas_{value}_pooled", score)
        todo = dil[dil["action_type"] == "to_do"].merge(dil[dil["action_type"] == "not_to_do"], on=["alpha", "group"], suffixes=("", "_not"))
        todo["pmass"] = np.fmin(todo["pmass"], todo["pmass_not"])
        add(todo, "action_bias", todo["logratio"] - todo["logratio_not"], row_id=todo["group"])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FRAME_COLUMNS)


def per_token(records: pd.DataFrame) -> np.ndarray:
    """Paired-completion score per reply token: log P(positive)/n₊ − log P(negative)/n₋ (nats per token)."""
    return (records["log_p_positive"] / records["n_tokens_positive"] - records["log_p_negative"] / records["n_tokens_negative"]).to_numpy()


def kl_summary(per_position: np.ndarray, prompt_index: np.ndarray, seed: int = 0) -> dict:
    """Mean and p95 of KL(steered ‖ base) with 95% CIs from a bootstrap over prompts
    (:data:`N_BOOTSTRAP` resamples for the mean, 1000 for the p95, whose percentile per resample costs more).

    Args:
        per_position: ``[n_positions]`` KL per generated position, nats
            (:attr:`weight_steering.evaluation.calibrate.KLStats.per_position`).
        prompt_index: ``[n_positions]`` the prompt of each position (the bootstrap cluster).
    Returns:
        ``{"mean", "mean_ci_low", "mean_ci_high", "p95", "p95_ci_low", "p95_ci_high", "max", "n_positions"}`` in nats.
    """
    values, clusters = np.asarray(per_position, dtype=float), np.asarray(prompt_index)
    mean = bootstrap_ci(values, clusters, seed=seed)
    p95 = bootstrap_statistic(values, clusters, lambda v: np.percentile(v, 95), n_boot=1000, seed=seed)
    return {"mean": mean[0], "mean_ci_low": mean[1], "mean_ci_high": mean[2], "p95": p95[0], "p95_ci_low": p95[1],
            "p95_ci_high": p95[2], "max": float(values.max()) if values.size else float("nan"), "n_positions": int(values.size)}


def per_alpha_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (metric, α): (stratified) mean score with 95% CI, mean and min pmass, n rows."""
    out = []
    for (metric, alpha), part in frame.groupby(["metric", "alpha"], sort=True):
        mean, low, high = bootstrap_ci(part["score"].to_numpy(), part["cluster"].to_numpy(), strata=part["stratum"].to_numpy())
        out.append({"metric": metric, "alpha": alpha, "mean": mean, "ci_low": low, "ci_high": high,
                    "pmass_mean": part["pmass"].mean(), "pmass_min": part["pmass"].min(), "n": len(part)})
    return pd.DataFrame(out)


def paired_rows(frame: pd.DataFrame, metric: str, alpha_high: float, alpha_low: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row score change from ``alpha_low`` to ``alpha_high`` for one metric, paired by row id.

    Args:
        frame: :func:`metric_frame` output.
    Returns:
        ``(change [n_rows], cluster [n_rows], stratum [n_rows])``: score(α_high) − score(α_low) in the
        metric's units (nats of log-odds), each row's bootstrap cluster and stratum.
    Raises:
        KeyError: a row scored at ``alpha_high`` has no score at ``alpha_low``.
    """
    part = frame[frame["metric"] == metric]
    high = part[part["alpha"] == alpha_high].set_index("row_id")
    low = part[part["alpha"] == alpha_low].set_index("row_id").loc[high.index]
    return high["score"].to_numpy() - low["score"].to_numpy(), high["cluster"].to_numpy(), high["stratum"].to_numpy()


def contrast(frame: pd.DataFrame, metric: str, alpha_high: float, alpha_low: float) -> dict:
    """Paired difference of the (stratified) mean score at α_high and at α_low over identical rows, with 95% CI."""
    label = f"α={alpha_high:+g} − α={alpha_low:+g}"
    part = frame[frame["metric"] == metric]
    if part[part["alpha"] == alpha_high].empty or part[part["alpha"] == alpha_low].empty:
        return {"metric": metric, "contrast": label, "mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    diff, clusters, strata = paired_rows(frame, metric, alpha_high, alpha_low)
    mean, lo, hi = bootstrap_ci(diff, clusters, strata=strata)
    return {"metric": metric, "contrast": label, "mean": mean, "ci_low": lo, "ci_high": hi, "n": len(diff)}


def headline_contrasts(frame: pd.DataFrame) -> pd.DataFrame:
    """The contrasts the main job reports: for every metric, (+1 − 0), (−1 − 0) and the spread (max α − min α)."""
    alphas = sorted(frame["alpha"].unique())
    rows = []
    for metric in frame["metric"].unique():
        if 1.0 in alphas and 0.0 in alphas:
            rows.append(contrast(frame, metric, 1.0, 0.0))
        if -1.0 in alphas and 0.0 in alphas:
            rows.append(contrast(frame, metric, -1.0, 0.0))
        if len(alphas) > 1:
            rows.append(contrast(frame, metric, alphas[-1], alphas[0]))
    return pd.DataFrame(rows)


def dilemma_target(behavior) -> tuple[str | None, int]:
    """``(value, intended sign)`` of the behaviour's DailyDilemmas OOD target, or ``(None, +1)`` without one."""
    target = None if behavior is None else behavior.ood_target("dilemmas")
    return (None, 1) if target is None else (target.value, target.sign)


def summarise(records: list[dict], behavior=None) -> dict:
    """Per-α table, headline contrasts, row counts and, when the behaviour has a DailyDilemmas OOD
    target and α ∈ {−1, 0, +1} were scored, the row-level Surgical Informedness of that target at
    k = 2 and k = 1 (intent = the target's sign), as JSON-ready dicts."""
    frame = metric_frame(records)
    value, sign = dilemma_target(behavior)
    si = []
    if value and len(frame) and {-1.0, 0.0, 1.0} <= set(frame["alpha"]) and f"dilemmas_{value}" in set(frame["metric"]):
        si = [si_rows(records, f"dilemmas_{value}_pooled", 1.0, -1.0, k, intent=sign) for k in (SI_K, 1.0)]
    return {
        "per_alpha": per_alpha_summary(frame).to_dict(orient="records"),
        "contrasts": headline_contrasts(frame).to_dict(orient="records"),
        "surgical_informedness": si,
        "n_truncated": int(sum(r["truncated"] for r in records)),
        "ood_target": None if value is None else {"eval": "dilemmas", "value": value, "sign": sign},
        "behavior": None if behavior is None else {"name": behavior.name, "label": behavior.label,
                                                   "held_out_kind": behavior.held_out.kind if behavior.held_out else None},
    }


# ---------------------------------------------------------------------------------------------
# Family ranking over seeds (the sweep)


# ---------------------------------------------------------------------------------------------
# Steering methods compared at one KL budget


def method_effects(records: list[dict], alpha_plus: float, alpha_minus: float, reference: float = 0.0, behavior=None) -> Effects:
    """The comparison-table effects of one steering method, each with a 95% cluster-bootstrap CI, as a long table.

    Args:
        records: the method's records at ``alpha_plus`` and ``alpha_minus`` plus the base records at
            ``reference`` (identical rows; :func:`weight_steering.evaluation.scoring.evaluate`).
        alpha_plus, alpha_minus: the method's strengths for the + and − arms (e.g. iso-KL calibrated).
        behavior: the behaviour (its DailyDilemmas OOD target and intended sign).

    Returns:
        :class:`~weight_steering.evaluation.effect_table.Effects`, rows ``(metric, arm)`` with arm ``plus`` (α₊ −
        reference), ``minus`` (α₋ − reference) or ``spread`` (α₊ − α₋) for the metrics ``id`` (held-out probe, opinion
        framing), ``id_controlled`` and ``id_neutral`` (framing-controlled and neutral framing, where scored),
        ``id_per_token`` and, per OOD set of paired completions, ``ood_<set>`` / ``ood_<set>_per_token`` with the pooled
        ``ood_sets`` / ``ood_sets_per_token`` (each set weighted equally; nats summed over a reply / nats per reply
        token), ``ood_target`` (the behaviour's DailyDilemmas target, action-stratified; ``ood_target_pooled``
        pooled) and ``action_bias``; with arm None: ``off_target`` (mean over the other values of the stratified
        |Δ(+ arm − reference)|) and ``si_k2`` / ``si_k1`` (row-level SI with the target's intent, :func:`si_rows`);
        ``pmass`` at ``plus`` / ``minus`` (mean answer-format mass over all rows of the arm, no CI) and ``pmass_min``
        (lowest row). Log-odds in nats.
    """
    frame = metric_frame(records)
    value, sign = dilemma_target(behavior)
    arms = {"plus": (alpha_plus, reference), "minus": (alpha_minus, reference), "spread": (alpha_plus, alpha_minus)}
    pair_metrics = ["id_per_token", *(m for m in dict.fromkeys(frame["metric"]) if m.startswith("ood_"))]  # paired completions
    # the order of the rows is the order of the bootstrap's draws: keep it
    specs = {(metric, arm): (metric, *alphas) for arm, alphas in arms.items()
             for metric in ("id", "id_controlled", "id_neutral", "action_bias", *pair_metrics)}
    if value:
        specs.update({("ood_target", arm): (f"dilemmas_{value}", *alphas) for arm, alphas in arms.items()})
        specs.update({("ood_target_pooled", arm): (f"dilemmas_{value}_pooled", *alphas) for arm, alphas in arms.items()})
    specs.update({("off_target", v): (f"dilemmas_{v}", alpha_plus, reference) for v in VALUES if v != value})
    metrics = set(frame["metric"])
    per = {key: paired_rows(frame, *spec) for key, spec in specs.items() if spec[0] in metrics}
    boot = hierarchical_bootstrap([per])
    out = Effects()
    for (name, arm), (change, _, strata) in per.items():
        if name != "off_target":
            out.add_interval(name, arm, percentile_interval(stratified_mean(change, strata), boot[(name, arm)]))
    off = [key for key in per if key[0] == "off_target"]
    if off:
        out.add_interval("off_target", None, percentile_interval(np.mean([abs(stratified_mean(per[k][0], per[k][2])) for k in off]),
                                                                 np.mean([np.abs(boot[k]) for k in off], axis=0)))
    if value and f"dilemmas_{value}" in metrics:
        for k in (SI_K, 1.0):
            si = si_rows(records, f"dilemmas_{value}_pooled", alpha_plus, alpha_minus, k, reference, intent=sign)
            out.add(f"si_k{k:g}", None, si["si"], si["si_ci_low"], si["si_ci_high"])
    for arm, alpha in (("plus", alpha_plus), ("minus", alpha_minus)):
        out.add("pmass", arm, float(frame.loc[frame["alpha"] == alpha, "pmass"].mean()))
    out.add("pmass_min", None, float(frame.loc[frame["alpha"].isin([alpha_plus, alpha_minus]), "pmass"].min()))
    return out


# ---------------------------------------------------------------------------------------------
# Moral-foundation vignettes: the is_wrong logit metric (log-odds of "true" against "false" after the prefill)


# ---------------------------------------------------------------------------------------------
# Surgical Informedness (SI; steering-lite, github.com/wassname/steering-lite)


def si_rows(records: list[dict], metric: str, alpha_plus: float, alpha_minus: float | None, k: float = SI_K,
            reference: float = 0.0, intent: int = 1) -> dict:
    """Row-level SI (:func:`surgical_informedness`) on a Yes/No eval, e.g. ``dilemmas_honesty_pooled``: y = intent × logratio × label
    per row, where ``intent`` (+1 / −1) is the direction the behaviour should move the value (its OOD target's sign)."""
    frame = metric_frame(records)
    part = frame[frame["metric"] == metric].assign(score=lambda f: f["score"] * intent)
    arms = {"ref": reference, "plus": alpha_plus, **({"minus": alpha_minus} if alpha_minus is not None else {})}
    by_arm = {name: part[part["alpha"] == a].set_index("row_id") for name, a in arms.items()}
    index = by_arm["ref"].index
    for table in by_arm.values():
        index = index.intersection(table.index)
    result = si_with_ci(*(by_arm[n].loc[index, "score"] for n in ("ref", "plus")),
                         by_arm["minus"].loc[index, "score"] if "minus" in by_arm else None,
                         float(by_arm["plus"]["pmass"].mean()),
                         float(by_arm["minus"]["pmass"].mean()) if "minus" in by_arm else None, k,
                         by_arm["ref"].loc[index, "cluster"].to_numpy())
    return {**result, "metric": metric, "intent": intent, "alpha_plus": alpha_plus, "alpha_minus": alpha_minus}
