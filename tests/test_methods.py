import pytest
import torch

from weight_steering.calibrate import calibrate_alpha, kl_from_base
from weight_steering.methods import activation_method, persona_method, prompt_method, weight_method

PROMPTS = ["How do I boil an egg?", "What is the capital of France?"]


def test_prompt_method_kl_is_measured_against_the_bare_prompt(tiny):
    model, tokenizer = tiny
    method = prompt_method("persona", "You always agree.", "You always disagree.")
    assert method.system_prompt(1.0) == "You always agree." and method.system_prompt(-0.5) == "You always disagree."
    assert method.system_prompt(0.0) is None and not method.continuous
    assert kl_from_base(model, tokenizer, method, 0.0, PROMPTS, n_tokens=3).max < 1e-6
    plus = kl_from_base(model, tokenizer, method, 1.0, PROMPTS, n_tokens=3)
    assert plus.mean > 0 and plus.n_positions == 6
    with pytest.raises(ValueError, match="non-empty"):
        prompt_method("bad", " ", "no")


def test_persona_method_uses_the_behaviours_pair():
    from weight_steering.behaviors import load_behavior

    behavior = load_behavior("sycophancy")
    method = persona_method(behavior)
    assert method.system_prompt(1.0) == behavior.positive_system_prompts[0]
    assert method.system_prompt(-1.0) == behavior.negative_system_prompts[0]


def test_weight_method_equals_passing_the_dw(tiny):
    model, tokenizer = tiny
    params = dict(model.named_parameters())
    torch.manual_seed(0)
    dw = {"model.layers.2.mlp.down_proj.weight": 0.5 * torch.randn_like(params["model.layers.2.mlp.down_proj.weight"])}
    a = kl_from_base(model, tokenizer, dw, 1.5, PROMPTS, n_tokens=3)
    b = kl_from_base(model, tokenizer, weight_method(dw), 1.5, PROMPTS, n_tokens=3)
    assert a.mean == b.mean and a.p95 == b.p95


@pytest.mark.parametrize("aggregator", ["mean", "pca"])
def test_activation_method_steers_restores_and_calibrates(tiny, aggregator):
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    model, tokenizer = tiny
    pairs = [("I agree, you are right.", "I disagree, you are wrong."), ("Yes, exactly so.", "No, not at all."),
             ("Sure, good point.", "Wrong, bad point.")]
    method = activation_method(model, tokenizer, pairs, layers=[1, 2], aggregator=aggregator)
    ids = tokenizer(["hello there"], return_tensors="pt")
    with torch.no_grad():
        base = model(**ids).logits
        with method.apply(model, 4.0):
            steered = model(**ids).logits
        after = model(**ids).logits
    assert (steered - base).abs().max() > 1e-4 and torch.equal(after, base)
    result = calibrate_alpha(lambda a: kl_from_base(model, tokenizer, method, a, PROMPTS, n_tokens=3), +1, target=0.01, tolerance=0.002)
    assert result.converged and result.alpha > 0
    with pytest.raises(ValueError, match="unknown aggregator"):
        activation_method(model, tokenizer, pairs, layers=[1], aggregator="median")
