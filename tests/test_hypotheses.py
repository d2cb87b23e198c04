"""Which base-model subspace predicts where dW lives: planted structure, a random dW, size balance, bad input."""

import pytest
import torch

from conftest import build_model
from weight_steering.hypotheses import CANDIDATES, Context, HypothesisError, score_candidates, split_contrast

LAYERS = (1, 2)


def _context(model, dw, contrast=None):
    weights = {k: v.detach().float() for k, v in model.named_parameters()}
    fit, held = split_contrast(contrast or {})
    return Context(weights, model.config.hidden_size, model.config.num_attention_heads, fit, held, dw)


def _planted_dw(model, k=4, seed=0):
    """dW whose write tensors lie inside the span of each layer's top-k left singular vectors of W_o."""
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    dw = {}
    for layer in LAYERS:
        w_o = params[f"model.layers.{layer}.self_attn.o_proj.weight"].detach().double()
        u = torch.linalg.svd(w_o, full_matrices=False)[0][:, :k]  # [d_model, k]
        for key, n in ((f"model.layers.{layer}.self_attn.o_proj.weight", w_o.shape[1]),
                       (f"model.layers.{layer}.mlp.down_proj.weight", model.config.intermediate_size)):
            dw[key] = (u @ torch.randn(k, n, generator=generator, dtype=torch.float64)).float()
    return dw


def _random_dw(model, seed=1):
    generator = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {key: torch.randn(params[key].shape, generator=generator) for layer in LAYERS
            for key in (f"model.layers.{layer}.self_attn.o_proj.weight", f"model.layers.{layer}.mlp.down_proj.weight",
                        f"model.layers.{layer}.self_attn.q_proj.weight")}


def test_a_dw_planted_in_a_candidate_ranks_it_first_at_the_ceiling(tokenizer):
    model = build_model(tokenizer)
    result = score_candidates(_context(model, _planted_dw(model)), k=4, n_null=100)
    write = [e for e in result["summary"] if e["side"] == "write"]
    assert write[0]["candidate"] == "o_proj_out", [e["candidate"] for e in write]
    assert write[0]["pct_ceiling"] == pytest.approx(100, abs=1e-6) and write[0]["r_w"] > 0.9 * 32 / 4  # share 1 over a null of ≈ k/d
    ceiling = next(e for e in result["summary"] if e["side"] == "ceiling")
    assert ceiling["pct_ceiling"] == pytest.approx(100, abs=1e-6)
    assert all(e["pct_ceiling"] <= 100 + 1e-6 for e in result["summary"] if "pct_ceiling" in e)  # the ceiling is one


def test_a_random_dw_is_at_chance_for_every_candidate(tokenizer):
    model = build_model(tokenizer)
    generator = torch.Generator().manual_seed(3)
    contrast = {layer: torch.randn(16, 32, generator=generator) for layer in LAYERS}
    result = score_candidates(_context(model, _random_dw(model), contrast), k=4, n_null=200)
    for row in result["rows"]:
        if row["side"] == "ceiling":
            continue
        for key, value in row.items():
            if key.startswith("z_"):
                assert abs(value) < 4, (row["candidate"], row["layer"], key, value)
    means = [e["r_w"] for e in result["summary"] if "r_w" in e and e["side"] != "ceiling"]
    assert 0.5 < sum(means) / len(means) < 1.5  # R ≈ 1 on average


def test_the_combined_write_score_is_unaffected_by_rescaling_one_tensor(tokenizer):
    model = build_model(tokenizer)
    dw = _random_dw(model)
    scaled = {k: (100 * v if "o_proj" in k else v) for k, v in dw.items()}
    one = {r["candidate"] + str(r["layer"]): r["r_w"] for r in score_candidates(_context(model, dw), k=4, n_null=50)["rows"] if "r_w" in r}
    two = {r["candidate"] + str(r["layer"]): r["r_w"] for r in score_candidates(_context(model, scaled), k=4, n_null=50)["rows"] if "r_w" in r}
    assert one.keys() == two.keys() and all(one[n] == pytest.approx(two[n], rel=1e-6) for n in one)


def test_bad_hypothesis_input_is_a_clear_error(tokenizer):
    model = build_model(tokenizer)
    ctx = _context(model, _planted_dw(model))
    with pytest.raises(HypothesisError, match=r"--k must lie in \[1, d_model = 32\]"):
        score_candidates(ctx, k=33)
    with pytest.raises(HypothesisError, match="unknown candidate.*telepathy"):
        score_candidates(ctx, names=["o_proj_out", "telepathy"])
    read_only = _context(model, {"model.layers.1.self_attn.q_proj.weight": torch.ones(32, 32)})
    result = score_candidates(read_only, k=4, n_null=20, names=["o_proj_out", "qkv_in"])
    assert "write-side tensor" in result["unavailable"]["o_proj_out"]
    assert [e["candidate"] for e in result["summary"]] == ["qkv_in"] and "contrast_pca" in CANDIDATES
    with pytest.raises(HypothesisError, match="no decoder-layer tensor"):
        score_candidates(_context(model, {"lm_head.weight": torch.ones(3, 32)}), k=4)
