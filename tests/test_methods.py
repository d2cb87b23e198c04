import pytest
import torch

from weight_steering.core.activations import activation_method
from weight_steering.core.methods import persona_method, prompt_method, weight_method
from weight_steering.evaluation.calibrate import calibrate_alpha, kl_from_base

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
    from weight_steering.core.behavior_files import load_behavior

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


def test_engineered_prompts_ship_for_every_behaviour_and_unknown_is_named():
    from weight_steering.core.behavior_files import available_behaviors
    from weight_steering.core.methods import engineered_method

    for name in available_behaviors():
        method = engineered_method(name)
        assert method.system_prompt(1.0) != method.system_prompt(-1.0) and not method.continuous
    with pytest.raises(ValueError, match="no engineered prompt for behaviour 'telepathy'; shipped: authority"):
        engineered_method("telepathy")


def test_s_space_projection_lies_in_the_writer_span_and_keeps_the_norm(tiny):
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from weight_steering.core.activations import residual_writers, s_space_vector, train_activation_vector

    model, tokenizer = tiny
    pairs = [("I agree, you are right.", "I disagree, you are wrong."), ("Yes, exactly so.", "No, not at all.")]
    vector = train_activation_vector(model, tokenizer, pairs, [1, 2], "mean")
    projected = s_space_vector(model, vector, rank=3)
    for layer in (1, 2):
        left = torch.linalg.svd(residual_writers(model, layer), full_matrices=False).U[:, :3]
        v, p = vector.layer_activations[layer].float(), projected.layer_activations[layer].float()
        assert torch.allclose(p.norm(), v.norm(), rtol=1e-5)
        assert torch.allclose(left @ (left.T @ p), p, atol=1e-5 * v.norm())  # inside span(U_r)
        assert not torch.allclose(p, v, atol=1e-3 * v.norm())  # and not the original direction
    full = s_space_vector(model, vector, rank=model.config.hidden_size)  # full rank: unchanged
    assert torch.allclose(full.layer_activations[1], vector.layer_activations[1], atol=1e-5)
    with pytest.raises(ValueError, match="rank must be in"):
        s_space_vector(model, vector, rank=0)


def test_pca_vector_is_rescaled_to_the_mean_difference_norm(tiny):
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from weight_steering.core.activations import train_activation_vector

    model, tokenizer = tiny
    pairs = [("I agree, you are right.", "I disagree, you are wrong."), ("Yes, exactly so.", "No, not at all."),
             ("Sure, good point.", "Wrong, bad point.")]
    mean = train_activation_vector(model, tokenizer, pairs, [1, 2], "mean")
    pca = train_activation_vector(model, tokenizer, pairs, [1, 2], "pca")
    for layer in (1, 2):
        assert torch.allclose(pca.layer_activations[layer].norm(), mean.layer_activations[layer].norm(), rtol=1e-4)


def test_separation_by_layer_finds_the_layer_that_separates(tiny):
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from weight_steering.core.activations import ContrastActivations, contrast_activations, separation_by_layer

    model, tokenizer = tiny
    same = [("Yes, exactly so.", "Yes, exactly so."), ("Sure, good point.", "Sure, good point."), ("I agree.", "I agree.")]
    different = [("I agree, you are right.", "I disagree, you are wrong."), ("Yes, exactly so.", "No, not at all."),
                 ("Sure, good point.", "Wrong, bad point.")]
    assert all(abs(v) < 1e-4 for v in separation_by_layer(contrast_activations(model, tokenizer, same, [0, 3])).values())
    scores = separation_by_layer(contrast_activations(model, tokenizer, different, [0, 1, 2, 3]))
    assert set(scores) == {0, 1, 2, 3} and all(v > 0 for v in scores.values())
    planted = ContrastActivations({0: torch.randn(8, 4), 1: torch.randn(8, 4) + torch.tensor([5.0, 0, 0, 0])},
                                  {0: torch.randn(8, 4), 1: torch.randn(8, 4)})
    scores = separation_by_layer(planted)
    assert max(scores, key=scores.get) == 1  # the layer with a planted shift wins
    with pytest.raises(ValueError, match="at least two pairs"):
        separation_by_layer(ContrastActivations({0: torch.zeros(1, 4)}, {0: torch.zeros(1, 4)}))


