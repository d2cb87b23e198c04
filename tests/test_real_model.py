"""Reduced runs on the embedded SmolLM2-135M-Instruct (marker ``real``; a few minutes on 2 CPU cores).

They run the ``tone`` positive control: a behaviour this model follows, with a held-out probe (paired
completions) that no answer-word shift can move, so "the pipeline produces a dW that moves the trained
behaviour" is checked on something that is the behaviour. (The balanced sycophancy set gives no effect
at smoke size: −0.005 nats; its default-size numbers are in docs/RESULTS.md.)"""

import json

import pytest

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from weight_steering.core.models import load_model
    from weight_steering.main_job.config import preset_config
    from weight_steering.main_job.run import run_main_job

    model, tokenizer = load_model()
    out = tmp_path_factory.mktemp("real")
    result = run_main_job(preset_config("smoke", behavior="tone", out=str(out)), model, tokenizer, command="pytest -m real")
    return result, model, tokenizer, out


def test_reduced_main_job_on_embedded_model(smoke_run):
    result, *_ = smoke_run
    contrasts = {(c["metric"], c["contrast"]): c for c in result.summary["contrasts"]}
    spread = contrasts[("id", "α=+1 − α=-1")]
    # The pipeline works end to end: α·dW makes the casual reply likelier than the formal one with the same content.
    assert spread["mean"] > 0 and spread["ci_low"] > 0, spread
    assert contrasts[("id", "α=-1 − α=+0")]["mean"] < 0 < contrasts[("id", "α=+1 − α=+0")]["mean"]  # and reverses with the sign
    per_alpha = [r for r in result.summary["per_alpha"] if r["metric"] == "action_bias"]
    assert min(r["pmass_mean"] for r in per_alpha) > 0.5  # the Yes/No answer format survives |α| = 1
    judge = json.loads((result.run_dir / "run.json").read_text())["judge"]
    assert judge["agreement"]["n"] == 48 and 0 <= judge["rates"]["positive"] <= 1  # the data stage judged and reported
    assert result.report.exists() and result.dw.metadata["n_tensors"] == 105  # 15 layers × 7 projections


def test_vignettes_and_degradation_on_embedded_model(smoke_run):
    """Reduced vignette and degradation passes on the real dW: the formats hold and the steer costs KL."""
    from weight_steering.degradation.run import run_degradation
    from weight_steering.vignettes.run import run_vignettes

    result, model, tokenizer, out = smoke_run
    dw_dir = result.dw_path.parent
    vignettes = run_vignettes(dw_dir, alphas=(-1.0, 0.0, 1.0), out=str(out), limit=10, loaded=(model, tokenizer))
    assert sum(r["n_valid"] for r in vignettes["bare"]) == 20 and all(r["n_below_floor"] == 0 for r in vignettes["bare"])
    degradation = run_degradation(dw_dir, alphas=(0.0, 1.0), n_tokens=4, out=str(out), loaded=(model, tokenizer), prompt_limit=8)
    rows = {r["alpha"]: r for r in degradation["rows"]}
    assert rows[0.0]["kl_max"] < 1e-5 < rows[1.0]["kl_p95"]


def test_comparison_at_one_kl_budget_on_embedded_model(smoke_run):
    """Reduced iso-KL comparison (dW, engineered prompt, CAA) on the real model: calibration per sign and identical rows."""
    from weight_steering.comparison.run import CompareConfig, run_comparison
    from weight_steering.main_job.config import preset_config

    result, model, tokenizer, out = smoke_run
    config = CompareConfig(behavior="tone", methods=("dW", "engineered", "caa_slice"), target=0.5, tolerance=0.1, n_tokens=4,
                           prompt_limit=6, curve_fractions=(), dilemma_limit=6, n_contrast_pairs=16, generation_tokens=8, out=str(out))
    comparison = run_comparison(config, (model, tokenizer), "pytest -m real", preset_config("smoke", behavior="tone"))
    for key in ("dW", "caa_slice"):
        method = comparison.method(key)
        for arm in (method.plus, method.minus):
            assert arm.converged and abs(arm.p95 - 0.5) <= 0.1, (key, arm.history)
        assert method.plus.alpha > 0 > method.minus.alpha
    assert comparison.method("engineered").plus.p95 > 0.01  # a system prompt moves the model
    dw = comparison.method("dW").effects
    assert dw.mean("id", "plus") > dw.mean("id", "minus")  # the steer's ID direction holds
    assert dw.mean("ood_sets_per_token", "plus") > dw.mean("ood_sets_per_token", "minus")  # the OOD sets, summed and per token
    assert all((metric, "spread") in dw for metric in ("ood_written_tasks_per_token", "gen_ood_metric", "gen_id_judged"))  # and generations
    assert (comparison.path / "comparison.md").exists() and (comparison.path / "effect_vs_kl.png").exists()


