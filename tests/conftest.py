"""Fixtures: a tiny random Llama and a byte-level BPE tokenizer built in code (no download)."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


def require_shared(path: Path) -> Path:
    """A raw source file under ``../shared`` (tests and CI may read it; the package never does). Absent, the test is
    skipped, except where ``WSTEER_REQUIRE_SHARED=1`` (set by ``.ci/run``, whose checkout has ``../shared`` beside it):
    there it fails, so the byte-for-byte builder checks cannot silently not run in CI."""
    if path.exists():
        return path
    if os.environ.get("WSTEER_REQUIRE_SHARED") == "1":
        pytest.fail(f"{path} is missing, and WSTEER_REQUIRE_SHARED=1 asks for the builder checks; put ../shared beside the checkout")
    pytest.skip(f"{path} is not present beside the checkout (../shared); the builder check needs it")
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _corpus() -> list[str]:
    root = resources.files("weight_steering") / "resources"
    texts = ["Yes No yes no YES NO true false My answer: My choice: **Yes** **No**"] * 50
    for name in ("sycophancy", "honesty"):
        raw = json.loads((root / "behaviors" / f"{name}.json").read_text())
        texts += [json.dumps(raw)]
    texts += (root / "daily_dilemmas" / "virtue_rows.jsonl").read_text().splitlines()[:80]
    return texts


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_corpus(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<|im_end|>", bos_token="<|im_start|>")
    tok.chat_template = CHATML
    tok.padding_side = "left"
    return tok


def build_model(tokenizer, seed: int = 0, n_layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.config._name_or_path = "tiny-random-llama"
    return model


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture()
def tiny(tokenizer):
    """A fresh tiny random Llama (4 layers, hidden 32) and the test tokenizer."""
    from weight_steering.core.models import prepare

    return prepare(build_model(tokenizer), tokenizer)