def test_batched_activations_match_one_at_a_time(tiny):
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from weight_steering.core.activations import contrast_activations

    model, tokenizer = tiny
    pairs = [("I agree, you are right about all of it.", "No."), ("Yes.", "No, not at all, that is wrong.")]
    batched, single = contrast_activations(model, tokenizer, pairs, [1, 3], batch_size=2), contrast_activations(model, tokenizer, pairs, [1, 3], batch_size=1)
    for layer in (1, 3):
        assert torch.allclose(batched.positive[layer], single.positive[layer], atol=1e-4)
        assert torch.allclose(batched.negative[layer], single.negative[layer], atol=1e-4)


def test_prompt_methods_rerender_eval_rows_and_reference_answers(tiny):
    from weight_steering.core.behavior_files import load_behavior
    from weight_steering.evaluation.rows import held_out_rows
    from weight_steering.evaluation.scoring import EvalError, evaluate, reference_nll

    model, tokenizer = tiny
    rows = held_out_rows(tokenizer, load_behavior("sycophancy"))[:3]
    method = prompt_method("persona", "You always agree with everything.", "You always disagree.")
    bare = evaluate(model, tokenizer, None, rows, (0.0,))
    prompted = evaluate(model, tokenizer, method, rows, (-1.0, 0.0, 1.0))
    at = {a: [r["logratio"] for r in prompted if r["alpha"] == a] for a in (-1.0, 0.0, 1.0)}
    assert at[0.0] == [r["logratio"] for r in bare]  # strength 0: no system prompt, the base rows
    assert at[1.0] != at[0.0] and at[-1.0] != at[1.0]
    assert all("messages" not in r and "text" not in r for r in prompted)
    with pytest.raises(EvalError, match="carry no 'messages'"):
        evaluate(model, tokenizer, method, [{k: v for k, v in r.items() if k != "messages"} for r in rows], (1.0,))
    pairs = [{"instruction": "Name a colour.", "answer": "Blue."}, {"instruction": "Count to three.", "answer": "One, two, three."}]
    assert reference_nll(model, tokenizer, method, 0.0, pairs) == reference_nll(model, tokenizer, None, 0.0, pairs)
    assert reference_nll(model, tokenizer, method, 1.0, pairs) != reference_nll(model, tokenizer, None, 0.0, pairs)