def test_ablation_on_embedded_model(smoke_run):
    """Reduced ablation of the real dW (module variants): anchors behave, and both alignment tables are measured."""
    from weight_steering.ablation.run import run_ablation

    result, model, tokenizer, out = smoke_run
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ablation = run_ablation(result.dw_path.parent, groups=("module",), variants=("attention", "mlp"), dilemma_limit=4, out=str(out),
                            loaded=(model, tokenizer), n_controls=2, n_within=0)
    assert all(k in before and before[k].equal(v) for k, v in model.state_dict().items())  # weights restored bit-exactly
    by = {(r["variant"], r.get("metric")): r for r in ablation["rows"]}
    full, zero = by[("full", "id")], by[("zero", "id")]
    assert full["delta_full"] > 0 and abs(zero["delta_variant"]) < 1e-6
    assert by[("attention", "id")]["energy_fraction"] + by[("mlp", "id")]["energy_fraction"] > 0.99
    assert by[("attention", "id")]["control_random_n"] == 2  # two random draws, summarised on the variant's row
    measured = [r for r in ablation["activation_alignment"] if r["available"]]
    assert {r["projection"] for r in measured} == {"q_proj", "k_proj", "v_proj", "o_proj", "down_proj"}  # pairs found next to the dW
    assert all(0 <= r["energy"] <= 1 for r in measured) and len(ablation["alignment"]) == 105


def test_peft_export_matches_the_steered_model_on_embedded_model(smoke_run, tmp_path):
    """The exported LoRA adapter, loaded by PEFT on a second copy of the base and scaled by α, gives the logits of α·dW."""
    import torch
    from peft.helpers import rescale_adapter_scale

    from weight_steering.core.chat import render_chat
    from weight_steering.core.models import load_model
    from weight_steering.core.steer import steer
    from weight_steering.export.convert import export_dw, load_exported

    result, model, tokenizer, _ = smoke_run
    dw = result.dw
    copy, _ = load_model()
    path = export_dw(dw, copy, tmp_path / "adapter")
    info = json.loads((path / "export.json").read_text())
    assert info["max_rank"] <= 2 * 32 and info["max_abs_error"] < 1e-5, info  # a LoRA dW θ⁺ − θ⁻ has rank ≤ 2r
    wrapped = load_exported(copy, path).eval()
    text = render_chat(tokenizer, [{"role": "user", "content": "How should I reply to my landlord?"}])
    ids = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    for alpha in (-1.0, 0.5, 2.0):
        with torch.no_grad(), rescale_adapter_scale(wrapped, alpha):
            exported = wrapped(**ids).logits
        with torch.no_grad(), steer(model, dw, alpha):
            steered = model(**ids).logits
        assert (exported - steered).abs().max() < 1e-3, alpha


@pytest.mark.llama_cpp
def test_gguf_export_served_by_llama_cpp_moves_the_logratio_like_alpha_dw(smoke_run, tmp_path):
    """llama.cpp (optional: pip install llama-cpp-python) serving the embedded GGUF plus the exported adapter: its per-row
    effect of α·dW agrees with the fp32 steered model's (the base is quantised there, so agreement, not equality)."""
    pytest.importorskip("llama_cpp", reason="optional tier: pip install llama-cpp-python (builds llama.cpp from source)")
    from weight_steering.core.behavior_files import load_behavior
    from weight_steering.core.models import locate_embedded_gguf
    from weight_steering.evaluation.rows import held_out_rows
    from weight_steering.export.convert import check_gguf_export, export_dw

    result, model, tokenizer, _ = smoke_run
    rows = held_out_rows(tokenizer, load_behavior("sycophancy"))
    adapter = export_dw(result.dw, model, tmp_path / "gguf", fmt="gguf")
    check = check_gguf_export(model, tokenizer, result.dw, rows, locate_embedded_gguf("smollm2-135m-instruct"), adapter,
                              alphas=(-4.0, 0.0, 4.0))
    base = check["per_alpha"]["+0"]
    assert base["spearman_rho"] > 0.9 and base["mean_abs_diff"] < 0.3, base  # the same weights, quantised arithmetic
    for alpha in ("-4", "+4"):
        entry = check["per_alpha"][alpha]
        assert entry["same_direction"] and entry["row_sign_agreement"] >= 0.75, entry  # per row, the effect's sign agrees


