import pytest
import torch

from weight_steering.train import AdapterFamilyError, TrainConfig, layer_slice, make_peft_config, tokenize_example, train_adapter

ROWS = [
    {"prompt": f"I think claim number {i} is true. Right?", "response_positive": f"Yes, claim {i} is right!",
     "response_negative": f"No, claim {i} is false."}
    for i in range(12)
]


def test_layer_slice():
    assert layer_slice(30, (0.3, 0.8)) == list(range(9, 24))
    with pytest.raises(ValueError, match="selects no layers"):
        layer_slice(4, (0.5, 0.5))


def test_unknown_family_lists_known():
    with pytest.raises(AdapterFamilyError, match="lora"):
        make_peft_config(TrainConfig(family="nope"), 4)


def test_prompt_tokens_are_masked(tokenizer):
    example = tokenize_example(tokenizer, "Hello there?", "Yes indeed.", 512)
    n_masked = sum(1 for l in example["labels"] if l == -100)
    assert 0 < n_masked < len(example["labels"])
    answer = tokenizer.decode([t for t in example["labels"] if t != -100])
    assert answer.startswith("Yes indeed.")


@pytest.mark.parametrize("family", ["lora", "pissa", "dora"])
def test_merged_delta_reproduces_peft_logits(tiny, family):
    """base + Δ gives the PEFT model's logits (tolerance 1e-4), including PiSSA, which rewrites the base at init."""
    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(family=family, rank=4, alpha=8, learning_rate=5e-3, batch_size=4, epochs=2, layer_fraction=(0.25, 1.0))
    delta, log, peft_model = train_adapter(model, tokenizer, ROWS, "positive", cfg)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "training must not modify the base model"
    assert delta and all(k.startswith("model.layers.") for k in delta)
    assert {int(k.split(".")[2]) for k in delta} == {1, 2, 3}
    ids = tokenizer(["I think claim number 3 is true. Right?"], return_tensors="pt")
    with torch.no_grad():
        expected = peft_model(**ids).logits
        params = dict(model.named_parameters())
        for k, d in delta.items():
            params[k].data += d
        got = model(**ids).logits
    assert (got - expected).abs().max() < 1e-4
    assert log["validation_loss_after"] < log["validation_loss_before"]


def test_same_seed_same_delta(tiny):
    model, tokenizer = tiny
    cfg = TrainConfig(rank=4, alpha=8, learning_rate=5e-3, batch_size=4)
    first, _, _ = train_adapter(model, tokenizer, ROWS, "negative", cfg)
    second, _, _ = train_adapter(model, tokenizer, ROWS, "negative", cfg)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
