"""dW as a LoRA adapter: the exported adapter, loaded by PEFT at scale α, gives the logits of α·dW."""

import json

import pytest
import torch
from conftest import build_model

from weight_steering.core.diff import DeltaWeights, DeltaWeightsError
from weight_steering.core.models import base_weights_hash
from weight_steering.core.steer import steer
from weight_steering.export.convert import ExportError, export_dw, load_exported, lora_factors

TARGETS = ("model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.o_proj.weight", "model.layers.2.mlp.down_proj.weight",
           "model.layers.2.mlp.up_proj.weight")


def _lora_dw(model, r: int = 2) -> DeltaWeights:
    """dW = B⁺A⁺ − B⁻A⁻ on four tensors: what two rank-r LoRA adapters give (rank ≤ 2r)."""
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for key in TARGETS:
        out, inp = params[key].shape
        plus = torch.randn(out, r, generator=generator) @ torch.randn(r, inp, generator=generator)
        minus = torch.randn(out, r, generator=generator) @ torch.randn(r, inp, generator=generator)
        tensors[key] = 0.05 * (plus - minus)
    return DeltaWeights(tensors, {"model": "tiny-random-llama", "base_weights_hash": base_weights_hash(model)})


def test_exact_export_matches_steered_logits_in_peft(tokenizer, tmp_path):
    from peft.helpers import rescale_adapter_scale

    reference, wrapped = build_model(tokenizer), build_model(tokenizer)  # identical weights; PEFT wraps the second in place
    dw = _lora_dw(reference)
    path = export_dw(dw, wrapped, tmp_path / "adapter")
    info = json.loads((path / "export.json").read_text())
    assert info["max_rank"] == 4 and info["min_energy"] == pytest.approx(1.0) and info["max_abs_error"] < 1e-6
    peft_model = load_exported(wrapped, path).eval()
    ids = tokenizer(["Yes or no? I think so.", "My answer: **"], return_tensors="pt", padding=True)
    for alpha in (-1.0, 0.5, 2.0):
        with torch.no_grad(), rescale_adapter_scale(peft_model, alpha):
            exported = peft_model(**ids).logits
        with torch.no_grad(), steer(reference, dw, alpha):
            steered = reference(**ids).logits
        with torch.no_grad():
            base = reference(**ids).logits
        assert (exported - steered).abs().max() < 1e-4, alpha
        assert (steered - base).abs().max() > 1e-2  # the steer moved the logits: the match is not trivial


def test_truncated_export_records_the_energy_kept(tokenizer):
    model = build_model(tokenizer)
    dw = _lora_dw(model)
    exact, truncated = lora_factors(dw), lora_factors(dw, rank=1)
    for key in TARGETS:
        assert exact[key]["rank"] == 4 and truncated[key]["rank"] == 1
        assert 0 < truncated[key]["energy"] < 1 and truncated[key]["max_abs_error"] > exact[key]["max_abs_error"]
    by_energy = lora_factors(dw, energy=0.9)
    for key in TARGETS:
        assert by_energy[key]["energy"] >= 0.9 - 1e-9 and by_energy[key]["rank"] <= 4


def test_rope_permute_interleaves_the_two_halves_of_each_head():
    from weight_steering.export.convert import rope_permute

    rows = torch.arange(8.0)[:, None]  # 2 heads of 4 rows: halves (0, 1 | 2, 3) and (4, 5 | 6, 7)
    assert rope_permute(rows, 2).squeeze(1).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]  # by hand, llama.cpp's LlamaModel.permute
    assert torch.equal(rope_permute(rope_permute(rows, 2), 2, inverse=True), rows)


