import pytest
import torch

from weight_steering.core.adapters import ADAPTER_FAMILIES, AdapterFamilyError, TrainConfig, layer_slice, make_peft_config
from weight_steering.core.diff import compute_dw, load_dw, save_dw
from weight_steering.core.train import tokenize_example, train_adapter

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
    """base + Δ gives the logits of the saved PEFT adapter (max abs logit difference < 1e-4) for every family,
    including PiSSA, which rewrites the base at init; the model comes back bit-exactly, with its requires_grad flags and
    eval mode and no PEFT module left in it; dW of the family round-trips through save/load."""
    import copy

    from peft import PeftModel

    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = [(name, type(m)) for name, m in model.named_modules()]
    lr = 25 * ADAPTER_FAMILIES[family].learning_rate  # the tiny model needs a few big steps
    cfg = TrainConfig(family=family, rank=4, lora_alpha=8, learning_rate=lr, batch_size=4, epochs=2, layer_fraction=(0.25, 1.0),
                      options=TINY_OPTIONS.get(family, {}))
    delta, log = train_adapter(model, tokenizer, ROWS, "positive", cfg, adapter_dir=tmp_path / "adapter")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "training must give the base model back bit-exactly"
    assert [(name, type(m)) for name, m in model.named_modules()] == modules and not hasattr(model, "peft_config")
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    assert delta and all(k.startswith("model.layers.") for k in delta)
    assert {int(k.split(".")[2]) for k in delta} == {1, 2, 3}
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(tmp_path / "adapter"))  # a copy in the test only
    if family == "pissa":  # the saved PiSSA adapter expects the residual base that PEFT wrote at initialisation
        pytest.skip("PiSSA's saved adapter needs its residual base; its Δ is checked against the real-model dW's recorded fingerprint")
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

    negative, _ = train_adapter(model, tokenizer, ROWS, "negative", cfg)
    dw = compute_dw(delta, negative, {"family": family})
    save_dw(dw, tmp_path / "dW.safetensors")
    loaded = load_dw(tmp_path, model)
    assert loaded.tensors.keys() == dw.tensors.keys() and all(torch.equal(loaded.tensors[k], dw.tensors[k]) for k in dw.tensors)


def test_same_seed_same_delta(tiny):
    model, tokenizer = tiny
    cfg = TrainConfig(rank=4, lora_alpha=8, learning_rate=5e-3, batch_size=4)
    first, _ = train_adapter(model, tokenizer, ROWS, "negative", cfg)
    second, _ = train_adapter(model, tokenizer, ROWS, "negative", cfg)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_model_comes_back_bit_exactly_when_training_fails(tiny, monkeypatch):
    """An exception in the middle of training (here: the optimiser step) leaves no adapter in the model and every
    weight, requires_grad flag and the eval mode as they were; a family PEFT rejects is named, the model untouched."""
    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)  # a flag that must survive too
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    for family in ("lora", "pissa"):
        with pytest.raises(RuntimeError, match="disk on fire"):
            train_adapter(model, tokenizer, ROWS, "positive", TrainConfig(family=family, rank=4, lora_alpha=8, batch_size=4))
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), family
        assert not model.training and not model.model.layers[0].mlp.up_proj.weight.requires_grad
        assert all(p.requires_grad for n, p in model.named_parameters() if "layers.0.mlp.up_proj" not in n)
        assert not any("lora" in name for name, _ in model.named_modules())
    with pytest.raises(AdapterFamilyError, match=r"adapter family 'lora' on tiny-random-llama \(target modules \['telepathy_proj'\]"):  # no such module
        train_adapter(model, tokenizer, ROWS, "positive", TrainConfig(target_modules=("telepathy_proj",)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("family", list(ADAPTER_FAMILIES))
def test_module_by_module_delta_equals_the_whole_model_merge_bit_exactly(tiny, family):
    """Δ from one fp32 module copy at a time (:func:`adapter_delta`) equals, to the bit, Δ from merging an fp32 copy of
    the whole PEFT model (the arithmetic every archived dW was made with), for adapters with random non-zero weights."""
    import copy

    from peft import get_peft_model

    from weight_steering.core.adapters import make_peft_config
    from weight_steering.core.train import _adapted_originals, adapter_delta, attached_adapter

    model, tokenizer = tiny
    cfg = TrainConfig(family=family, rank=4, lora_alpha=8, layer_fraction=(0.25, 1.0), options=TINY_OPTIONS.get(family, {}))
    peft_config = make_peft_config(cfg, model.config.num_hidden_layers)
    originals = _adapted_originals(model, peft_config) if ADAPTER_FAMILIES[family].rewrites_base else {}
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    torch.manual_seed(0)
    with attached_adapter(model, lambda m: get_peft_model(m, peft_config), originals) as peft_model:
        with torch.no_grad():
            for p in peft_model.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))  # as if trained: every adapter weight away from its initial value
        got = adapter_delta(peft_model, originals)
        merged = copy.deepcopy(peft_model).to(torch.float32).merge_and_unload()
        expected = {k: (p.detach().float() - base[k].float()) for k, p in merged.named_parameters()}
        expected = {k: v for k, v in expected.items() if torch.any(v != 0)}
    assert list(got) == list(expected) and got
    assert all(torch.equal(got[k], expected[k]) for k in got), family


