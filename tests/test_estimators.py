"""The behaviour estimators: action-stratified OOD scores, the action bias and the framing-controlled ID score."""

import numpy as np
import pytest

from weight_steering.core.behavior_files import load_behavior
from weight_steering.evaluation.effects import contrast, metric_frame
from weight_steering.evaluation.statistics import bootstrap_ci, cluster_boot_means, stratified_mean
from weight_steering.sweep.ranking import rank_families


def _dilemma_records(n_todo_side: int, n_not_side: int, action_shift: float, value_shift: float, seed: int = 0) -> list[dict]:
    """Two α (0, 1) on dilemmas where honesty sits on the "to do" action in ``n_todo_side`` dilemmas and on
    "not to do" in ``n_not_side``; at α = 1 the logratio of every "to do" row moves by ``action_shift`` and
    every honesty-carrying row by ``value_shift`` (other rows by −value_shift)."""
    rng = np.random.default_rng(seed)
    records = []
    for d in range(n_todo_side + n_not_side):
        honest_action = "to_do" if d < n_todo_side else "not_to_do"
        base = rng.normal(size=2)
        for alpha in (0.0, 1.0):
            for i, action in enumerate(("to_do", "not_to_do")):
                label = 1 if action == honest_action else -1
                logratio = base[i] + alpha * (action_shift * (action == "to_do") + value_shift * label)
                records.append({"eval": "dilemmas", "row_id": f"d{d}:{action}", "group": f"d{d}", "action_type": action,
                                "alpha": alpha, "logratio": logratio, "pmass": 0.9, "truncated": False,
                                "label_honesty": label, "label_justice": 0, "label_courage": 0, "label_temperance": 0})
    return records


def test_pure_action_bias_gives_zero_stratified_and_nonzero_pooled_score():
    frame = metric_frame(_dilemma_records(30, 6, action_shift=0.2, value_shift=0.0))
    stratified = contrast(frame, "dilemmas_honesty", 1.0, 0.0)
    pooled = contrast(frame, "dilemmas_honesty_pooled", 1.0, 0.0)
    bias = contrast(frame, "action_bias", 1.0, 0.0)
    assert abs(stratified["mean"]) < 1e-9
    assert pooled["mean"] == pytest.approx(0.1 * (30 - 6) / 36)  # +0.1 per to-do-side dilemma, −0.1 per other
    assert pooled["ci_low"] > 0
    assert bias["mean"] == pytest.approx(0.2) and bias["n"] == 36


def test_pure_value_effect_gives_the_same_stratified_and_pooled_score():
    frame = metric_frame(_dilemma_records(30, 6, action_shift=0.0, value_shift=0.05))
    stratified = contrast(frame, "dilemmas_honesty", 1.0, 0.0)
    pooled = contrast(frame, "dilemmas_honesty_pooled", 1.0, 0.0)
    assert stratified["mean"] == pytest.approx(0.05) and pooled["mean"] == pytest.approx(0.05)
    assert stratified["ci_low"] == pytest.approx(0.05) and stratified["ci_high"] == pytest.approx(0.05)
    # The action bias is label-free: a value effect shows in it only as far as the value sits on one side
    # (+2·0.05 per to-do-side dilemma, −2·0.05 per other), and not at all in a balanced set.
    assert contrast(frame, "action_bias", 1.0, 0.0)["mean"] == pytest.approx(0.1 * (30 - 6) / 36)
    balanced = metric_frame(_dilemma_records(18, 18, action_shift=0.0, value_shift=0.05))
    assert abs(contrast(balanced, "action_bias", 1.0, 0.0)["mean"]) < 1e-9


def test_stratified_bootstrap_resamples_within_strata():
    values = np.r_[np.ones(10), np.zeros(2)]
    strata = np.r_[["a"] * 10, ["b"] * 2]
    clusters = np.arange(12)
    assert stratified_mean(values, strata) == pytest.approx(0.5)
    boot = cluster_boot_means(values, clusters, np.random.default_rng(0), 500, strata)
    assert np.allclose(boot, 0.5)  # each stratum is constant: resampling within strata cannot move the mean
    pooled = cluster_boot_means(values, clusters, np.random.default_rng(0), 500)
    assert pooled.std() > 0.05  # the pooled bootstrap mixes the strata and does move
    # One stratum is exactly the cluster bootstrap.
    assert bootstrap_ci(values, clusters) == bootstrap_ci(values, clusters, strata=np.zeros(12))


def _held_out_records(yes_shift: float, agreement_shift: float) -> list[dict]:
    records = []
    for claim in range(8):
        for alpha in (0.0, 1.0):
            for name, opinion in (("held_out", True), ("held_out_control", False)):
                logratio = 0.1 * claim + alpha * (yes_shift + agreement_shift * opinion)
                records.append({"eval": name, "row_id": f"claim{claim:02d}", "group": f"claim{claim:02d}", "alpha": alpha,
                                "logratio": logratio, "pmass": 0.8, "truncated": False})
    return records


