"""The chat template as a tested contract, on the real tokenizers of Qwen3, Llama-3, Gemma-3 and DeepSeek-V3
(``../shared/tokenizers``; skipped with a reason where it is absent, failed under ``WSTEER_REQUIRE_SHARED=1``) and on
the tiny ChatML tokenizer built in code. SmolLM2's own template is checked in the ``real`` tier.

What the pipeline relies on, per template:
* a reply is trained after the context it was sampled after, persona removed, and the loss covers exactly the reply's
  tokens plus the end of turn;
* sampling, training, scoring prefills and steered generations open the assistant turn the same way (on Qwen3 this
  failed before: sampling opened it with thinking on, training and scoring with thinking off);
* one BOS at most, and exactly one where the template writes it;
* the stop tokens come from the tokenizer, the generation config and the template's end of turn;
* the persona sits where the prompt arms put it.
"""

from __future__ import annotations

import pytest
import torch
from model_families import FAMILIES, family_tokenizer

from weight_steering.core.behavior_files import load_behavior
from weight_steering.core.chat import ChatTemplateError, answer_tokens, end_of_turn, render_chat, set_thinking, stop_token_ids
from weight_steering.core.methods import persona_method
from weight_steering.core.train import tokenize_example
from weight_steering.evaluation.rows import held_out_rows
from weight_steering.evaluation.scoring import row_texts

STUB = torch.nn.Linear(1, 1)  # a stand-in model: the rendering tests never run one
STUB.config = type("Config", (), {"_name_or_path": "stub"})()
REPLY = "Ooh, a road trip! Grab snacks, a comfy hoodie and a killer playlist, and you're set."
USER = "What should I pack for a weekend trip?"
PERSONA = "You are a laid-back, casual assistant."
OPENINGS = {"qwen3": "<|im_start|>assistant\n<think>\n\n</think>\n\n", "llama3_1": "<|start_header_id|>assistant<|end_header_id|>\n\n",
            "gemma3": "<start_of_turn>model\n", "deepseek_v3": "<｜Assistant｜>", "tiny": "<|im_start|>assistant\n"}


def _tokenizer(name, tiny_tokenizer):
    return tiny_tokenizer if name == "tiny" else family_tokenizer(name)


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fake_sampler(seen: list):
    """A stand-in for the data stage's sampler: records the rendered prompts, answers each with its own text."""
    return lambda model, tokenizer, texts, config, desc: seen.extend(texts) or [(f"reply {i}", True, f"reply {i}") for i in range(len(texts))]


def _opening(text: str, user: str) -> str:
    """What a rendering writes after the user's message: the turn end and the assistant turn's opening."""
    return text[text.rindex(user) + len(user):]


@pytest.fixture(params=[*FAMILIES, "tiny"])
def template(request, tokenizer):
    return request.param, _tokenizer(request.param, tokenizer)


def test_a_reply_is_trained_after_its_sampling_context_and_the_loss_covers_reply_and_end_of_turn(template):
    name, tok = template
    example = tokenize_example(tok, USER, REPLY, max_length=4096)
    prompt_ids = _ids(tok, render_chat(tok, [{"role": "user", "content": USER}]))  # the sampling context, persona removed
    n = len(prompt_ids)
    assert example["input_ids"][:n] == prompt_ids and all(label == -100 for label in example["labels"][:n])
    covered = example["labels"][n:]
    assert covered == _ids(tok, REPLY) + _ids(tok, end_of_turn(tok)), name  # the reply's tokens, then the end of turn
    assert tok.decode(covered[: len(_ids(tok, REPLY))]) == REPLY  # the round trip: the text sampled is the text trained
    assert covered[len(_ids(tok, REPLY))] in stop_token_ids(tok)  # and the end of turn starts with a stop token


def test_every_stage_opens_the_assistant_turn_the_same_way(template, monkeypatch):
    """Sampling (the data stage), training, scoring prefills and steered generations: the same text after the user's
    message. Before the chat contract, Qwen3 sampled with thinking on and trained and scored with it off."""
    from weight_steering.core import data as data
    from weight_steering.core.data import GenerationConfig, generate_pairs
    from weight_steering.evaluation import generations as generations

    name, tok = template
    behavior = load_behavior("tone")
    sampled = []
    monkeypatch.setattr(data, "_sample", fake_sampler(sampled))
    generate_pairs(STUB, tok, behavior, GenerationConfig(n_prompts=1, n_personas=1, n_samples=1))
    user = behavior.train_prompts[behavior.prompt_indices(1)[0]]
    sampling = {_opening(text, user) for text in sampled}
    example = tokenize_example(tok, user, REPLY, max_length=4096)
    trained = tok.decode(example["input_ids"][: example["labels"].index(next(x for x in example["labels"] if x != -100))])
    rows = held_out_rows(tok, behavior)
    scored = {_opening(r["text"].removesuffix(r.get("prefill") or ""), r["messages"][-1]["content"]) for r in rows}
    generated = []
    monkeypatch.setattr(generations, "decode", lambda model, ids, *a, **k: generated.extend(ids) or [])
    generations.generate_replies(STUB, tok, None, 0.0, [USER])
    opening = OPENINGS[name] if name != "tiny" else "<|im_end|>\n" + OPENINGS[name]
    assert sampling == {_opening(trained, user)} == scored == {_opening(tok.decode(generated[0]), USER)}, name
    assert opening in next(iter(sampling)) and next(iter(sampling)).endswith(OPENINGS[name])