def test_prompt_arms_keep_the_templates_default_system_prompt(tokenizer):
    """Prompt baselines differ from the α = 0 arm by the persona text only: strength 0 renders byte-identically
    to the base, and a template's default system prompt stays in the + and − arms."""
    import copy

    from weight_steering.core.behavior_files import load_behavior
    from weight_steering.core.chat import default_system_prompt
    from weight_steering.evaluation.rows import dilemma_rows
    from weight_steering.evaluation.scoring import row_texts

    assert default_system_prompt(tokenizer) is None  # the test template inserts no default
    smol_like = copy.deepcopy(tokenizer)
    smol_like.chat_template = (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nDEFAULT SYS<|im_end|>\n' }}{% endif %}"
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    assert default_system_prompt(smol_like) == "DEFAULT SYS"
    method = persona_method(load_behavior("sycophancy"), base_system=default_system_prompt(smol_like))
    rows = dilemma_rows(smol_like, limit=2)
    assert row_texts(smol_like, rows, method.system_prompt(0.0)) == row_texts(smol_like, rows, None)
    plus = row_texts(smol_like, rows, method.system_prompt(1.0))
    assert all(t.count("DEFAULT SYS") == 1 and load_behavior("sycophancy").positive_system_prompts[0] in t for t in plus)
    assert all(t.count("DEFAULT SYS") == 1 for t in row_texts(smol_like, rows, method.system_prompt(-1.0)))


def test_response_mean_reading_matches_a_hand_computation(tiny):
    """The default reading is the mean of the block output over the response tokens (after the prefix)."""
    from weight_steering.core.activations import contrast_activations, contrast_pairs

    model, tokenizer = tiny
    rows = [{"prompt": "Is the sky green?", "response_positive": "Yes, you are right.", "response_negative": "No, it is blue."},
            {"prompt": "Is two plus two five?", "response_positive": "Sure, exactly.", "response_negative": "No, four."}]
    pairs = contrast_pairs(tokenizer, rows)
    assert all(len(p) == 3 and p[0].startswith(p[2]) and p[1].startswith(p[2]) for p in pairs)
    default = contrast_activations(model, tokenizer, pairs, [1], batch_size=3)
    last = contrast_activations(model, tokenizer, pairs, [1], reading="last")
    assert default.reading == "response_mean" and last.reading == "last"
    for i, (positive, negative, prefix) in enumerate(pairs):
        for side, text in (("positive", positive), ("negative", negative)):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            start = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
            with torch.no_grad():
                hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[2][0]  # output of layer 1
            assert torch.allclose(getattr(default, side)[1][i], hidden[start:].mean(0), atol=1e-4)
            assert torch.allclose(getattr(last, side)[1][i], hidden[-1], atol=1e-4)
    with pytest.raises(ValueError, match="unknown reading"):
        contrast_activations(model, tokenizer, pairs, [1], reading="first")


def test_direction_agreement_reports_cosine_and_pair_signs():
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from weight_steering.core.activations import ContrastActivations, direction_agreement

    torch.manual_seed(0)
    base = torch.randn(10, 6)
    shift = torch.zeros(6)
    shift[0] = 3.0
    consistent = direction_agreement(ContrastActivations({0: base + shift}, {0: base}))[0]
    assert consistent["cos_caa_pca"] == pytest.approx(1.0, abs=1e-5) and consistent["sign_agreement_caa"] == 1.0
    mixed = torch.cat([torch.full((7, 1), 1.0), torch.full((3, 1), -4.0)], 0) * torch.eye(6)[0]  # 7 pairs one way, 3 (larger) the other
    split = direction_agreement(ContrastActivations({0: base + mixed}, {0: base}))[0]
    assert split["sign_agreement_caa"] == pytest.approx(0.3) and split["sign_agreement_pca"] == pytest.approx(0.3)


def test_as_method_is_the_one_conversion_of_a_steering_argument(tiny):
    import torch

    from weight_steering.core.methods import SteeringMethod, as_method, weight_method

    model, _ = tiny
    method = weight_method({}, "dW")
    assert as_method(method) is method and isinstance(as_method(None), SteeringMethod)
    key = "model.layers.0.mlp.up_proj.weight"
    weight = dict(model.named_parameters())[key]
    before = weight.detach().clone()
    with as_method({key: torch.ones_like(weight)}).apply(model, 2.0):
        assert torch.equal(weight.detach(), before + 2.0)  # a dict is α·dW
    with as_method(None).apply(model, 5.0):
        assert torch.equal(weight.detach(), before)  # None: the unsteered model
    assert torch.equal(weight.detach(), before)


def test_increment_vectors_are_each_layers_addition_to_the_contrast():
    """The all-layer variant: layer l steers by d^l − d^(l−1), so the increments up to l add up to d^l."""
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from weight_steering.core.activations import ContrastActivations, steering_vector

    generator = torch.Generator().manual_seed(0)
    positive = {layer: torch.randn(5, 8, generator=generator) for layer in range(4)}
    negative = {layer: torch.randn(5, 8, generator=generator) for layer in range(4)}
    activations = ContrastActivations(positive, negative)
    plain = steering_vector(activations, "mean").layer_activations
    steps = steering_vector(activations, "mean", increments=True).layer_activations
    for layer in range(4):
        assert torch.allclose(plain[layer], (positive[layer] - negative[layer]).mean(0), atol=1e-6)
        assert torch.allclose(sum(steps[l] for l in range(layer + 1)), plain[layer], atol=1e-5)
    assert torch.allclose(steps[2], plain[2] - plain[1], atol=1e-6)
    with pytest.raises(ValueError, match="increments need the mean aggregator"):
        steering_vector(activations, "pca", increments=True)
    with pytest.raises(ValueError, match="every layer from 0"):
        steering_vector(activations, "mean", [1, 2], increments=True)
