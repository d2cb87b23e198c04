import pytest
import torch

from weight_steering.core.diff import DeltaWeights, DeltaWeightsError, compute_dw, load_dw, save_dw
from weight_steering.core.models import base_weights_hash
from weight_steering.core.steer import steer

KEY = "model.layers.1.self_attn.q_proj.weight"


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_restore_is_bit_exact_after_1000_cycles(tiny):
    model, _ = tiny
    before = _snapshot(model)
    dw = {k: torch.randn_like(p) for k, p in model.named_parameters() if "layers" in k and p.ndim == 2}
    for i in range(1000):
        with steer(model, dw, alpha=0.37 * (1 if i % 2 else -1) + 1e-3 * i):
            pass
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_restore_after_exception_and_weights_change_inside(tiny):
    model, _ = tiny
    before = _snapshot(model)
    dw = {KEY: torch.ones_like(model.get_parameter(KEY))}
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, dw, alpha=2.0):
            assert torch.allclose(model.get_parameter(KEY), before[KEY] + 2.0)
            raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_alpha(tiny, alpha):
    model, _ = tiny
    with pytest.raises(ValueError, match="finite"):
        with steer(model, {}, alpha):
            pass


def test_foreign_keys_are_refused(tiny):
    model, _ = tiny
    with pytest.raises(DeltaWeightsError, match="not parameters"):
        with steer(model, {"model.layers.99.mlp.up_proj.weight": torch.zeros(2, 2)}, 1.0):
            pass


def test_compute_dw_geometry():
    pos = {"a": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([[0.0, 2.0]])}
    neg = {"a": torch.tensor([[-1.0, 0.0]]), "b": torch.tensor([[0.0, -2.0]])}
    dw = compute_dw(pos, neg)
    assert torch.equal(dw.tensors["a"], torch.tensor([[2.0, 0.0]]))
    assert dw.metadata["cos_delta_positive_minus_delta_negative"] == pytest.approx(1.0)
    assert dw.norm() == pytest.approx((4 + 16) ** 0.5)
    with pytest.raises(DeltaWeightsError, match="no common tensor"):
        compute_dw({"a": pos["a"]}, {"b": neg["b"]})
    with pytest.raises(DeltaWeightsError, match="NaN or Inf"):
        compute_dw({"a": torch.tensor([float("nan")])}, {"a": torch.tensor([0.0])})


def test_save_load_roundtrip_and_model_checks(tiny, tmp_path, tokenizer):
    from conftest import build_model

    model, _ = tiny
    dw = DeltaWeights({KEY: torch.randn_like(model.get_parameter(KEY))}, {"model": "tiny", "base_weights_hash": base_weights_hash(model)})
    path = save_dw(dw, tmp_path / "dW.safetensors")
    loaded = load_dw(path, model)
    assert torch.equal(loaded.tensors[KEY], dw.tensors[KEY])
    other = build_model(tokenizer, seed=1)
    with pytest.raises(DeltaWeightsError, match=dw.metadata["base_weights_hash"]):
        load_dw(path, other)
    bad = DeltaWeights({KEY: torch.full_like(dw.tensors[KEY], float("inf"))}, dw.metadata)
    save_dw(bad, tmp_path / "bad.safetensors")
    with pytest.raises(DeltaWeightsError, match="NaN or Inf"):
        load_dw(tmp_path / "bad.safetensors")
    wrong = DeltaWeights({"model.layers.0.mlp.nope.weight": torch.zeros(1)}, {"base_weights_hash": None})
    save_dw(wrong, tmp_path / "wrong.safetensors")
    with pytest.raises(DeltaWeightsError, match="nope"):
        load_dw(tmp_path / "wrong.safetensors", model)
    with pytest.raises(FileNotFoundError):
        load_dw(tmp_path / "missing.safetensors")


def test_a_trained_dw_is_named_by_its_inputs_and_any_other_by_its_bytes():
    """Stage keys name a dW by what made it, so low-bit differences between CPU kernel paths do not re-key its stages."""
    from weight_steering.core.diff import dw_identity

    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    made_here = DeltaWeights(dict(tensors), {"source_key": "abc"})
    made_elsewhere = DeltaWeights({"w": tensors["w"] * (1 + 1e-6)}, {"source_key": "abc"})
    assert dw_identity(made_here) == dw_identity(made_elsewhere) == "inputs:abc"
    anonymous, nudged = DeltaWeights(dict(tensors)), DeltaWeights({"w": tensors["w"] * (1 + 1e-6)})
    assert dw_identity(anonymous).startswith("bytes:") and dw_identity(anonymous) != dw_identity(nudged)
