"""The architectures researchers bring, each with its real tokenizer and chat template on tiny random weights
(:mod:`model_families`): Qwen3, Llama-3 (GQA), Gemma-3 (sliding window, tied embeddings, q/k norms) and a DeepSeek-V3
mixture of experts. On each: the smoke main job end to end, a bit-exact restore after steering, the PEFT export
reloaded and matching W + α·dW, and CAA through steering-vectors calibrated to a KL target.

(Before the chat contract and these fixes, Gemma-3 crashed in scoring, since a sliding-window cache cannot be cropped,
and the MoE model refused its own dW, whose expert tensors kept PEFT's wrapper names.)
"""

from __future__ import annotations

import json

import pytest
import torch
from model_families import FAMILIES, family_model, family_tokenizer

from weight_steering.core.models import base_weights_hash, prepare
from weight_steering.main_job.config import preset_config
from weight_steering.main_job.run import run_main_job

pytestmark = pytest.mark.slow
SMOKE = {"generation": {"n_prompts": 2, "n_personas": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 8},
         "train": {"rank": 4, "lora_alpha": 8, "learning_rate": 5e-3, "batch_size": 4}, "alphas": (-1.0, 0.0, 1.0), "dilemma_limit": 2,
         "judge": False}
PROMPTS = ["How do I boil an egg?", "Name a good book."]


@pytest.fixture(scope="module", params=FAMILIES)
def family_run(request, tmp_path_factory):
    name = request.param
    tokenizer = family_tokenizer(name)
    model, tokenizer = prepare(family_model(name, tokenizer), tokenizer)
    before = base_weights_hash(model)
    out = tmp_path_factory.mktemp(name)
    result = run_main_job(preset_config("default", behavior="sycophancy", out=str(out), **SMOKE), model, tokenizer, command="pytest")
    return name, model, tokenizer, result, before


def test_the_smoke_main_job_runs_and_records_what_it_adapted(family_run):
    name, model, _, result, before = family_run
    assert result.report.exists() and base_weights_hash(model) == before  # the model came back bit-exactly
    params = dict(model.named_parameters())
    dw = result.dw
    assert dw.tensors and all(k in params and params[k].shape == t.shape for k, t in dw.tensors.items())  # it fits its model
    assert json.loads((result.run_dir / "run.json").read_text())["config"]["thinking"] is False
    targets = dw.metadata["targets"]
    assert dw.metadata["thinking"] is False and targets["modules"]["o_proj"] > 0
    if name == "deepseek_v3":  # MoE: routed experts adapted (fused 3-D parameters); MLA has no q/k/v_proj, and the run says so
        assert targets["routed_experts"] == "adapted" and {"q_proj", "k_proj", "v_proj"} <= set(targets["missing"])
        assert any(t.dim() == 3 for t in dw.tensors.values()) and not any(".base_layer" in k for k in dw.tensors)
    else:
        assert targets["routed_experts"] == "none" and not targets["missing"] and not targets["left_out"]
    per_alpha = {(r["metric"], r["alpha"]) for r in result.summary["per_alpha"]}
    assert ("id", 1.0) in per_alpha and ("action_bias", -1.0) in per_alpha  # scored at every α (Gemma-3: past its window)


def test_steering_restores_the_weights_bit_exactly_even_on_an_exception(family_run):
    from weight_steering.core.steer import steer

    _, model, _, result, before = family_run
    with pytest.raises(RuntimeError, match="inside the steer"):
        with steer(model, result.dw, 2.5):
            assert base_weights_hash(model) != before
            raise RuntimeError("inside the steer")
    assert base_weights_hash(model) == before


def test_the_peft_export_reloads_and_matches_alpha_dw(family_run, tmp_path):
    from peft.helpers import rescale_adapter_scale

    from weight_steering.core.chat import render_chat
    from weight_steering.core.diff import DeltaWeights
    from weight_steering.core.steer import steer
    from weight_steering.export.convert import ExportError, export_dw, load_exported

    name, model, tokenizer, result, _ = family_run
    dw = result.dw
    if name == "deepseek_v3":  # routed experts are 3-D parameters, not Linear weights: refused by name, with the fix
        with pytest.raises(ExportError, match="mlp.experts"):
            export_dw(dw, model, tmp_path / "refused")
        dw = DeltaWeights({k: t for k, t in dw.tensors.items() if t.dim() == 2}, dw.metadata)
    copy, _ = prepare(family_model(name, tokenizer), tokenizer)  # the same seed: the same base weights
    wrapped = load_exported(copy, export_dw(dw, model, tmp_path / "adapter")).eval()
    ids = tokenizer([render_chat(tokenizer, [{"role": "user", "content": PROMPTS[0]}])], return_tensors="pt", add_special_tokens=False)
    for alpha in (-1.0, 2.0):
        with torch.no_grad(), rescale_adapter_scale(wrapped, alpha):
            exported = wrapped(**ids).logits
        with torch.no_grad(), steer(model, dw, alpha):
            steered = model(**ids).logits
        assert (exported - steered).abs().max() < 1e-4 * steered.abs().max(), (name, alpha)


