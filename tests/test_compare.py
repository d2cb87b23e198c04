import json
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from weight_steering.comparison.result import FORMAT_VERSION, Arm, ComparisonFormatError, ComparisonResult, read_comparison
from weight_steering.comparison.run import CompareConfig, CompareError, check_config, comparison_dw, run_comparison
from weight_steering.comparison.seeds import load_comparisons
from weight_steering.evaluation.effects import kl_summary
from weight_steering.evaluation.statistics import ratio_ci
from weight_steering.main_job.config import preset_config

TINY = {"generation": {"n_prompts": 3, "n_personas": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 8},
        "train": {"rank": 4, "lora_alpha": 8, "learning_rate": 5e-3, "batch_size": 4}}


def _config(tmp_path, **extra):
    base = {"behavior": "sycophancy", "model": "tiny-random-llama", "target": 0.02, "tolerance": 0.01, "n_tokens": 2,
            "curve_fractions": (0.5,), "dilemma_limit": 2, "prompt_limit": 6, "n_contrast_pairs": 6, "s_space_rank": 2, "out": str(tmp_path)}
    return CompareConfig(**{**base, **extra})


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_every_method_on_identical_rows_with_kl_per_sign_and_resume(tiny, tmp_path):
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    model, tokenizer = tiny
    config = _config(tmp_path)
    result = run_comparison(config, (model, tokenizer), "test", preset_config(**TINY))
    by_key = {m.key: m for m in result.methods}
    assert list(by_key) == list(config.methods)
    for key, m in by_key.items():
        assert m.plus.alpha > 0 > m.minus.alpha, key
        if m.continuous:  # calibrated per sign: converged within tolerance, or says why not
            for arm in (m.plus, m.minus):
                assert (arm.converged and abs(arm.p95 - config.target) <= config.tolerance) or arm.message, key
                assert np.isfinite(arm.audit_p95) and arm.n_forward_passes > 0
                assert arm.audit_p95_ci_low <= arm.audit_p95 <= arm.audit_p95_ci_high, key
                assert arm.audit_mean_ci_low <= arm.audit_mean <= arm.audit_mean_ci_high <= arm.audit_max, key
            assert len(m.curve) == 1 + 2 + 2 * len(config.curve_fractions)
        else:
            assert m.plus.alpha == 1.0 and m.plus.p95 > 0 and m.plus.converged is None
        assert {("ood_target", "plus"), ("ood_target_pooled", "plus"), ("action_bias", "plus"), ("si_k2", None), ("id", "plus"),
                ("id_controlled", "plus"), ("nll_change", "plus"), ("nll_change", "minus")} <= {(e.metric, e.arm) for e in m.effects}
    for measure in ("ood_target", "id"):  # sycophancy has held-out rows: both spreads get a ratio per method
        assert {r["method"] for r in result.ratios if r["measure"] == measure} == set(config.methods) - {"dW"}
    assert all((metric, "spread") in by_key["dW"].effects for metric in ("id", "id_controlled", "ood_target"))
    assert by_key["caa_best"].spec["layers"][0] in range(model.config.num_hidden_layers)
    path = result.path
    assert (path / "comparison.md").read_text().count("\n| ") >= len(config.methods)
    assert (path / "effect_vs_kl.png").stat().st_size > 0
    first = read_comparison(path)
    assert first.format == FORMAT_VERSION and json.dumps(first.to_json()) == json.dumps(result.to_json())  # the file is the result
    again = run_comparison(config, (model, tokenizer), "test", preset_config(**TINY))  # every stage reused: same numbers
    assert [m.plus.alpha for m in again.methods] == [m.plus.alpha for m in first.methods]
    assert again.ratios == first.ratios and [m.effects for m in again.methods] == [m.effects for m in first.methods]


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_a_method_registered_in_one_place_is_calibrated_evaluated_and_tabled(tiny, tmp_path):
    """A new method is one builder and one registry line; the comparison then treats it like every other."""
    from weight_steering.comparison.methods import COMPARISON_METHODS, register_method
    from weight_steering.core.methods import weight_method

    @register_method("dw_first_layer", "dW on its first layer only (a toy method)")
    def first_layer(context):
        first = min(context.slice_layers)
        part = {k: v for k, v in context.dw.tensors.items() if f".layers.{first}." in k}
        return weight_method(part, f"dW, layer {first}"), {"dw_part": sorted(part)}

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_method("dw_first_layer", "again")(first_layer)
        model, tokenizer = tiny
        config = _config(tmp_path, methods=("dw_first_layer",), curve_fractions=())
        result = run_comparison(config, (model, tokenizer), "test", preset_config(**TINY))
        toy = result.method("dw_first_layer")
        assert toy.name.startswith("dW, layer") and toy.continuous and toy.plus.alpha > 0 > toy.minus.alpha
        assert ("id", "plus") in toy.effects and ("nll_change", "plus") in toy.effects
        assert f"| {toy.name} |" in (result.path / "comparison.md").read_text()
    finally:
        COMPARISON_METHODS.pop("dw_first_layer", None)