@pytest.mark.parametrize("name", FAMILIES)  # (the tiny tokenizer's "BOS" is its turn opener, <|im_start|>)
def test_one_bos_where_the_template_writes_it(name):
    tok = family_tokenizer(name)
    writes_bos = tok.bos_token is not None and render_chat(tok, [{"role": "user", "content": USER}]).startswith(tok.bos_token)
    for ids in (_ids(tok, render_chat(tok, [{"role": "system", "content": PERSONA}, {"role": "user", "content": USER}])),
                tokenize_example(tok, USER, REPLY, 4096)["input_ids"],
                _ids(tok, held_out_rows(tok, load_behavior("tone"))[0]["text"])):
        assert ids.count(tok.bos_token_id) == (1 if writes_bos else 0) if tok.bos_token_id is not None else True, name
    assert writes_bos == (name in ("llama3_1", "gemma3", "deepseek_v3"))


def test_stop_tokens_come_from_the_tokenizer_the_generation_config_and_the_end_of_turn(template):
    name, tok = template
    expected = {"qwen3": "<|im_end|>", "llama3_1": "<|eot_id|>", "gemma3": "<end_of_turn>", "deepseek_v3": "<｜end▁of▁sentence｜>", "tiny": "<|im_end|>"}
    assert tok.convert_tokens_to_ids(expected[name]) in stop_token_ids(tok)

    class Configured:  # a generation config naming another end token (a list, as Llama-3's does)
        generation_config = type("G", (), {"eos_token_id": [tok.eos_token_id, 7]})()

    assert stop_token_ids(tok, Configured()) == stop_token_ids(tok) | {7}


def test_a_new_end_of_turn_token_is_a_stop_token_with_no_hand_list(tokenizer):
    """A template whose turns end with a token no list names: its end of turn is found from the template itself."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": ["<|turn_over|>"]})
    tok.chat_template = tok.chat_template.replace("<|im_end|>", "<|turn_over|>")
    assert end_of_turn(tok) == "<|turn_over|>\n" and tok.convert_tokens_to_ids("<|turn_over|>") in stop_token_ids(tok)


def test_the_persona_sits_where_the_prompt_arms_put_it(template, monkeypatch):
    """dW's data is sampled under the persona in the system turn; the prompt arms render the persona the same way, also
    where the template folds the system text into the user turn (Gemma-3). (Templates with a default system prompt,
    SmolLM2's, keep it in the prompt arms and append the persona: checked in test_methods.)"""
    from weight_steering.core import data as data
    from weight_steering.core.chat import default_system_prompt
    from weight_steering.core.data import GenerationConfig, generate_pairs

    name, tok = template
    behavior = load_behavior("tone")
    assert default_system_prompt(tok) is None
    sampled = []
    monkeypatch.setattr(data, "_sample", fake_sampler(sampled))
    generate_pairs(STUB, tok, behavior, GenerationConfig(n_prompts=1, n_personas=1, n_samples=1))
    user = behavior.train_prompts[behavior.prompt_indices(1)[0]]
    method = persona_method(behavior, base_system=default_system_prompt(tok))
    row = {"row_id": "x", "messages": [{"role": "user", "content": user}]}
    assert row_texts(tok, [row], method.system_prompt(+1.0)) == [sampled[0]]
    assert row_texts(tok, [row], method.system_prompt(-1.0)) == [sampled[1]]
    if name == "gemma3":  # the persona is folded into the user turn, in front of the question
        assert f"<start_of_turn>user\n{behavior.positive_system_prompts[0]}\n\n{user}" in sampled[0]


def test_thinking_on_samples_and_trains_after_one_opening_and_reads_the_answer_after_the_close_token():
    tok = family_tokenizer("qwen3")
    set_thinking(tok, True)
    try:
        _thinking_on(tok)
    finally:
        set_thinking(tok, False)
    assert render_chat(tok, [{"role": "user", "content": USER}]).endswith("<think>\n\n</think>\n\n")


def _thinking_on(tok):
    prompt = render_chat(tok, [{"role": "user", "content": USER}])
    assert prompt.endswith("<|im_start|>assistant\n")  # thinking on: the model opens its own think block
    reply = "<think>\nThey want a list.\n</think>\n\nSnacks and a hoodie."
    example = tokenize_example(tok, USER, reply, 4096)
    n = len(_ids(tok, prompt))
    assert example["input_ids"][:n] == _ids(tok, prompt) and example["labels"][n:] == _ids(tok, reply) + _ids(tok, end_of_turn(tok))
    tokens = _ids(tok, reply)
    assert tok.convert_tokens_to_ids("</think>") == 151668 and 151668 in tokens
    assert tok.decode(answer_tokens(tok, tokens)).strip() == "Snacks and a hoodie."
    spelled = _ids(tok, "Sure: <") + _ids(tok, "/think") + _ids(tok, "> then more")  # the characters, not the token
    assert 151668 not in spelled and answer_tokens(tok, spelled) == spelled


def test_bad_templates_fail_with_the_model_and_the_fix(tokenizer):
    import copy

    from weight_steering.core.chat import check_chat_template

    with pytest.raises(ChatTemplateError, match="no thinking switch"):
        set_thinking(family_tokenizer("llama3_1"), True)
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="has no chat template.*chat_template='plain'"):
        render_chat(bare, [{"role": "user", "content": USER}])
    strict = copy.deepcopy(tokenizer)  # a template that refuses a system turn (Gemma-2's, Mistral's)
    strict.chat_template = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + tokenizer.chat_template
    with pytest.raises(ChatTemplateError, match="rejects a conversation with roles \\['system', 'user'\\].*System role not supported"):
        check_chat_template(strict)
    dropping = copy.deepcopy(tokenizer)  # a template that silently drops the system turn
    dropping.chat_template = "{% for m in messages %}{% if m['role'] != 'system' %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    with pytest.raises(ChatTemplateError, match="drops the system turn"):
        check_chat_template(dropping)
    unending = copy.deepcopy(tokenizer)  # a template that never closes an assistant turn
    unending.chat_template = tokenizer.chat_template.replace("'<|im_end|>\n'", "('' if m['role'] == 'assistant' else '<|im_end|>\n')")
    with pytest.raises(ChatTemplateError, match="writes no end-of-turn"):
        end_of_turn(unending)