def test_caa_through_steering_vectors_calibrates_to_a_kl_target(family_run):
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from weight_steering.core.activations import activation_method, contrast_pairs
    from weight_steering.evaluation.calibrate import calibrate_alpha, kl_from_base
    from weight_steering.main_job.stages import prepare_job

    name, model, tokenizer, result, before = family_run
    job = prepare_job(preset_config("default", behavior="sycophancy", out=str(result.run_dir.parents[2]), **SMOKE), model, tokenizer)
    pairs = [(p, n) for p, n, _ in contrast_pairs(tokenizer, job.rows, limit=4)]
    layers = list(range(1, model.config.num_hidden_layers))
    method = activation_method(model, tokenizer, pairs, layers)
    calibration = calibrate_alpha(lambda a: kl_from_base(model, tokenizer, method, a, PROMPTS, n_tokens=3), +1, target=0.004, tolerance=0.0015)
    assert calibration.converged and abs(calibration.p95 - 0.004) <= 0.0015, (name, calibration.history)
    assert base_weights_hash(model) == before  # the hooks are gone


def test_thinking_on_runs_the_main_job_and_is_recorded(tmp_path, monkeypatch):
    """Qwen3 with thinking on: sampled after the thinking-on opening, trained after it, recorded in run.json and in dW's
    sidecar; the judge reads each response's answer after ``</think>`` (here: what the data stage put in ``answer_*``)."""
    from weight_steering.core.chat import thinking_enabled
    from weight_steering.evaluation import judge as judge

    tokenizer = family_tokenizer("qwen3")
    model, tokenizer = prepare(family_model("qwen3", tokenizer), tokenizer)
    judged = []
    real = judge.judge_logratios
    monkeypatch.setattr(judge, "judge_logratios", lambda m, t, b, items, **k: judged.extend(items) or real(m, t, b, items, **k))
    try:
        result = run_main_job(preset_config("default", behavior="tone", out=str(tmp_path), thinking=True, **{**SMOKE, "judge": True}),
                              model, tokenizer, command="pytest")
        assert thinking_enabled(tokenizer)
    finally:
        from weight_steering.core.chat import set_thinking

        set_thinking(tokenizer, False)
    rows = [json.loads(line) for line in next(tmp_path.rglob("data-*/pairs.jsonl")).read_text().splitlines()]
    assert all(r["thinking"] and "answer_positive" in r for r in rows)
    # the judge reads the pairs' answers in one call (its hand labels in another, before it)
    texts, answers = [text for _, text in judged], [r["answer_positive"] for r in rows] + [r["answer_negative"] for r in rows]
    assert any(texts[i : i + len(answers)] == answers for i in range(len(texts) - len(answers) + 1))
    assert result.dw.metadata["thinking"] is True
    assert json.loads((result.run_dir / "run.json").read_text())["config"]["thinking"] is True
    from weight_steering.core.chat import ChatTemplateError

    llama = family_tokenizer("llama3_1")
    with pytest.raises(ChatTemplateError, match="no thinking switch"):  # refused before any work
        run_main_job(preset_config("default", behavior="tone", out=str(tmp_path / "llama"), thinking=True, **SMOKE),
                     *prepare(family_model("llama3_1", llama), llama), command="pytest")
    assert not (tmp_path / "llama").exists()


def test_scoring_past_a_sliding_window_matches_a_plain_forward():
    """Gemma-3 with a 16-token window: the shared-prefix scorer (rows grouped in pairs, prompts far past the window)
    gives each row's answer log-probabilities of one plain forward pass over the whole row."""
    from weight_steering.core.chat import render_chat
    from weight_steering.evaluation.scoring import YES_NO, answer_sets, score_answer_sets

    tokenizer = family_tokenizer("gemma3")
    model, tokenizer = prepare(family_model("gemma3", tokenizer), tokenizer)
    situation = "You found a wallet with cash on a long, quiet street late at night, and nobody saw you pick it up."
    texts = [render_chat(tokenizer, [{"role": "user", "content": f"{situation} Do you choose to: {action}?"}], prefill="My choice: **")
             for action in ("keep it", "return it to its owner", "hand it to the police", "leave it")]
    sets = answer_sets(tokenizer, YES_NO)
    scored = score_answer_sets(model, tokenizer, texts, sets, groups=["a", "a", "b", "b"], batch_size=4).log_probs
    assert min(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts) > 2 * model.config.sliding_window
    for text, row in zip(texts, scored):
        ids = tokenizer([text], return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            logp = torch.log_softmax(model(**ids).logits[0, -1].float(), dim=-1)
        plain = torch.stack([torch.logsumexp(logp[torch.tensor(s)], dim=-1) for s in sets])
        assert torch.allclose(row, plain, atol=1e-4), (row, plain)