def test_bad_comparison_input_is_refused(tiny, tmp_path, monkeypatch):
    with pytest.raises(CompareError, match="unknown method"):
        check_config(_config(tmp_path, methods=("dW", "telepathy")))
    for target in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(CompareError, match="finite number of nats > 0"):
            check_config(_config(tmp_path, target=target))
    with pytest.raises(CompareError, match="fractions"):
        check_config(_config(tmp_path, curve_fractions=(1.5,)))
    with pytest.raises(CompareError, match="repeat a value"):
        check_config(_config(tmp_path, curve_fractions=(0.5, 0.5)))
    with pytest.raises(CompareError, match="--generation-tokens"):
        check_config(_config(tmp_path, generation_tokens=0))
    with pytest.raises(CompareError, match="--filter-pairs names the pair judge"):
        check_config(_config(tmp_path, filter_pairs="vader"))
    with pytest.raises(CompareError, match="--size-control draws as many random pairs"):
        check_config(_config(tmp_path, size_control=True))


def test_ratio_ci_pairs_rows():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(50), 2)
    denominator = 1.0 + 0.1 * rng.standard_normal(100)
    ratio, low, high = ratio_ci(2 * denominator, denominator, clusters)
    assert ratio == pytest.approx(2.0) and low == pytest.approx(2.0) and high == pytest.approx(2.0)
    ratio, low, high = ratio_ci(denominator + rng.standard_normal(100), denominator, clusters)
    assert low < ratio < high


def test_kl_summary_bootstraps_over_prompts():
    prompts = np.repeat(np.arange(20), 8)
    same = kl_summary(np.full(160, 0.3), prompts)
    assert same["p95"] == same["p95_ci_low"] == same["p95_ci_high"] == pytest.approx(0.3) and same["n_positions"] == 160
    values = np.where(prompts < 2, 5.0, 0.1)  # two prompts carry all the KL: resampling prompts moves the p95 a lot
    summary = kl_summary(values, prompts)
    assert summary["p95"] == pytest.approx(5.0) and summary["p95_ci_low"] == pytest.approx(0.1) and summary["max"] == 5.0
    assert summary["mean"] == pytest.approx(0.59) and summary["mean_ci_low"] < 0.59 < summary["mean_ci_high"]