def test_cached_decoder_gives_generates_greedy_tokens_on_embedded_model():
    """The cached decoder's greedy tokens are transformers' generate's on persona prompts of different lengths."""
    import torch

    from weight_steering.core.behavior_files import load_behavior
    from weight_steering.core.chat import render_chat, stop_token_ids
    from weight_steering.core.decoding import decode
    from weight_steering.core.models import load_model

    model, tokenizer = load_model()
    behavior = load_behavior("sycophancy")
    texts = [render_chat(tokenizer, [{"role": "system", "content": behavior.positive_system_prompts[i % 2]},
                                     {"role": "user", "content": prompt}]) for i, prompt in enumerate(behavior.train_prompts[:6])]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 1  # the prompts differ in length: left padding is exercised
    stops = stop_token_ids(tokenizer)
    with torch.inference_mode():
        reference = model.generate(**batch, do_sample=False, max_new_tokens=40, eos_token_id=sorted(stops),
                                   pad_token_id=tokenizer.pad_token_id)[:, batch["input_ids"].shape[1]:].tolist()
    got = decode(model, [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts], 40, stops, tokenizer.pad_token_id)
    for row, decoded in zip(reference, got):
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        assert decoded.tokens == row[:cut] and decoded.hit_stop == (cut < len(row))


@pytest.mark.recorded
def test_every_family_gives_its_recorded_dw_within_the_kernel_tolerance():
    """Training attaches the adapter to the loaded model and takes Δ module by module; the dW of each of the 13 families
    on the embedded model matches its recorded fingerprint (tests/data/family_dw_fingerprint.json, `python
    tests/family_dw.py`) within :data:`KERNEL_TOLERANCE`, and two trainings in this run give the same bytes.

    Why a tolerance: fp32 sums round differently under other kernels. Measured on one AMD EPYC (2026-12-06; recorded
    under AVX-512, `bash reproduce/kernel_paths.sh`), the same code gives fingerprints that differ, relative to each
    tensor's norm, by at most 4.3e-4 under AVX2 and under ``ATEN_CPU_CAPABILITY=default`` (LoKr; HRA 1.0e-4, LoRA
    2.7e-5), while a change of training seed moves LoRA's by 5.3e-2. The tolerance, 2e-3, is 4.6× the largest kernel
    difference and 26× below a seed change.
    """
    import sys
    from pathlib import Path

    import torch

    from weight_steering.core.adapters import ADAPTER_FAMILIES
    from weight_steering.core.models import base_weights_hash, load_model

    sys.path.insert(0, str(Path(__file__).parent))
    from family_dw import RECORD, family_dw, fingerprint, relative_difference

    recorded = json.loads(RECORD.read_text())["families"]
    model, tokenizer = load_model()
    before = base_weights_hash(model)
    differences = {}
    for family in ADAPTER_FAMILIES:
        tensors = family_dw(model, tokenizer, family)
        differences[family] = relative_difference(fingerprint(tensors), recorded[family])
        if family == "lora":  # byte identity is claimed only within one run on one machine
            again = family_dw(model, tokenizer, family)
            assert tensors.keys() == again.keys() and all(torch.equal(tensors[k], again[k]) for k in tensors)
    print(f"\nfingerprint differences on {torch.backends.cpu.get_cpu_capability()} kernels (recorded on "
          f"{json.loads(RECORD.read_text())['cpu_capability']}): {json.dumps(differences)}")  # `pytest -m recorded -s` shows it
    assert max(differences.values()) <= KERNEL_TOLERANCE, differences
    assert base_weights_hash(model) == before  # and the model came back bit-exactly after 27 trainings


KERNEL_TOLERANCE = 2e-3  # relative to each tensor's norm; see the test's docstring for the measured kernel difference
