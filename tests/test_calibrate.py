import numpy as np
import pytest
import torch

from weight_steering.evaluation.calibrate import KLStats, kl_from_base
from weight_steering.evaluation.datasets import EvalDataError, check_disjoint, load_neutral, neutral_split

PROMPTS = ["How do I boil an egg?", "What is the capital of France?", "Name a primary colour."]


def _dw(model, scale):
    torch.manual_seed(0)
    params = dict(model.named_parameters())
    return {k: scale * torch.randn_like(params[k]) for k in ("model.layers.1.mlp.down_proj.weight", "model.layers.2.self_attn.o_proj.weight")}


def test_kl_is_zero_unsteered_and_grows_with_alpha(tiny):
    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dw = _dw(model, 0.5)
    zero = kl_from_base(model, tokenizer, dw, 0.0, PROMPTS, n_tokens=6)
    assert zero.max < 1e-6 and zero.n_positions == 18 and zero.n_prompts == 3
    assert zero.prompt_index.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    small = kl_from_base(model, tokenizer, dw, 0.5, PROMPTS, n_tokens=6)
    large = kl_from_base(model, tokenizer, dw, 2.0, PROMPTS, n_tokens=6)
    assert 0 < small.mean < large.mean and small.p95 <= small.max
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_kl_matches_a_direct_computation(tiny):
    """One prompt, one token: KL equals the KL of the next-token distributions computed by hand."""
    from weight_steering.core.chat import render_chat
    from weight_steering.core.steer import steer

    model, tokenizer = tiny
    dw = _dw(model, 0.5)
    stats = kl_from_base(model, tokenizer, dw, 1.0, PROMPTS[:1], n_tokens=1)
    ids = tokenizer(render_chat(tokenizer, [{"role": "user", "content": PROMPTS[0]}]), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        with steer(model, dw, 1.0):
            p = torch.log_softmax(model(**ids).logits[0, -1].float(), -1)
        q = torch.log_softmax(model(**ids).logits[0, -1].float(), -1)
    assert stats.mean == pytest.approx(float((p.exp() * (p - q)).sum()), rel=1e-4, abs=1e-6)


def test_kl_per_position_matches_generate_prompt_by_prompt(tiny, monkeypatch):
    """Every kept position's KL equals the one from transformers' generate (output_logits) run on that prompt alone,
    with a stop token that ends the prompts at different steps."""
    import weight_steering.evaluation.calibrate as calibrate
    from weight_steering.core.chat import render_chat, stop_token_ids
    from weight_steering.core.steer import steer

    model, tokenizer = tiny
    with torch.no_grad():   # larger projections, so that the random model's replies vary from step to step
        for name, param in model.named_parameters():
            if "proj" in name:
                param.mul_(20)
    dw = _dw(model, 0.5)
    ids = [tokenizer(render_chat(tokenizer, [{"role": "user", "content": p}]), return_tensors="pt", add_special_tokens=False)["input_ids"]
           for p in PROMPTS]
    with torch.no_grad(), steer(model, dw, 1.0):
        said = model.generate(ids[1], do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)[0, ids[1].shape[1]:]
    step = next(j for j in range(1, len(said)) if said[j] not in said[:j])   # a token prompt 1 says first at step j ≥ 1
    stops = sorted(stop_token_ids(tokenizer) | {int(said[step])})
    monkeypatch.setattr(calibrate, "stop_token_ids", lambda tok, model=None: set(stops))
    stats = kl_from_base(model, tokenizer, dw, 1.0, PROMPTS, n_tokens=8)
    expected = []
    for prompt_ids in ids:
        with torch.no_grad():
            with steer(model, dw, 1.0):
                out = model.generate(prompt_ids, do_sample=False, max_new_tokens=8, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                                     return_dict_in_generate=True, output_logits=True)
            steered = torch.log_softmax(torch.stack(out.logits, 1)[0].float(), -1)           # [S, V]
            n = steered.shape[0]
            base = torch.log_softmax(model(out.sequences).logits[0, -n - 1:-1].float(), -1)  # [S, V]
        expected.append((steered.exp() * (steered - base)).sum(-1).clamp(min=0))
    assert len(expected[1]) == step + 1 and len({len(e) for e in expected}) > 1            # rows stopped at different steps
    assert stats.prompt_index.tolist() == [i for i, e in enumerate(expected) for _ in e]
    assert np.allclose(stats.per_position, torch.cat(expected).numpy(), atol=1e-5, rtol=1e-4)


def test_bad_kl_input(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="at least one prompt"):
        kl_from_base(model, tokenizer, {}, 1.0, [], n_tokens=4)


def test_neutral_set_is_100_pairs_over_10_categories_split_and_disjoint():
    from weight_steering.core.behavior_files import available_behaviors, load_behavior
    from weight_steering.evaluation.datasets import load_dilemma_rows, load_vignettes

    rows = load_neutral()
    assert len(rows) == 100 and len({r["category"] for r in rows}) == 10
    calibration, audit = neutral_split(rows)
    assert len(calibration) >= 60 and len(audit) >= 15 and not {r["instruction"] for r in calibration} & {r["instruction"] for r in audit}
    assert len({r["category"] for r in calibration}) >= 8
    others = {name: load_behavior(name).train_prompts for name in available_behaviors()}
    others["daily dilemmas"] = [r["situation"] for r in load_dilemma_rows()]
    others["vignettes"] = [r["text"] for r in load_vignettes()]
    check_disjoint([r["instruction"] for r in rows], others)
    with pytest.raises(EvalDataError, match="overlap"):
        check_disjoint(["You found a wallet with cash on the street."], {"honesty": load_behavior("honesty").train_prompts})


def test_reference_nll_matches_the_training_loss_and_moves_with_alpha(tiny):
    from weight_steering.core.train import tokenize_example
    from weight_steering.evaluation.scoring import reference_nll

    model, tokenizer = tiny
    pairs = [{"instruction": r["instruction"], "answer": r["answer"]} for r in load_neutral()[:3]]
    nll = reference_nll(model, tokenizer, None, 0.0, pairs, batch_size=2)
    example = tokenize_example(tokenizer, pairs[1]["instruction"], pairs[1]["answer"], 256)
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([example["input_ids"]]), labels=torch.tensor([example["labels"]])).loss
    assert nll[1] == pytest.approx(float(loss), rel=1e-5)
    steered = reference_nll(model, tokenizer, _dw(model, 0.5), 2.0, pairs)
    assert steered != pytest.approx(nll)