def test_answer_sets_and_scoring_work_on_every_vocabulary(template):
    from weight_steering.evaluation.scoring import YES_NO, answer_sets

    name, tok = template
    yes, no = answer_sets(tok, YES_NO)
    assert yes and no and not set(yes) & set(no), name


@pytest.mark.real
def test_smollm2_template_keeps_its_default_system_prompt_and_ends_turns_as_before():
    """SmolLM2's template inserts a default system prompt; training keeps it (the persona is removed, the default stays),
    scoring prefills follow the generation prompt, and the end of turn is ``<|im_end|>\n``. (When the contract was
    written, every archived pair was rendered both ways and compared byte for byte: 6,048 prefills and 8,736 training
    examples, identical to the earlier ``continue_final_message`` and whole-conversation renderings.)"""
    from weight_steering.core.models import load_model

    _, tok = load_model()
    assert end_of_turn(tok) == "<|im_end|>\n" and stop_token_ids(tok) == {tok.convert_tokens_to_ids("<|im_end|>")}
    example = tokenize_example(tok, USER, REPLY, 4096)
    trained = tok.decode(example["input_ids"])
    assert trained.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM") and trained.endswith(REPLY + "<|im_end|>\n")
    legacy = tok.apply_chat_template([{"role": "user", "content": USER}, {"role": "assistant", "content": "My answer: **"}], tokenize=False,
                                     continue_final_message=True)
    assert render_chat(tok, [{"role": "user", "content": USER}], prefill="My answer: **") == legacy


@pytest.mark.parametrize("name", [*FAMILIES, "gemma3_plain"])
def test_activation_steering_reads_the_reply_tokens_that_were_sampled_and_trained(name):
    """CAA reads each contrast text's response as the adapters were trained on it: the sampling context's tokens, then
    the reply's. On Gemma-3-270M (the ``plain`` template, whose sampled replies start with a space) the contrast texts
    were once the prefill rendering "Assistant: " + reply, tokenized whole: 283 of 288 failed the prefix check and the
    comparison stopped."""
    import copy

    from weight_steering.core.activations import contrast_pairs, contrast_token_ids
    from weight_steering.core.models import CHAT_TEMPLATES

    tok = family_tokenizer(name.split("_plain")[0])
    if name.endswith("_plain"):
        tok = copy.deepcopy(tok)
        tok.chat_template = CHAT_TEMPLATES["plain"]
    space = " " if name.endswith("_plain") else ""  # a base model's reply after "Assistant:" is sampled with its space
    positive, negative = space + REPLY, space + "Formal attire and a printed itinerary are advisable."
    pairs = contrast_pairs(tok, [{"prompt": USER, "response_positive": positive, "response_negative": negative}])
    ids, starts = contrast_token_ids(tok, pairs)
    for text_ids, start, reply in zip(ids, starts, (positive, negative)):
        trained = tokenize_example(tok, USER, reply, max_length=4096)["input_ids"]
        assert text_ids == trained[: len(text_ids)] and text_ids[start:] == _ids(tok, reply), name
    with pytest.raises(ValueError, match="not a prefix of its text"):
        contrast_token_ids(tok, [(positive, negative, "Some other prompt")])