def test_gguf_export_writes_a_llama_cpp_lora_whose_product_is_dw(tokenizer, tmp_path):
    import gguf

    from weight_steering.export.convert import exported_delta, rope_permute

    model = build_model(tokenizer)
    dw = _lora_dw(model)
    path = export_dw(dw, model, tmp_path / "adapter", fmt="gguf")
    reader = gguf.GGUFReader(str(path / "adapter.gguf"))
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora" and fields["general.architecture"] == "llama"
    assert fields["adapter.lora.alpha"] == 4.0  # = the padded rank, so llama.cpp's scale alpha / rank is 1
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    assert set(tensors) == {f"{n}.weight.lora_{ab}" for n in ("blk.1.attn_q", "blk.1.attn_output", "blk.2.ffn_down", "blk.2.ffn_up")
                            for ab in "ab"}
    assert tensors["blk.1.attn_q.weight.lora_a"].shape == (4, 32) and tensors["blk.1.attn_q.weight.lora_b"].shape == (32, 4)
    q_key = "model.layers.1.self_attn.q_proj.weight"
    stored_q = tensors["blk.1.attn_q.weight.lora_b"] @ tensors["blk.1.attn_q.weight.lora_a"]
    assert (stored_q - rope_permute(dw.tensors[q_key], 4)).abs().max() < 1e-5  # rows in llama.cpp's q layout (4 heads)
    assert (stored_q - dw.tensors[q_key]).abs().max() > 1e-3  # … which is not the HF layout
    back = exported_delta(model, path, list(dw.tensors))
    for key in TARGETS:
        assert (back[key] - dw.tensors[key]).abs().max() < 1e-5, key


def test_gguf_export_refuses_an_architecture_without_a_known_layout(tokenizer, tmp_path):
    model = build_model(tokenizer)
    dw = _lora_dw(model)
    model.config.model_type = "mamba"
    with pytest.raises(ExportError, match="not 'mamba'.*--format peft"):
        export_dw(dw, model, tmp_path / "a", fmt="gguf")
    assert not (tmp_path / "a").exists()


def test_bad_export_input_is_a_clear_error(tokenizer, tmp_path):
    model = build_model(tokenizer)
    dw = _lora_dw(model)
    with pytest.raises(ExportError, match="unknown export format 'onnx'"):
        export_dw(dw, model, tmp_path / "a", fmt="onnx")
    with pytest.raises(ExportError, match="exceeds the rank"):
        export_dw(dw, model, tmp_path / "b", rank=10_000)
    with pytest.raises(ExportError, match="not both"):
        lora_factors(dw, rank=2, energy=0.5)
    with pytest.raises(ExportError, match="energy"):
        lora_factors(dw, energy=1.5)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept.txt").write_text("user file")
    with pytest.raises(ExportError, match="--force"):
        export_dw(dw, model, tmp_path / "full")
    assert (tmp_path / "full" / "kept.txt").read_text() == "user file"  # nothing lost
    other = build_model(tokenizer, seed=1)
    with pytest.raises(DeltaWeightsError, match="does not fit"):
        export_dw(dw, other, tmp_path / "c")
    norm = DeltaWeights({"model.layers.1.input_layernorm.weight": torch.ones(32)}, {"base_weights_hash": dw.metadata["base_weights_hash"]})
    with pytest.raises(ExportError, match="Linear weights only"):
        export_dw(norm, model, tmp_path / "d")


def test_exact_export_keeps_2r_directions_above_the_merge_rounding(tokenizer):
    """A LoRA dW computed as W_merged − W in fp32 carries full-rank rounding noise; the exact export cuts it at 2r."""
    from weight_steering.export.convert import rounding_floor

    model = build_model(tokenizer)
    params = dict(model.named_parameters())
    clean = _lora_dw(model).tensors
    noisy = {}
    for key, delta in clean.items():
        weight = params[key].detach() * 40  # weights of the embedded model's scale make the rounding visible
        plus, minus = weight + 0.5 * delta, weight - 0.5 * delta  # θ⁺, θ⁻ rounded to fp32
        noisy[key] = plus - minus
    assert max(int(torch.linalg.matrix_rank(t.double(), rtol=1e-9)) for t in noisy.values()) > 4  # the noise is full rank
    factors = lora_factors(DeltaWeights(noisy), floors={k: rounding_floor(params[k].detach() * 40) for k in noisy})
    assert all(f["rank"] == 4 for f in factors.values()), {k: f["rank"] for k, f in factors.items()}
    assert all(f["energy"] > 1 - 1e-9 for f in factors.values())


def test_serving_a_gguf_adapter_without_llama_cpp_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    from weight_steering.export.convert import llama_cpp_logratios

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import fails as if not installed
    with pytest.raises(ExportError, match="pip install llama-cpp-python"):
        llama_cpp_logratios(tmp_path / "model.gguf", tmp_path / "adapter.gguf", 1.0, [[1, 2]], [[1], [2]])
