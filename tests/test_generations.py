"""Generation scores: the judge-free metrics, greedy replies under a method, and effects against the base reply."""

import numpy as np
import pytest
import torch

from weight_steering.core.chat import generate_text
from weight_steering.core.methods import prompt_method, weight_method
from weight_steering.evaluation.generations import generate_replies, generation_effects, register_score, score_replies, valence_score


def test_register_counts_contractions_exclamations_and_slang_per_word():
    assert register_score("Hey! You're gonna love it, it's super easy!") == pytest.approx((2 + 2 + 3) / 8)  # 8 words; you're it's; !!; hey gonna super
    assert register_score("Please note that the meeting has been moved to Thursday.") == 0.0
    assert register_score("") == 0.0 and register_score("!!!") == 0.0  # no words: no score


def test_valence_is_vader_compound_in_minus_one_to_one():
    up, down = valence_score("What a wonderful, happy day!"), valence_score("What a miserable, hopeless day.")
    assert -1 <= down < 0 < up <= 1


def test_replies_follow_the_method_and_the_weights_come_back_bit_exact(tiny):
    model, tokenizer = tiny
    prompts = ["Yes or no?", "My answer: **Yes**"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    base = generate_replies(model, tokenizer, None, 0.0, prompts, max_new_tokens=6)
    assert base == [generate_text(model, tokenizer, p, 6) for p in prompts]  # one batch, the same greedy tokens
    name = "model.layers.1.mlp.down_proj.weight"
    dw = {name: torch.randn_like(model.state_dict()[name]) * 5}
    steered = generate_replies(model, tokenizer, weight_method(dw), 1.0, prompts, max_new_tokens=6)
    assert steered != base
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    persona = prompt_method("p", "Yes No yes no YES NO true false", "No no no")
    assert generate_replies(model, tokenizer, persona, 1.0, prompts, 6) == [generate_text(model, tokenizer, p, 6, system="Yes No yes no YES NO true false")
                                                                            for p in prompts]


def _rows(values: dict[float, list[float]], sets: list[str]):
    return [{"prompt": f"p{i}", "split": "ood", "set": sets[i], "alpha": a, "reply": "", "metric": v}
            for a, vs in values.items() for i, v in enumerate(vs)]


def test_effects_are_paired_by_prompt_and_weight_each_set_equally():
    sets = ["a", "a", "a", "b"]
    rows = _rows({0.0: [0, 0, 0, 0], 2.0: [1, 1, 1, 5], -2.0: [0, 0, 0, -1]}, sets)
    effects = generation_effects(rows, 2.0, -2.0)
    assert effects.mean("gen_ood_metric", "plus") == pytest.approx((1 + 5) / 2)  # set a: 1, set b: 5
    assert effects.mean("gen_ood_metric", "spread") == pytest.approx((1 + 6) / 2)
    assert effects.get("gen_ood_metric", "base").mean == 0.0 and ("gen_id_metric", "plus") not in effects


def test_scores_use_the_named_metric_and_the_judge_threshold():
    rows = [{"reply": "Hey! It's cool!"}, {"reply": "It is acceptable."}]
    scored = score_replies(rows, "register", np.array([1.5, -0.5]), 0.0)
    assert scored[0]["metric"] > scored[1]["metric"] == 0.0
    assert [r["judged"] for r in scored] == [1.0, 0.0] and [r["judge"] for r in scored] == [1.5, -0.5]
    assert "metric" not in score_replies(rows, None, None, None)[0]