def test_run_degradation_table(tiny, tmp_path):
    from weight_steering.core.diff import compute_dw, save_dw
    from weight_steering.degradation.run import run_degradation

    model, tokenizer = tiny
    positive = _dw(model, 0.2)
    save_dw(compute_dw(positive, {k: -v for k, v in positive.items()}, {"model": "tiny"}), tmp_path / "dw" / "dW.safetensors")
    result = run_degradation(tmp_path / "dw", alphas=(-1.0, 0.0, 1.0), n_tokens=4, out=str(tmp_path), loaded=(model, tokenizer))
    rows = {r["alpha"]: r for r in result["rows"]}
    assert rows[0.0]["kl_max"] < 1e-6 and rows[0.0]["nll_change"] == 0.0
    assert rows[1.0]["kl_p95"] > 0 and rows[-1.0]["kl_mean"] > 0 and result["n_pairs"] == 100
    assert rows[1.0]["kl_p95_ci_low"] <= rows[1.0]["kl_p95"] <= rows[1.0]["kl_p95_ci_high"]
    assert "| +1 |" in (result["path"] / "degradation.md").read_text()


def _synthetic(scale, power=2.0, ceiling=None):
    from weight_steering.evaluation.calibrate import KLStats

    calls = []

    def measure(alpha):
        calls.append(alpha)
        p95 = scale * abs(alpha) ** power
        if ceiling is not None:
            p95 = min(p95, ceiling)
        return KLStats(p95 / 2, p95, p95 * 3, np.array([p95]), np.array([0]), 1, 1, 10)

    return measure, calls


