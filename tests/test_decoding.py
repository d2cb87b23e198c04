"""The cached decoder: greedy tokens equal transformers' generate, sampling draws from generate's distribution,
same seed gives the same tokens, and bad input is refused."""

from dataclasses import fields

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from weight_steering.core.chat import render_chat, stop_token_ids
from weight_steering.core.data import GenerationConfig, generation_key, sample_responses, sampler_settings
from weight_steering.core.decoding import Sampling, common_prefix_length, decode, prefill, sample_from_logits

PROMPTS = ["I think the sky is green. Right?", "Is water wet?", "Tell me a story about a long dilemma, please.", "Yes or no?"]


def _encoded(tokenizer, system=None):
    return [tokenizer(render_chat(tokenizer, ([{"role": "system", "content": system}] if system else [])
                                  + [{"role": "user", "content": p}]), add_special_tokens=False)["input_ids"] for p in PROMPTS]


def _lively(model):
    """The tiny random model says one token forever; larger projections make its replies depend on the prompt."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "proj" in name:
                param.mul_(20)
    return model


def _generate_reference(model, tokenizer, prompts, max_new_tokens, stops):
    ids = torch.full((len(prompts), max(map(len, prompts))), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, ids.shape[1] - len(p):], mask[i, ids.shape[1] - len(p):] = torch.tensor(p), 1
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         eos_token_id=sorted(stops), pad_token_id=tokenizer.pad_token_id)
    rows = []
    for row in out[:, ids.shape[1]:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        rows.append((row if cut is None else row[:cut], cut is not None))
    return rows


def test_greedy_decoding_gives_the_tokens_of_generate(tiny):
    model, tokenizer = _lively(tiny[0]), tiny[1]
    prompts = _encoded(tokenizer)
    stops = stop_token_ids(tokenizer)
    # a stop token the random model actually produces, so that rows finish early and leave the batch
    first = decode(model, prompts, 12, set(), tokenizer.pad_token_id)
    unseen_in_row_0 = [t for d in first[1:] for t in d.tokens if t not in first[0].tokens]
    assert unseen_in_row_0, "the random model says the same in every row; pick other prompts"
    stops = stops | {unseen_in_row_0[0]}
    reference = _generate_reference(model, tokenizer, prompts, 12, stops)
    got = decode(model, prompts, 12, stops, tokenizer.pad_token_id)
    assert [(d.tokens, d.hit_stop) for d in got] == reference
    assert any(d.hit_stop for d in got) and len({len(d.tokens) for d in got}) > 1  # rows left the batch at different steps


def test_kept_logits_are_generates_output_logits_up_to_the_stop(tiny):
    model, tokenizer = _lively(tiny[0]), tiny[1]
    prompts = _encoded(tokenizer)
    first = decode(model, prompts, 10, set(), tokenizer.pad_token_id)
    stops = stop_token_ids(tokenizer) | {first[1].tokens[2]}   # row 1 stops at its third step, the others later or never
    ids = torch.full((len(prompts), max(map(len, prompts))), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, ids.shape[1] - len(p):], mask[i, ids.shape[1] - len(p):] = torch.tensor(p), 1
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10, eos_token_id=sorted(stops),
                         pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True, output_logits=True)
    reference = torch.stack(out.logits, 1).float()                                    # [N, steps, V]
    got = decode(model, prompts, 10, stops, tokenizer.pad_token_id, keep_logits=True)
    assert got[1].hit_stop and got[1].logits.shape == (3, reference.shape[-1])
    for row, d in enumerate(got):
        steps = len(d.tokens) + d.hit_stop
        assert d.logits.shape[0] == steps
        assert torch.allclose(d.logits, reference[row, :steps], atol=1e-4, rtol=1e-4)
    assert all(d.logits is None for d in decode(model, prompts, 4, stops, tokenizer.pad_token_id))


def test_prefill_runs_the_common_prefix_once_and_gives_a_plain_forwards_logits(tiny):
    model, tokenizer = _lively(tiny[0]), tiny[1]
    prompts = _encoded(tokenizer, system="You are a careful assistant who answers briefly.")
    shared = common_prefix_length(prompts)
    assert shared >= 10 and len({len(p) for p in prompts}) > 1
    ids = torch.full((len(prompts), max(map(len, prompts))), tokenizer.pad_token_id)   # generate's layout [pads][prompt]
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, ids.shape[1] - len(p):], mask[i, ids.shape[1] - len(p):] = torch.tensor(p), 1
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits[:, -3:]
    tokens_seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: tokens_seen.append(i[0].numel()))
    try:
        logits, got_mask, last_position, cache = prefill(model, prompts, tokenizer.pad_token_id, room=5, logits_to_keep=3)
    finally:
        hook.remove()
    assert logits.shape == plain.shape and torch.allclose(logits, plain, atol=1e-5, rtol=1e-5)
    width = ids.shape[1]
    assert tokens_seen == [shared, len(prompts) * (width - shared)]          # the prefix ran for one row only
    assert got_mask.shape == (len(prompts), width + 5) and got_mask.sum(1).tolist() == [len(p) for p in prompts]
    assert last_position.tolist() == [len(p) - 1 for p in prompts]
    assert int(cache.get_seq_length()) == width
    tokens_seen.clear()
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: tokens_seen.append(i[0].numel()))
    try:
        whole, *_ = prefill(model, prompts, tokenizer.pad_token_id, logits_to_keep=3, share_prefix=False)
    finally:
        hook.remove()
    assert tokens_seen == [len(prompts) * width] and torch.allclose(whole, plain, atol=1e-5, rtol=1e-5)
    # the kept positions are never part of the prefix, even when the prompts are identical
    same = [prompts[0]] * 3
    logits, *_ = prefill(model, same, tokenizer.pad_token_id, logits_to_keep=4)
    assert torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-6) and logits.shape[1] == 4
    assert common_prefix_length([]) == 0 and common_prefix_length([[1, 2, 3], [1, 2, 4]]) == 2
    for bad in ([], [[1, 2]]):
        with pytest.raises(ValueError, match="logits_to_keep"):
            prefill(model, bad, tokenizer.pad_token_id, logits_to_keep=3)


def test_identical_prompts_are_prefilled_once_and_decode_alike(tiny):
    model, tokenizer = _lively(tiny[0]), tiny[1]
    prompts = _encoded(tokenizer)
    doubled = [p for p in prompts for _ in range(2)]
    alone = decode(model, prompts, 8, set(), tokenizer.pad_token_id)
    together = decode(model, doubled, 8, set(), tokenizer.pad_token_id)
    assert [d.tokens for d in together] == [d.tokens for d in alone for _ in range(2)]


def test_sampling_is_seeded_and_respects_min_new_tokens(tiny):
    model, tokenizer = _lively(tiny[0]), tiny[1]
    prompts = _encoded(tokenizer, system="You are terse.")
    greedy = decode(model, prompts, 6, set(), tokenizer.pad_token_id)
    stops = {greedy[0].tokens[0], greedy[1].tokens[0]}  # what the model wants to say first: forbidden for 3 steps
    sampling = Sampling(temperature=0.7, top_k=50, top_p=0.9)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(decode(model, prompts, 10, stops, tokenizer.pad_token_id, min_new_tokens=3, sampling=sampling))
    assert [d.tokens for d in runs[0]] == [d.tokens for d in runs[1]]
    assert all(len(d.tokens) >= 3 for d in runs[0])
    torch.manual_seed(8)
    other = decode(model, prompts, 10, stops, tokenizer.pad_token_id, min_new_tokens=3, sampling=sampling)
    assert [d.tokens for d in other] != [d.tokens for d in runs[0]]
    one = decode(model, prompts, 6, set(), tokenizer.pad_token_id, sampling=Sampling(temperature=1.0, top_k=1))
    assert [d.tokens for d in one] == [d.tokens for d in greedy]


def test_sampling_draws_from_the_distribution_of_generates_warpers():
    torch.manual_seed(0)
    logits = torch.randn(1, 40) * 2
    settings = Sampling(temperature=0.7, top_k=12, top_p=0.8)
    warped = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(12)(None, TemperatureLogitsWarper(0.7)(None, logits.clone())))
    expected = torch.softmax(warped, -1)[0]                                          # [40]
    draws = sample_from_logits(logits.expand(40000, -1), settings, torch.Generator().manual_seed(1))
    observed = torch.bincount(draws, minlength=40).float() / len(draws)
    assert set(torch.nonzero(observed).flatten().tolist()) == set(torch.nonzero(expected).flatten().tolist())
    assert torch.allclose(observed, expected, atol=0.01)


def test_sample_responses_cached_sampler_is_deterministic_and_cut_at_stops(tiny):
    model, tokenizer = tiny
    texts = [render_chat(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    config = GenerationConfig(max_new_tokens=8, min_new_tokens=1, batch_size=3, sampler="cached")
    torch.manual_seed(0)
    first = sample_responses(model, tokenizer, texts, config)
    torch.manual_seed(0)
    assert sample_responses(model, tokenizer, texts, config) == first
    assert all(isinstance(text, str) and isinstance(stop, bool) for text, stop in first)


def test_the_transformers_sampler_keeps_the_archived_data_keys_and_the_default_does_not():
    legacy = GenerationConfig(**sampler_settings("transformers"))
    archived_fields = {f.name for f in fields(GenerationConfig)} - {"sampler"}   # the key's fields before the sampler existed
    assert set(generation_key(legacy)) == archived_fields and generation_key(legacy)["batch_size"] == 50
    default = generation_key(GenerationConfig())
    assert default["sampler"] == "cached" and default["batch_size"] == 200 and default != generation_key(legacy)
    with pytest.raises(ValueError, match="choose one of cached, transformers"):
        sampler_settings("vllm")


@pytest.mark.parametrize("bad, message", [
    ({"prompts": [[]]}, "no tokens"),
    ({"max_new_tokens": 0}, "at least 1"),
])
def test_decode_refuses_bad_input(tiny, bad, message):
    model, tokenizer = tiny
    args = {"prompts": [[1, 2, 3]], "max_new_tokens": 4, **bad}
    with pytest.raises(ValueError, match=message):
        decode(model, args["prompts"], args["max_new_tokens"], set(), tokenizer.pad_token_id)


def test_generation_config_refuses_an_unknown_sampler():
    with pytest.raises(ValueError, match="sampler must be one of cached, transformers"):
        GenerationConfig(sampler="vllm")