def test_comparison_seed_sets_the_data_seed_unless_fixed(tiny, tmp_path, monkeypatch):
    """Seed s of a comparison samples its data with seed s too (both sources of variation), unless fixed."""
    from weight_steering.comparison import run as compare

    seen = []

    def stop(run_config, model, tokenizer):
        seen.append((run_config.generation.seed, run_config.train.seed, run_config.filter_pairs, run_config.pair_judge))
        raise RuntimeError("stop after planning")

    monkeypatch.setattr(compare, "prepare_job", stop)
    for data_seed, filter_pairs in ((None, None), (0, None), (None, "metric")):
        with pytest.raises(RuntimeError, match="stop after planning"):
            run_comparison(_config(tmp_path, seed=2, data_seed=data_seed, filter_pairs=filter_pairs), tiny, "test", preset_config(**TINY))
    assert seen == [(2, 2, False, "model"), (0, 2, False, "model"), (2, 2, True, "metric")]
    # a filtered comparison keeps its own result, and an unfiltered one's record has no filter field (archived bytes kept)
    assert compare.result_name(_config(tmp_path, seed=2, filter_pairs="metric", target=1.0)) == "lora-seed2-filtered-metric"
    assert "filter_pairs" not in compare.config_record(_config(tmp_path)) and compare.config_record(_config(tmp_path, filter_pairs="model"))["filter_pairs"] == "model"
    control = _config(tmp_path, seed=2, filter_pairs="metric", size_control=True, target=1.0)
    assert compare.result_name(control) == "lora-seed2-filtered-metric-sizecontrol" and compare.config_record(control)["size_control"]
    assert "size_control" not in compare.config_record(_config(tmp_path, filter_pairs="metric"))


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_comparison_resumes_from_its_archive_on_a_fresh_output_root(tiny, tmp_path, monkeypatch):
    """Every small finished stage goes to the archive; a run on an empty output root restores them and
    measures no KL again (only the adapters and dW are retrained, to the same bytes). Seeds get their own folders."""
    model, tokenizer = tiny
    archive = tmp_path / "archive"
    config = _config(tmp_path, methods=("dW", "persona"), curve_fractions=(), out=str(tmp_path / "first"), archive=str(archive))
    first = run_comparison(config, (model, tokenizer), "test", preset_config(**TINY))
    assert first.path.name == "lora-seed0-kl0.02" and (first.path / "comparison.json").is_file()
    stages = {p.parent.name for p in archive.rglob("stage.json")}
    assert any(n.startswith("data-") for n in stages) and any(n.startswith("calibrate-dW-minus") for n in stages)
    assert not any(n.startswith(("train-", "dw-")) for n in stages)  # large: retrained instead
    # another run's finished stages under the same roots (its data, a method this run did not ask for) stay out of the archive
    from weight_steering.stage_cache import run_stage

    job_dir = next(d.parent for d in (tmp_path / "first").rglob("data-*") if d.is_dir())
    for directory in (job_dir / "data-otherrun", first.path.parent / "calibrate-pca_slice-plus-otherrun"):
        run_stage("another run's stage", directory, "k", lambda d: (d / "x.json").write_text("{}"))
    assert run_comparison(config, (model, tokenizer), "test", preset_config(**TINY)).ratios == first.ratios
    assert {p.parent.name for p in archive.rglob("stage.json")} == stages
    from weight_steering.comparison import run as compare

    def no_kl(*args, **kwargs):
        raise AssertionError("a KL measurement ran although its stage was archived")

    monkeypatch.setattr(compare, "kl_from_base", no_kl)
    again = run_comparison(replace(config, out=str(tmp_path / "second")), (model, tokenizer), "test", preset_config(**TINY))
    assert [m.plus for m in again.methods] == [m.plus for m in first.methods]
    assert again.ratios == first.ratios
    # --dw-only on a third empty root: the archived data is restored, the same dW trained, no comparison result rewritten.
    archived_results = {p: p.read_bytes() for p in archive.rglob("comparison.json")}
    only = comparison_dw(replace(config, out=str(tmp_path / "third")), (model, tokenizer), preset_config(**TINY))
    assert only.name == again.dw_dir.name
    assert (only / "dW.safetensors").read_bytes() == (again.dw_dir / "dW.safetensors").read_bytes()
    assert archived_results and all(p.read_bytes() == b for p, b in archived_results.items())
    # On a CPU whose kernels round fp32 sums otherwise, the retrained dW differs in its low bits (simulated here by a
    # relative 1e-6). Its stages are keyed on its inputs, so the archived calibrations and evaluations are reused.
    from weight_steering.main_job import stages as pipeline

    real_compute_dw = pipeline.compute_dw
    monkeypatch.setattr(pipeline, "compute_dw", lambda *a, **k: _scaled(real_compute_dw(*a, **k), 1 + 1e-6))
    monkeypatch.setattr(compare, "evaluate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("an archived evaluation ran")))
    other = run_comparison(replace(config, out=str(tmp_path / "other_cpu")), (model, tokenizer), "test", preset_config(**TINY))
    assert other.dw_dir.name == again.dw_dir.name  # the same inputs, the same stage
    assert (other.dw_dir / "dW.safetensors").read_bytes() != (again.dw_dir / "dW.safetensors").read_bytes()
    assert [m.plus for m in other.methods] == [m.plus for m in first.methods] and other.ratios == first.ratios
    assert compare.result_name(replace(config, data_seed=3, target=1.0)) == "lora-seed0-data3"
    assert compare.result_name(replace(config, seed=2, data_seed=2, target=1.0)) == "lora-seed2"
    assert compare.result_name(replace(config, seed=2, target=0.5)) == "lora-seed2-kl0.5"  # each budget its own result
    assert compare.result_name(replace(config, name="recipes-seed2")) == "recipes-seed2"
    with pytest.raises(CompareError, match="plain folder name"):
        check_config(replace(config, name="../x"))


def _scaled(dw, factor: float):
    dw.tensors = {k: v * factor for k, v in dw.tensors.items()}
    return dw


def _fake_comparison_json(seed: int, id_plus: float, behavior: str = "sycophancy", target: float = 1.0) -> dict:
    """A ``comparison.json`` of format 1 (effects keyed ``<metric>_<arm>``), with only the numbers the seed tables read."""
    effect = lambda m: {"mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01}  # noqa: E731
    arm = lambda a: {**dict.fromkeys(f.name for f in fields(Arm)), "alpha": a, "audit_p95": 1.0}  # noqa: E731
    method = lambda key, name, alpha, effects: {"key": key, "name": name, "continuous": key != "prompt", "plus": arm(alpha),  # noqa: E731
                                                "minus": arm(-alpha), "effects": effects, "curve": [], "eval_seconds": 0.0, "spec": {}}
    methods = [method(key, f"{key} (lora, seed {seed})", 2.0, {"id_controlled_plus": effect(id_plus * scale), "ood_target_spread": effect(0.0)})
               for key, scale in (("dW", 1.0), ("persona", 0.5))]
    # a prompt method: no data, no training, so the same values at every seed
    methods.append(method("prompt", "prompt", 1.0, {"id_controlled_plus": {"mean": 0.2, "ci_low": 0.05, "ci_high": 0.35},
                                                    "ood_target_spread": effect(0.0)}))
    return {"behavior": behavior, "model": "m", "command": "", "n_rows": 0, "n_dilemma_rows": 0, "n_calibration_prompts": 0,
            "n_audit_prompts": 0, "ood_target": {"value": None, "sign": 1}, "behavior_label": behavior,
            "config": {"seed": seed, "data_seed": None, "target": target, "tolerance": 0.05, "family": "lora", "model": "m"},
            "methods": methods, "ratios": [{"measure": "id", "method": "persona", "ratio": 2.0 + seed}]}


def _fake_comparison(seed: int, id_plus: float, behavior: str = "sycophancy", target: float = 1.0) -> ComparisonResult:
    return ComparisonResult.from_json(_fake_comparison_json(seed, id_plus, behavior, target))


def test_seed_summary_shows_each_seed_and_a_t_interval_as_wide_as_their_spread():
    from scipy import stats

    from weight_steering.comparison.render import render_seed_comparison
    from weight_steering.comparison.seeds import SeedSummaryError, summarize_seeds

    agree = summarize_seeds([_fake_comparison(s, 0.10 + 0.001 * s) for s in (2, 0, 1)])[0]
    disagree = summarize_seeds([_fake_comparison(s, v) for s, v in ((0, 0.3), (1, -0.1), (2, 0.1))])[0]
    row = lambda g: next(r for r in g["rows"] if r["method"] == "dW" and r["measure"] == "id_controlled_plus")  # noqa: E731
    assert agree["seeds"] == [0, 1, 2] and row(agree)["per_seed"] == pytest.approx([0.100, 0.101, 0.102])
    half = stats.t.ppf(0.975, 2) * np.std([0.3, -0.1, 0.1], ddof=1) / np.sqrt(3)
    assert row(disagree)["ci_high"] - row(disagree)["mean"] == pytest.approx(half)
    assert row(disagree)["ci_low"] < 0 < row(disagree)["ci_high"]  # every seed "significant" on its rows, not across seeds
    assert all(row(disagree)["row_significant"]) and row(agree)["ci_low"] > 0
    assert agree["ratios"][0]["per_seed"] == [2.0, 3.0, 4.0]
    text = render_seed_comparison([disagree])
    assert "| dW (lora) | ID framing-controlled Δ₊ | +0.300* | -0.100* | +0.100* |" in text  # one label for every seed
    prompt = next(r for r in disagree["rows"] if r["method"] == "prompt" and r["measure"] == "id_controlled_plus")
    assert prompt["seed_independent"] and (prompt["ci_low"], prompt["ci_high"]) == (0.05, 0.35)  # not a zero-width t-interval
    assert not row(disagree)["seed_independent"]
    assert "(the same at every seed; row-level CI)" in text
    with pytest.raises(SeedSummaryError, match="twice"):
        summarize_seeds([_fake_comparison(0, 0.1), _fake_comparison(0, 0.2)])
    budgets = summarize_seeds([_fake_comparison(0, 0.1), _fake_comparison(1, 0.2, target=2.0), _fake_comparison(1, 0.3)])
    assert [(g["target"], g["seeds"]) for g in budgets] == [(1.0, [0, 1]), (2.0, [1])]  # one table per KL budget
    assert "p95 KL target 2 nat per sign" in render_seed_comparison(budgets)
    filtered = _fake_comparison_json(0, 0.4)
    filtered["config"]["filter_pairs"] = "metric"
    groups = summarize_seeds([_fake_comparison(0, 0.1), ComparisonResult.from_json(filtered)])  # the same seed, other pairs
    assert [g.get("filter_pairs") for g in groups] == [None, "metric"] and all(g["seeds"] == [0] for g in groups)
    assert "pairs filtered by the metric judge" in render_seed_comparison(groups[1:])
    assert "filtered" not in render_seed_comparison(groups[:1])
    control = _fake_comparison_json(0, 0.5)
    control["config"] |= {"filter_pairs": "metric", "size_control": True}
    groups = summarize_seeds([ComparisonResult.from_json(filtered), ComparisonResult.from_json(control)])
    assert [g.get("size_control") for g in groups] == [None, True]  # the filter and its size control: two tables
    assert "random pairs, as many as the metric judge keeps" in render_seed_comparison(groups[1:])


def test_a_method_whose_name_changes_with_the_seed_says_so():
    from weight_steering.comparison.seeds import method_label

    assert method_label(["dW (lora, seed 0)", "dW (lora, seed 1)"]) == "dW (lora)"
    assert method_label(["CAA (layer 0)", "CAA (layer 10)", "CAA (layer 26)"]) == "CAA (layer 0 / layer 10 / layer 26, by seed)"
    assert method_label(["a", "b"]) == "a / b (by seed)"


@pytest.mark.slow  # an end-to-end comparison on the tiny model
def test_a_behaviour_with_ood_sets_reports_id_and_each_set_per_token_and_generations(tiny, tmp_path):
    """tone: the ID probe and every OOD set scored per method (summed and per token), the generation scores at both
    strengths, and, across two seeds, the generalisation ratio and dW's paired advantage over each method."""
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from weight_steering.comparison.render import render_seed_comparison
    from weight_steering.comparison.seeds import summarize_seeds

    model, tokenizer = tiny
    config = _config(tmp_path, behavior="tone", methods=("dW", "persona", "caa_slice"), curve_fractions=(0.5,), generation_tokens=4)
    result = run_comparison(config, (model, tokenizer), "test", preset_config(**TINY))
    sets = [s["name"] for s in result.ood_sets]
    assert sets == ["written_tasks", "explanations", "instructions"] and result.ood_measure == "ood_sets_per_token"
    assert result.n_generation_prompts == 12 + 72 and result.generation_metric == "register"
    for m in result.methods:
        for metric in ("id", "id_per_token", "ood_sets", "ood_sets_per_token", *(f"ood_{s}_per_token" for s in sets), *(f"ood_{s}" for s in sets),
                       "gen_id_metric", "gen_ood_metric", "gen_id_judge", "gen_ood_judged"):
            e = m.effects.get(metric, "spread")
            assert np.isfinite(e.mean) and e.ci_low <= e.mean <= e.ci_high, (m.key, metric)
        if m.continuous:  # the curve's y is the pooled per-token OOD effect, 0 at α = 0
            assert len(m.curve) == 1 + 2 + 2 and next(c for c in m.curve if c["alpha"] == 0.0)["ood_target"] == 0.0
    assert {r["method"] for r in result.ratios if r["measure"] == "ood_sets"} == {"persona", "caa_slice"}
    text = (result.path / "comparison.md").read_text()
    assert "explanations /token" in text and "ratio OOD/ID /token" in text and "Generations" in text
    records = [json.loads(line) for line in next((tmp_path / "compare").rglob("gen-base-*/generations.jsonl")).read_text().splitlines()]
    assert len(records) == 84 and {"reply", "metric", "judge", "judged"} <= set(records[0])

    second = run_comparison(replace(config, seed=1), (model, tokenizer), "test", preset_config(**TINY))
    group = summarize_seeds(load_comparisons([result.path, second.path / "comparison.json"]))[0]
    ratio = next(r for r in group["rows"] if r["method"] == "dW" and r["measure"] == "generalisation_ratio_per_token")
    by_seed = [s.method("dW").effects for s in (result, second)]
    assert ratio["per_seed"] == pytest.approx([e.mean("ood_sets_per_token", "spread") / e.mean("id_per_token", "spread") for e in by_seed])
    advantage = next(a for a in group["advantages"] if a["method"] == "persona" and a["measure"] == "ood_sets_per_token_spread")
    persona = [s.method("persona").effects for s in (result, second)]
    assert advantage["per_seed"] == pytest.approx([d.mean("ood_sets_per_token", "spread") - p.mean("ood_sets_per_token", "spread")
                                                   for d, p in zip(by_seed, persona)])
    assert "dW minus each method, paired by seed" in render_seed_comparison([group])


def test_paper_recipe_dw_is_compared_beside_the_default_one_with_its_recipe_in_the_sidecar(tiny, tmp_path, monkeypatch):
    """``dW_paper`` trains its own dW on the ``paper_2core`` recipe (every layer and module, its own data), records the
    recipe in the sidecar, and is calibrated and tabled beside the default dW."""
    from weight_steering.core.diff import load_dw
    from weight_steering.main_job.config import PRESETS

    model, tokenizer = tiny
    recipe = PRESETS["paper_2core"]
    monkeypatch.setitem(PRESETS, "paper_2core", {"generation": {**TINY["generation"], "n_samples": 3, "max_new_tokens": 10},
                                                          "train": {**recipe["train"], **TINY["train"]}})
    config = _config(tmp_path, methods=("dW", "dW_paper"), curve_fractions=(), name="recipes")
    result = run_comparison(config, (model, tokenizer), "test", preset_config(**TINY))
    assert result.path.name == "recipes" and [m.key for m in result.methods] == ["dW", "dW_paper"]
    paper_dirs = [d for d in result.dw_dir.parent.glob("dw-lora-seed0-*") if d != result.dw_dir]
    assert len(paper_dirs) == 1
    paper, default = load_dw(paper_dirs[0] / "dW.safetensors"), load_dw(result.dw_dir / "dW.safetensors")
    n_layers = model.config.num_hidden_layers
    assert paper.metadata["recipe"] == "paper_2core" and paper.metadata["layers"] == list(range(n_layers))
    assert paper.metadata["max_new_tokens"] == 10 and default.metadata["max_new_tokens"] == 8
    assert paper.metadata["n_pairs"] > default.metadata["n_pairs"]  # 3 samples per prompt and persona, not 2
    assert list(paper.metadata["train_config"]["layer_fraction"]) == [0.0, 1.0] and paper.metadata["target_modules"] == list(recipe_modules())
    assert default.metadata["recipe"] == "default" and len(default.metadata["layers"]) < n_layers
    layers_touched = {int(k.split(".layers.")[1].split(".")[0]) for k in paper.tensors}
    assert layers_touched == set(range(n_layers))


def recipe_modules():
    from weight_steering.core.adapters import LINEAR_TARGETS

    return LINEAR_TARGETS


def test_methods_all_leaves_out_the_methods_that_train_their_own_dw():
    from weight_steering.comparison.methods import COMPARISON_METHODS, all_methods

    assert "dW_paper" in COMPARISON_METHODS and "dW_paper" not in all_methods()
    assert CompareConfig().methods == all_methods() and {"dW", "persona", "caa_slice"} <= set(all_methods())


def test_budget_curves_give_each_method_one_point_per_budget_from_the_seed_means(tmp_path):
    from weight_steering.comparison.render import plot_budget_curves
    from weight_steering.comparison.seeds import summarize_seeds

    def run(seed, target, ood):
        comparison = _fake_comparison(seed, 0.1, behavior="tone", target=target)
        comparison.ood_sets = [{"name": "written_tasks"}]
        for method in comparison.methods:
            method.effects.add("id_per_token", "spread", target, target - 0.1, target + 0.1)
            method.effects.add("ood_sets_per_token", "spread", ood + seed * 0.01, ood - 0.1, ood + 0.1)
        return comparison

    groups = summarize_seeds([run(s, t, ood) for s in (0, 1, 2) for t, ood in ((2.0, 0.8), (0.5, 0.2), (1.0, 0.5))])
    curves = plot_budget_curves(groups, "tone", tmp_path / "tone_budgets.png")
    assert (tmp_path / "tone_budgets.png").read_bytes()[:4] == b"\x89PNG"
    assert [p["target"] for p in curves["dW"]] == [0.5, 1.0, 2.0]
    assert [p["y"] for p in curves["dW"]] == pytest.approx([0.21, 0.51, 0.81])  # the mean over seeds 0, 1, 2
    assert curves["dW"][0]["y_low"] < 0.21 < curves["dW"][0]["y_high"] and curves["dW"][2]["x"] == pytest.approx(2.0)


def test_a_format_1_comparison_is_read_through_its_upgrade_and_written_as_a_long_table(tmp_path):
    """Format 1 keyed effects ``<metric>_<arm>`` (a bare number for the format mass); the reader turns them into rows,
    the file written back is format 2, and reading that again gives the same result."""
    old = _fake_comparison_json(0, 0.1)
    old["methods"][0]["effects"].update({"pmass_plus": 0.9, "pmass_min": 0.7, "si_k2": {"mean": 0.3, "ci_low": 0.1, "ci_high": 0.5}})
    (tmp_path / "comparison.json").write_text(json.dumps(old))
    result = read_comparison(tmp_path)
    dw = result.method("dW").effects
    assert dw.get("id_controlled", "plus").ci_high == pytest.approx(0.11) and dw.get("ood_target", "spread").mean == 0.0
    assert (dw.get("pmass", "plus").mean, dw.get("pmass", "plus").ci_low) == (0.9, None) and dw.mean("pmass_min") == 0.7
    assert dw.get("si_k2", None).excludes_zero() and dw.get("pmass", "plus").excludes_zero() is None
    assert result.device == "cpu" and result.ood_sets == [] and result.path == tmp_path  # fields older results lack
    written = result.to_json()
    assert written["format"] == FORMAT_VERSION and written["methods"][0]["effects"][0] == {
        "metric": "id_controlled", "arm": "plus", "mean": 0.1, "ci_low": pytest.approx(0.09), "ci_high": pytest.approx(0.11)}
    again = ComparisonResult.from_json(json.loads(json.dumps(written)))
    assert again.to_json() == written and list(again.method("dW").effects.frame()["metric"]) == ["id_controlled", "ood_target", "pmass",
                                                                                                "pmass_min", "si_k2"]
    with pytest.raises(ComparisonFormatError, match="format 3.*upgrade weight-steering"):
        ComparisonResult.from_json({**written, "format": 3})
    with pytest.raises(ComparisonFormatError, match="does not know .surprise."):
        ComparisonResult.from_json({**written, "surprise": 1})
    with pytest.raises(ComparisonFormatError, match="rerun `wsteer compare`"):
        ComparisonResult.from_json({k: v for k, v in written.items() if k != "methods"})
    with pytest.raises(FileNotFoundError, match="no comparison.json"):
        read_comparison(tmp_path / "missing")


def test_every_archived_comparison_reads_and_renders_the_same_after_a_round_trip_through_format_2():
    """The committed archive is format 1; its upgrade loses nothing the tables print."""
    from weight_steering.comparison.render import render_comparison

    archived = sorted((Path(__file__).resolve().parents[1] / "docs" / "compare" / "archive").rglob("comparison.json"))
    assert len(archived) >= 12
    for path in archived:
        result = read_comparison(path)
        again = ComparisonResult.from_json(json.loads(json.dumps(result.to_json())))
        assert render_comparison(again) == render_comparison(result), path


def test_each_weight_steering_dw_gets_its_paired_advantage_over_the_other_methods():
    """On an archived six-method run (tone, seed 0, 1 nat): dW − method and dW (paper recipe) − method per seed, each
    equal to the difference of the two methods' OOD spreads; dW_paper − dW is not repeated (dW − dW_paper is there)."""
    from weight_steering.comparison.render import render_seed_comparison
    from weight_steering.comparison.seeds import summarize_seeds

    run = Path(__file__).resolve().parents[1] / "docs/compare/archive/smollm2-135m-instruct/tone/compare/recipes-seed0-kl1"
    [summary] = load_comparisons([run])
    [group] = summarize_seeds([summary])
    measure = "ood_sets_per_token_spread"
    by = {(a["reference"], a["method"]): a for a in group["advantages"] if a["measure"] == measure}
    ood = {m.key: m.effects.mean("ood_sets_per_token", "spread") for m in summary.methods}
    assert by[("dW_paper", "caa_all")]["per_seed"] == pytest.approx([ood["dW_paper"] - ood["caa_all"]])
    assert by[("dW", "dW_paper")]["per_seed"] == pytest.approx([ood["dW"] - ood["dW_paper"]])
    assert ("dW_paper", "dW") not in by and ("dW_paper", "dW_paper") not in by
    assert {m for r, m in by if r == "dW_paper"} == {"persona", "engineered", "caa_slice", "caa_all"}
    assert "dW (paper recipe) minus each method, paired by seed" in render_seed_comparison([group])