def test_calibration_converges_per_sign_with_asymmetric_scale():
    from weight_steering.evaluation.calibrate import calibrate_alpha

    plus, _ = _synthetic(0.05)          # p95 = 0.05 α²  -> α₊ = √20 ≈ 4.47
    minus, calls = _synthetic(0.8, 1.5)  # p95 = 0.8 |α|^1.5 -> α₋ = −1.16
    a = calibrate_alpha(plus, +1, target=1.0, tolerance=0.01)
    b = calibrate_alpha(minus, -1, target=1.0, tolerance=0.01)
    assert a.converged and abs(a.p95 - 1.0) <= 0.01 and a.alpha == pytest.approx(20 ** 0.5, rel=0.01)
    assert b.converged and b.alpha < 0 and all(c < 0 for c in calls) and b.alpha == pytest.approx(-(1.25 ** (1 / 1.5)), rel=0.01)
    assert a.iterations <= 8 and a.n_forward_passes == 10 * a.iterations


def test_calibration_reports_unbracketable_and_no_effect():
    from weight_steering.evaluation.calibrate import calibrate_alpha

    saturating, _ = _synthetic(0.05, ceiling=0.4)
    out = calibrate_alpha(saturating, +1, target=1.0)
    assert not out.converged and "not reached" in out.message and out.p95 == pytest.approx(0.4)
    inert, _ = _synthetic(0.0)
    out = calibrate_alpha(inert, +1, target=1.0)
    assert not out.converged and "does not change the model" in out.message
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="target"):
            calibrate_alpha(inert, +1, target=bad)


def test_calibration_on_the_tiny_model(tiny):
    from weight_steering.evaluation.calibrate import calibrate_alpha

    model, tokenizer = tiny
    dw = _dw(model, 0.3)
    out = calibrate_alpha(lambda a: kl_from_base(model, tokenizer, dw, a, PROMPTS, n_tokens=4), +1, target=0.005, tolerance=0.001)
    assert out.converged and abs(out.p95 - 0.005) <= 0.001, out
    again = kl_from_base(model, tokenizer, dw, out.alpha, PROMPTS, n_tokens=4)
    assert again.p95 == pytest.approx(out.p95, rel=1e-5)


def test_kl_positions_end_at_the_natural_stop(tiny):
    """A model that emits its stop token at once contributes one KL position per prompt (the stop), never forced text."""
    import torch

    from weight_steering.evaluation.calibrate import kl_from_base

    model, tokenizer = tiny
    eos = tokenizer.eos_token_id

    def favour_stop(module, inputs, output):
        bonus = torch.zeros(output.shape[-1], dtype=output.dtype)
        bonus[eos] = 50.0
        return output + bonus

    dw = {"model.layers.1.mlp.down_proj.weight": 0.1 * torch.randn_like(model.model.layers[1].mlp.down_proj.weight)}
    free = kl_from_base(model, tokenizer, dw, 1.0, ["Hello there", "What is two plus two?"], n_tokens=6)
    assert free.n_positions > 2  # without the hook the tiny model runs past its first token
    handle = model.lm_head.register_forward_hook(favour_stop)
    try:
        stats = kl_from_base(model, tokenizer, dw, 1.0, ["Hello there", "What is two plus two?"], n_tokens=6)
    finally:
        handle.remove()
    assert stats.n_positions == 2 and list(stats.prompt_index) == [0, 1]


def test_calibration_needs_at_most_three_measurements_on_average():
    """The power-law-seeded secant: over KL–α laws with exponents 1.5–2.5, scales over four decades
    (calibrated |α| from about 0.05 to 48) and a bend, the mean number of KL measurements per sign is ≤ 3
    at the comparison's 0.05-nat tolerance, and every one converges."""
    from weight_steering.evaluation.calibrate import calibrate_alpha

    counts = []
    for power in (1.5, 1.8, 2.0, 2.2, 2.5):
        for scale in (3e-3, 1e-2, 0.1, 1.0, 10.0, 100.0):
            for bend in (0.0, 0.5):
                def measure(alpha, power=power, scale=scale, bend=bend):
                    a = abs(alpha)
                    p95 = scale * a ** power * (1 + bend * np.log1p(a))
                    return KLStats(p95 / 2, p95, p95 * 3, np.array([p95]), np.array([0]), 1, 1, 10)

                out = calibrate_alpha(measure, +1, target=1.0, tolerance=0.05)
                assert out.converged and abs(out.p95 - 1.0) <= 0.05, (power, scale, bend, out.history)
                counts.append(out.iterations)
    assert np.mean(counts) <= 3.0, np.mean(counts)
    assert max(counts) <= 6, counts