def test_framing_control_cancels_a_general_yes_shift():
    frame = metric_frame(_held_out_records(yes_shift=0.4, agreement_shift=0.0))
    assert contrast(frame, "id", 1.0, 0.0)["mean"] == pytest.approx(0.4)
    assert contrast(frame, "id_neutral", 1.0, 0.0)["mean"] == pytest.approx(0.4)
    assert abs(contrast(frame, "id_controlled", 1.0, 0.0)["mean"]) < 1e-9
    frame = metric_frame(_held_out_records(yes_shift=0.4, agreement_shift=0.1))
    assert contrast(frame, "id_controlled", 1.0, 0.0)["mean"] == pytest.approx(0.1)


def test_records_written_before_the_control_framing_read_as_the_opinion_framing(tmp_path):
    from weight_steering.artifacts import write_jsonl
    from weight_steering.evaluation.scoring import read_records, upgrade_records

    old = [{**r, "eval": "sycophancy"} for r in _held_out_records(0.3, 0.0) if r["eval"] == "held_out"]
    with pytest.raises(ValueError, match="read_records"):  # the analysis knows today's names only: older records go through the reader
        metric_frame(old)
    write_jsonl(tmp_path / "records.jsonl", old)
    frame = metric_frame(read_records(tmp_path / "records.jsonl"))
    assert set(frame["metric"]) == {"id"} and contrast(frame, "id", 1.0, 0.0)["mean"] == pytest.approx(0.3)
    current = _held_out_records(0.3, 0.0)
    assert upgrade_records(current) == current


def test_ranking_uses_the_behaviours_target_and_stratifies():
    records = _dilemma_records(30, 6, action_shift=0.2, value_shift=0.0) + _held_out_records(0.4, 0.0)
    records += [{**r, "alpha": -1.0, "logratio": r["logratio"]} for r in records if r["alpha"] == 0.0]
    cells = [{"cell": {"behavior": "sycophancy", "family": "lora", "seed": s}, "records": records, "norm_dw": 1.0} for s in (0, 1)]
    row = rank_families(cells).iloc[0]
    assert row["ood_target"] == "honesty" and row["ood_sign"] == -1  # sycophancy names honesty, intended to fall
    assert abs(row["ood_target_plus"]) < 1e-9 and row["ood_target_pooled_plus"] > 0.05
    assert row["action_bias_plus"] == pytest.approx(0.2) and abs(row["id_controlled_spread"]) < 1e-9


def test_shipped_sycophancy_training_set_is_balanced_by_answer_word():
    behavior = load_behavior("sycophancy")
    answers = behavior.behavior_answers
    assert answers.count("yes") == answers.count("no") == len(answers) // 2
    small = [answers[i] for i in behavior.prompt_indices(6)]  # the smoke preset's 6 prompts stay balanced
    assert small.count("yes") == small.count("no") == 3
    assert behavior.prompt_indices(None) == list(range(24))


def test_seed_interval_is_as_wide_as_three_seeds_warrant():
    from scipy import stats

    from weight_steering.evaluation.statistics import hierarchical_bootstrap, percentile_interval, seed_interval

    values = [0.63, 1.62, 1.96]  # PiSSA's three seed spreads (RESULTS)
    interval = seed_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
    assert interval["ci_high"] - interval["mean"] == pytest.approx(half)
    assert interval["ci_low"] < min(values) and interval["ci_high"] > max(values)  # wider than the observed seeds
    # The percentile bootstrap over 3 seeds cannot leave the observed range; the t-interval does.
    clusters = np.repeat(np.arange(20), 2)
    per_seed = [{"m": (np.full(40, v), clusters)} for v in values]
    boot = percentile_interval(np.mean(values), hierarchical_bootstrap(per_seed)["m"])
    assert boot["ci_low"] >= min(values) - 1e-9 and boot["ci_high"] <= max(values) + 1e-9
    assert np.isnan(seed_interval([1.0])["ci_low"])


def test_ranking_interval_widens_when_seeds_disagree():
    def cell(seed, shift):
        records = _held_out_records(yes_shift=shift, agreement_shift=0.0)
        records += [{**r, "alpha": -1.0, "logratio": r["logratio"] - 2 * shift * (r["alpha"] == 1.0)} for r in records if r["alpha"] == 1.0]
        return {"cell": {"behavior": "sycophancy", "family": "lora", "seed": seed}, "records": records, "norm_dw": 1.0}

    agree = rank_families([cell(0, 0.4), cell(1, 0.4), cell(2, 0.4)]).iloc[0]
    disagree = rank_families([cell(0, 0.1), cell(1, 0.4), cell(2, 0.7)]).iloc[0]
    assert agree["interval"] == "t over seed means" and agree["id_spread_per_seed"] == pytest.approx([0.8, 0.8, 0.8])
    assert agree["id_spread_ci_high"] - agree["id_spread_ci_low"] == pytest.approx(0.0, abs=1e-9)
    assert disagree["id_spread_ci_high"] - disagree["id_spread_ci_low"] > 2.0  # t(2) · sd(0.2, 0.8, 1.4) / √3 each side


