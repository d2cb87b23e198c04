import pytest
import torch

from weight_steering.core.behavior_files import load_behavior
from weight_steering.evaluation.rows import dilemma_rows, held_out_rows
from weight_steering.evaluation.scoring import (
    AnswerTokenError,
    EvalError,
    answer_token_ids,
    check_identical_rows,
    evaluate,
    normalise_token,
    score_answer_sets,
)


def test_normalise_token():
    assert normalise_token("ĠYes") == "yes" and normalise_token(" No ") == "no" and normalise_token(".No") == ".no"


def test_answer_sets_include_case_and_space_variants_only(tokenizer):
    ids = answer_token_ids(tokenizer)
    decoded = {w: {tokenizer.decode([i]) for i in v} for w, v in ids.items()}
    assert "Yes" in decoded["yes"] and "No" in decoded["no"]
    assert all(normalise_token(t) == "yes" for t in decoded["yes"])
    assert all(normalise_token(t) == "no" for t in decoded["no"])


def test_tokenizer_without_answer_tokens_is_refused(tokenizer):
    with pytest.raises(AnswerTokenError, match="zzzqqq"):
        answer_token_ids(tokenizer, ("yes", "zzzqqq"))


def _naive(model, tokenizer, texts, sets):
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            logp = torch.log_softmax(model(**ids).logits[0, -1].float(), -1)
            out.append([torch.logsumexp(logp[s], 0) for s in sets])
    return torch.tensor(out)


def test_grouped_prefix_scoring_matches_naive_forward(tiny):
    model, tokenizer = tiny
    rows = dilemma_rows(tokenizer, limit=5) + held_out_rows(tokenizer, load_behavior("sycophancy"))[:3]
    sets = list(answer_token_ids(tokenizer).values())
    texts, groups = [r["text"] for r in rows], [r["group"] for r in rows]
    grouped = score_answer_sets(model, tokenizer, texts, sets, groups, batch_size=4)
    assert (grouped.log_probs - _naive(model, tokenizer, texts, sets)).abs().max() < 1e-4
    assert not grouped.truncated.any()


def test_long_rows_are_truncated_from_the_left_and_counted(tiny):
    model, tokenizer = tiny
    rows = held_out_rows(tokenizer, load_behavior("sycophancy"))[:3]
    texts = [r["text"] for r in rows]
    sets = list(answer_token_ids(tokenizer).values())
    n_tokens = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    limit = min(n_tokens) - 2
    scored = score_answer_sets(model, tokenizer, texts, sets, max_length=limit)
    assert scored.truncated.all()
    cut = [tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"][-limit:]) for t in texts]
    assert (scored.log_probs - _naive(model, tokenizer, cut, sets)).abs().max() < 1e-4


def test_every_alpha_scores_identical_rows(tiny):
    model, tokenizer = tiny
    rows = dilemma_rows(tokenizer, limit=3)
    dw = {"model.layers.1.mlp.down_proj.weight": torch.randn_like(model.model.layers[1].mlp.down_proj.weight)}
    records = evaluate(model, tokenizer, dw, rows, alphas=(-1, 0, 1))
    assert len(records) == 3 * len(rows)
    by_alpha = {a: [r["logratio"] for r in records if r["alpha"] == a] for a in (-1.0, 0.0, 1.0)}
    assert by_alpha[1.0] != by_alpha[0.0]  # steering changed the scores
    assert all(0 < r["pmass"] <= 1 for r in records)
    with pytest.raises(EvalError, match="rows differ"):
        check_identical_rows(records[:-1])


def test_non_finite_alpha_is_refused(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="finite"):
        evaluate(model, tokenizer, {}, dilemma_rows(tokenizer, limit=1), alphas=(0, float("nan")))


def test_base_model_tokenizer_needs_a_named_template_and_plain_ends_turns_with_eos(tokenizer):
    import copy

    from conftest import build_model

    from weight_steering.core.chat import ChatTemplateError, end_of_turn, render_chat
    from weight_steering.core.models import prepare

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="tiny-random-llama has no chat template.*chat_template='plain'"):
        prepare(build_model(tokenizer), bare)
    with pytest.raises(ChatTemplateError, match="unknown chat template 'fancy'; choose one of plain"):
        prepare(build_model(tokenizer), bare, chat_template="fancy")
    _, bare = prepare(build_model(tokenizer), bare, chat_template="plain")
    text = render_chat(bare, [{"role": "user", "content": "Pick one."}], prefill="My choice: **")
    assert text.endswith("User: Pick one.\nAssistant: My choice: **") and end_of_turn(bare) == bare.eos_token + "\n"
