"""Tiny random-weight models of the architectures researchers bring, each with its family's real tokenizer and chat
template (``../shared/tokenizers``; tests may read ``../shared``, the package never does).

* ``qwen3``: Qwen3 (q/k norms, GQA), a reasoning template (thinking switch, ``</think>`` as an added token);
* ``llama3_1``: Llama-3 (GQA), BOS written in the template text, ``<|eot_id|>`` ends a turn;
* ``gemma3``: Gemma-3 text model (sliding-window layers with a 16-token window, so every scored prompt passes it; tied
  embeddings; q/k norms; logit soft-capping), a template without a system role;
* ``deepseek_v3``: DeepSeek-V3 mixture of experts (multi-head latent attention, routed experts as fused 3-D
  parameters, a shared expert, a first dense layer), a template that ends a turn with EOS only.
"""

from __future__ import annotations

import torch
from conftest import SHARED, require_shared

FAMILIES = ("qwen3", "llama3_1", "gemma3", "deepseek_v3")
_TOKENIZERS: dict = {}


def family_tokenizer(name: str):
    """The real tokenizer of a family, loaded once per process and shared: a test that changes a setting on it
    (thinking, padding) puts it back."""
    from transformers import AutoTokenizer

    if name not in _TOKENIZERS:
        _TOKENIZERS[name] = AutoTokenizer.from_pretrained(str(require_shared(SHARED / "tokenizers" / name / "tokenizer.json").parent))
    return _TOKENIZERS[name]


def family_model(name: str, tokenizer, seed: int = 0):
    """A tiny random model of the family (hidden 32, 3–4 layers), ``vocab_size = len(tokenizer)``, in eval mode."""
    import transformers as tf

    common = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
              "max_position_embeddings": 4096, "eos_token_id": tokenizer.eos_token_id, "bos_token_id": tokenizer.bos_token_id,
              "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id}
    if name == "qwen3":
        config, cls = tf.Qwen3Config(**common, num_hidden_layers=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True), tf.Qwen3ForCausalLM
    elif name == "llama3_1":
        config, cls = tf.LlamaConfig(**common, num_hidden_layers=4, num_key_value_heads=2, tie_word_embeddings=False), tf.LlamaForCausalLM
    elif name == "gemma3":
        config = tf.Gemma3TextConfig(**common, num_hidden_layers=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8,
                                     sliding_window=16, layer_types=["sliding_attention"] * 3 + ["full_attention"],
                                     final_logit_softcapping=30.0, tie_word_embeddings=True)
        cls = tf.Gemma3ForCausalLM
    elif name == "deepseek_v3":
        config = tf.DeepseekV3Config(**common, num_hidden_layers=3, num_key_value_heads=4, moe_intermediate_size=16, n_routed_experts=4,
                                     num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=16, kv_lora_rank=16,
                                     qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, n_group=1, topk_group=1, tie_word_embeddings=False)
        cls = tf.DeepseekV3ForCausalLM
    else:
        raise ValueError(f"unknown family {name!r}; choose one of {FAMILIES}")
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.config._name_or_path = f"tiny-random-{name}"
    return model