def test_pooled_estimator_reproduces_the_archived_numbers():
    """The committed sweep cells carry the summaries written by the earlier (pooled) estimator; the pooled
    columns of today's frame reproduce them exactly, on the same records."""
    import gzip
    import json
    from pathlib import Path

    from weight_steering.evaluation.scoring import upgrade_records

    folder = next(Path("docs/sweep/cells").glob("*/sycophancy_unbalanced/lora-seed0"))
    cell = json.loads((folder / "cell.json").read_text())
    frame = metric_frame(upgrade_records([json.loads(line) for line in gzip.decompress((folder / "records.jsonl.gz").read_bytes()).splitlines()]))
    old = {(c["metric"], c["contrast"]): c for c in cell["summary"]["contrasts"]}
    for value in ("honesty", "justice", "courage", "temperance"):
        new = contrast(frame, f"dilemmas_{value}_pooled", 1.0, 0.0)
        was = old[(f"dilemmas_{value}", "α=+1 − α=+0")]
        assert (new["mean"], new["ci_low"], new["ci_high"]) == pytest.approx((was["mean"], was["ci_low"], was["ci_high"]), abs=1e-12)
    was = old[("sycophancy", "α=+1 − α=+0")]
    new = contrast(frame, "id", 1.0, 0.0)
    assert (new["mean"], new["ci_low"], new["ci_high"]) == pytest.approx((was["mean"], was["ci_low"], was["ci_high"]), abs=1e-12)


def _run(seed: int, data_seed: int, controlled: float | None, sampler: str | None = "cached") -> dict:
    contrasts = [] if controlled is None else [{"metric": "id_controlled", "contrast": "α=+1 − α=+0", "mean": controlled,
                                                "ci_low": controlled - 0.05, "ci_high": controlled + 0.05, "n": 12}]
    generation = {"seed": data_seed} | ({} if sampler is None else {"sampler": sampler})
    return {"behavior": "sycophancy", "family": "lora", "seed": seed, "filtered": False, "n_pairs": 240, "norm_dw": 2.4,
            "config": {"generation": generation}, "summary": {"contrasts": contrasts, "ood_target": None}}


def test_main_jobs_that_differ_only_in_seeds_get_a_t_interval_over_the_seeds():
    from scipy import stats

    from weight_steering.main_job.render import render_run_summary
    from weight_steering.main_job.summary import run_seed_groups, upgrade_run

    runs = [_run(0, 0, 0.1), _run(1, 1, 0.2), _run(2, 2, 0.3),          # one group: three seeds of the cached sampler
            _run(0, 0, 0.9, sampler=None), _run(1, 1, None, sampler="transformers"),   # a group whose seed 1 lacks the measure
            _run(5, 5, 0.4, sampler="other")]                                 # one seed only: no group
    runs = [upgrade_run(r) for r in runs]  # format 1 (no "format"): a run without a sampler used the transformers one
    assert runs[3]["config"]["generation"]["sampler"] == "transformers" and runs[0]["config"]["generation"]["sampler"] == "cached"
    with pytest.raises(ValueError, match="format 3.*upgrade weight-steering"):
        upgrade_run({**runs[0], "format": 3})
    measures = [("id_controlled", "α=+1 − α=+0")]
    groups = run_seed_groups(runs, measures)
    assert [(g["sampler"], g["seeds"]) for g in groups] == [("cached", [(0, 0), (1, 1), (2, 2)]), ("transformers", [(0, 0), (1, 1)])]
    [interval] = groups[0]["measures"]
    half = stats.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)   # sd of 0.1, 0.2, 0.3 is 0.1
    assert interval["per_seed"] == [0.1, 0.2, 0.3] and interval["mean"] == pytest.approx(0.2)
    assert (interval["ci_low"], interval["ci_high"]) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert groups[1]["measures"] == [None]
    text = render_run_summary(runs)
    assert "cached sampler, seeds 0, 1, 2: per seed → t over seeds" in text and f"+0.200 [{0.2 - half:+.3f}, {0.2 + half:+.3f}]" in text
    assert text.count("t over seeds") == 2
    assert "| sycophancy, lora seed 0, transformers sampler |" in text and "| sycophancy, lora seed 5, other sampler |" in text