def test_delta_written_a_module_at_a_time_has_the_bytes_of_the_dict(tiny, tmp_path):
    """delta_path streams Δ to a safetensors file holding one module at a time; the file equals save_file of the dict."""
    import hashlib

    from safetensors.torch import save_file

    model, tokenizer = tiny
    cfg = TrainConfig(rank=4, lora_alpha=8, learning_rate=5e-3, batch_size=4, layer_fraction=(0.25, 1.0))
    delta, _ = train_adapter(model, tokenizer, ROWS, "positive", cfg)
    written, _ = train_adapter(model, tokenizer, ROWS, "positive", cfg, delta_path=tmp_path / "delta.safetensors")
    save_file(delta, str(tmp_path / "dict.safetensors"))
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert written == tmp_path / "delta.safetensors" and digest(written) == digest(tmp_path / "dict.safetensors")


def test_target_modules_that_name_nothing_stop_the_job_before_any_work(tiny, tmp_path, caplog):
    from weight_steering.core.adapters import check_targets
    from weight_steering.main_job.config import preset_config
    from weight_steering.main_job.run import run_main_job

    model, tokenizer = tiny
    with pytest.raises(AdapterFamilyError, match=r"target modules \['wq', 'wk'\] match nothing in layers \[1, 2\] of tiny-random-llama; "
                                                 r"its projections there are \[.*'q_proj'.*\]\. Pass --target-modules"):
        run_main_job(preset_config("smoke", out=str(tmp_path), train={"target_modules": ("wq", "wk")}), model, tokenizer, command="test")
    assert not any(tmp_path.iterdir())  # nothing sampled, nothing written
    check_targets(model, TrainConfig(target_modules=("q_proj", "wq")))  # part of the request: said, not refused
    assert "target modules ['wq'] match nothing in tiny-random-llama" in caplog.text


def test_the_adapter_scale_enters_stage_keys_under_its_archived_name():
    """``lora_alpha`` is keyed as ``alpha`` (its name when the archived stages were made), from a config or from the
    sidecar dict of a dW of either age, so renaming the field recomputes no archived stage."""
    from dataclasses import asdict

    from weight_steering.core.adapters import train_key

    config = TrainConfig(lora_alpha=16)
    key = train_key(config)
    assert key["alpha"] == 16 and "lora_alpha" not in key
    old_sidecar = {("alpha" if k == "lora_alpha" else k): v for k, v in asdict(config).items()}
    assert train_key(asdict(config)) == train_key(old_sidecar) == key
    assert train_key(TrainConfig(lora_alpha=32)) != key
