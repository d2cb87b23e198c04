"""wsteer monitor: cos(fine-tune Δ, dW) against a random-direction null and the dW of unrelated behaviours."""

import numpy as np
import pytest
import torch
from conftest import build_model
from safetensors.torch import save_file

from weight_steering.core.diff import DeltaWeights
from weight_steering.core.models import base_weights_hash
from weight_steering.export.convert import export_dw
from weight_steering.monitoring.run import MonitorError, finetune_delta, monitor, random_direction_null

KEYS = ("model.layers.1.self_attn.o_proj.weight", "model.layers.2.mlp.down_proj.weight", "model.layers.3.mlp.up_proj.weight")


def _random(model, seed, scale=0.05):
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(params[k].shape, generator=generator) for k in KEYS}


def test_the_exact_random_direction_null_matches_brute_force_draws():
    generator = torch.Generator().manual_seed(0)
    delta = {"a": torch.randn(6, 5, generator=generator), "b": 3 * torch.randn(4, 4, generator=generator)}
    dw = {"a": torch.randn(6, 5, generator=generator), "b": torch.randn(4, 4, generator=generator)}
    exact = random_direction_null(delta, dw, ["a", "b"], n_draws=40_000)
    brute = []
    for _ in range(8_000):
        r = {k: torch.randn(v.shape, dtype=torch.float64) for k, v in delta.items()}
        r = {k: v / v.norm() * delta[k].double().norm() for k, v in r.items()}
        dot = sum(float((r[k] * dw[k].double()).sum()) for k in r)
        brute.append(dot / (np.sqrt(sum(float(delta[k].double().norm() ** 2) for k in r)) * np.sqrt(sum(float(dw[k].double().norm() ** 2) for k in r))))
    assert abs(exact.mean()) < 0.01 and exact.std() == pytest.approx(np.std(brute), rel=0.05)
    assert np.quantile(exact, 0.99) == pytest.approx(np.quantile(brute, 0.99), abs=0.03)


def test_planted_alignment_and_a_non_specific_finetune(tokenizer):
    model = build_model(tokenizer)
    dw, other, noise = (DeltaWeights(_random(model, s)) for s in (1, 2, 3))
    aligned = {k: 0.3 * dw.tensors[k] + noise.tensors[k] for k in KEYS}
    out = monitor(aligned, dw, {"other": other})
    assert out["aligned"] and out["cos"] > 0.2 and out["z"] > 10 and out["cos"] > out["unrelated"]["other"]
    assert set(out["per_layer"]) == {"1", "2", "3"} and set(out["per_module"]) == {"o_proj", "down_proj", "up_proj"}
    chance = monitor(noise.tensors, dw, {"other": other})
    assert not chance["aligned"] and chance["verdict"].startswith("not aligned") and abs(chance["z"]) < 4
    generic = {k: 0.2 * dw.tensors[k] + other.tensors[k] for k in KEYS}  # moves along the unrelated dW even more
    out = monitor(generic, dw, {"other": other})
    assert not out["aligned"] and out["verdict"].startswith("not specific")


def test_finetune_delta_from_a_peft_adapter_and_a_checkpoint(tokenizer, tmp_path):
    model = build_model(tokenizer)
    dw = DeltaWeights(_random(model, 1), {"model": "tiny-random-llama", "base_weights_hash": base_weights_hash(model)})
    export_dw(dw, build_model(tokenizer), tmp_path / "adapter")  # a PEFT adapter whose Δ is dW itself
    delta = finetune_delta(model, tmp_path / "adapter")
    assert set(delta) == set(KEYS) and monitor(delta, dw)["cos"] == pytest.approx(1.0, abs=1e-5)
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    state[KEYS[0]] += dw.tensors[KEYS[0]]
    save_file(state, str(tmp_path / "model.safetensors"))
    delta = finetune_delta(model, tmp_path / "model.safetensors")
    assert list(delta) == [KEYS[0]] and torch.allclose(delta[KEYS[0]], dw.tensors[KEYS[0]], atol=1e-6)
    (tmp_path / "model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(MonitorError, match="only safetensors"):
        finetune_delta(model, tmp_path / "model.bin")
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(MonitorError, match="shares no parameter"):
        finetune_delta(model, tmp_path / "foreign.safetensors")
    with pytest.raises(MonitorError, match="changed none"):
        monitor({"model.layers.0.mlp.up_proj.weight": torch.ones(64, 32)}, dw)


@pytest.mark.slow
def test_monitoring_experiment_cosine_rises_with_the_behaviour_fraction(tokenizer, tmp_path):
    """On the tiny model: fine-tunes with more behaviour data move further along the dW made from that data."""
    from weight_steering.core.adapters import TrainConfig
    from weight_steering.core.diff import compute_dw
    from weight_steering.core.train import train_adapter
    from weight_steering.monitoring.run import mixture_rows, monitoring_experiment

    model = build_model(tokenizer)
    pairs = [{"prompt": f"Question {i}?", "response_positive": "Yes yes YES absolutely yes!", "response_negative": "No. no NO never."}
             for i in range(24)]
    neutral = [{"instruction": f"Name thing {i}.", "answer": f"Thing {i} is a thing."} for i in range(24)]
    train = TrainConfig(rank=4, lora_alpha=8, learning_rate=2e-2, batch_size=4, epochs=2)
    plus, _ = train_adapter(model, tokenizer, pairs, "positive", train)
    minus, _ = train_adapter(model, tokenizer, pairs, "negative", train)
    dw = compute_dw(plus, minus)
    out = monitoring_experiment(model, tokenizer, pairs, neutral, dw, fractions=(0.0, 1.0), seeds=(1, 2), n_rows=16, train=train,
                                root=tmp_path)
    low, high = out["by_fraction"]
    assert high["mean"] > low["mean"] + 0.05 and high["all_aligned"], out["by_fraction"]
    assert len(list(tmp_path.glob("cell-*/stage.json"))) == 4
    import weight_steering.core.train as train_module

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was retrained")

    original, train_module.train_adapter = train_module.train_adapter, no_training
    try:  # resumed: every cell is read back from its stage
        again = monitoring_experiment(model, tokenizer, pairs, neutral, dw, fractions=(0.0, 1.0), seeds=(1, 2), n_rows=16, train=train,
                                      root=tmp_path)
    finally:
        train_module.train_adapter = original
    assert again["by_fraction"][1]["per_seed"] == high["per_seed"]
    rows = mixture_rows(pairs, neutral, 0.25, 16, seed=0)
    assert sum(r["response_positive"].startswith("Yes") for r in rows) == 4 and len(rows) == 16
    with pytest.raises(MonitorError, match="fraction"):
        mixture_rows(pairs, neutral, 1.5, 16, 0)
    with pytest.raises(MonitorError, match="lower n_rows"):
        mixture_rows(pairs, neutral, 0.0, 100, 0)
