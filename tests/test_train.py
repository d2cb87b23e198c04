import pytest
import torch

from weight_steering.diff import compute_dw, load_dw, save_dw
from weight_steering.train import ADAPTER_FAMILIES, AdapterFamilyError, TrainConfig, layer_slice, make_peft_config, tokenize_example, train_adapter

# Family sizes that fit the tiny model (hidden 32, intermediate 64, k/v width 16).
TINY_OPTIONS = {"road": {"group_size": 8}, "oft": {"oft_block_size": 16}, "miss": {"r": 8}, "vera": {"r": 16}}

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


def test_registry_has_every_peft_family():
    assert set(ADAPTER_FAMILIES) == {"lora", "dora", "pissa", "delora", "oft", "boft", "ia3", "vera", "hra", "road", "miss", "loha", "lokr"}


def test_family_that_rejects_its_modules_is_named():
    with pytest.raises(AdapterFamilyError, match="road"):
        make_peft_config(TrainConfig(family="road", options={"variant": "road_9"}), 4)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(ADAPTER_FAMILIES))
def test_merged_delta_reproduces_peft_logits(tiny, family, tmp_path):
    """base + Δ gives the PEFT model's logits (max abs logit difference < 1e-4) for every family,
    including PiSSA, which rewrites the base at init; dW of the family round-trips through save/load."""
    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lr = 25 * ADAPTER_FAMILIES[family].learning_rate  # the tiny model needs a few big steps
    cfg = TrainConfig(family=family, rank=4, alpha=8, learning_rate=lr, batch_size=4, epochs=2, layer_fraction=(0.25, 1.0),
                      options=TINY_OPTIONS.get(family, {}))
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
    assert log["norm_delta_at_init"] < 1e-3

    negative, _, _ = train_adapter(model, tokenizer, ROWS, "negative", cfg)
    dw = compute_dw(delta, negative, {"family": family})
    save_dw(dw, tmp_path / "dW.safetensors")
    loaded = load_dw(tmp_path, model)
    assert loaded.tensors.keys() == dw.tensors.keys() and all(torch.equal(loaded.tensors[k], dw.tensors[k]) for k in dw.tensors)


def test_same_seed_same_delta(tiny):
    model, tokenizer = tiny
    cfg = TrainConfig(rank=4, alpha=8, learning_rate=5e-3, batch_size=4)
    first, _, _ = train_adapter(model, tokenizer, ROWS, "negative", cfg)
    second, _, _ = train_adapter(model, tokenizer, ROWS, "negative", cfg)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
