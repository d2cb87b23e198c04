"""Which base-model subspace predicts where dW lives: planted structure, a random dW, size balance, bad input."""

import pytest
import torch
from conftest import build_model

from weight_steering.hypotheses.candidates import CANDIDATES, Context, HypothesisError, score_candidates, split_contrast

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


def _result(family, seed, r_w, k=4):
    """A minimal `wsteer hypotheses` result: write-side candidates with the given R_w, and a ceiling."""
    summary = [{"candidate": f"c{i}", "side": "write", "r_w": float(v), "pct_ceiling": 10.0, "r_act": 1.0} for i, v in enumerate(r_w)]
    summary.append({"candidate": "dw_write_top", "side": "ceiling", "r_w": 40.0, "pct_ceiling": 100.0})
    return {"dw": f"out/x/dw-{family}-seed{seed}-abc", "k": k, "summary": summary, "family": family, "dw_seed": seed}


def test_hypotheses_across_dws_rank_with_seed_intervals_and_detect_planted_agreement():
    from weight_steering.hypotheses.seeds import summarize_hypotheses

    order = [5.0, 4.0, 3.0, 2.0, 1.5, 1.2, 1.0, 0.9]
    generator = torch.Generator().manual_seed(0)
    noise = lambda: (torch.randn(len(order), generator=generator) * 0.05).tolist()  # noqa: E731
    agreeing = [_result(f, s, [v + e for v, e in zip(order, noise())]) for f in ("lora", "pissa") for s in (0, 1, 2)]
    summary = summarize_hypotheses(agreeing, n_permutations=500)
    assert [e["candidate"] for e in summary["ranking"][:3]] == ["c0", "c1", "c2"]
    lora = summary["ranking"][0]["families"]["lora"]
    assert lora["seeds"] == [0, 1, 2] and lora["r_w_interval"]["ci_low"] < 5.0 < lora["r_w_interval"]["ci_high"]
    for key in ("within_family", "across_families"):
        assert summary["agreement"][key]["mean_rho"] > 0.9 and summary["agreement"][key]["p_value"] < 0.01
    assert summary["agreement"]["within_family"]["n_pairs"] == 6 and summary["agreement"]["across_families"]["n_pairs"] == 9

    shuffled = [_result(f, s, torch.randperm(len(order), generator=generator).float().tolist()) for f in ("lora", "pissa") for s in (0, 1, 2)]
    null = summarize_hypotheses(shuffled, n_permutations=500)["agreement"]["across_families"]
    assert abs(null["mean_rho"]) < 0.5 and null["p_value"] > 0.01

    # Seeds that disagree widen the family's interval.
    spread = [_result("lora", s, [v * (1 + s) for v in order]) for s in (0, 1, 2)]
    tight = [_result("lora", s, order) for s in (0, 1, 2)]
    width = lambda rows: (lambda i: i["ci_high"] - i["ci_low"])(summarize_hypotheses(rows, n_permutations=10)["ranking"][0]["families"]["lora"]["r_w_interval"])  # noqa: E731
    assert width(spread) > 10 and width(tight) == pytest.approx(0.0, abs=1e-9)


def test_bad_hypotheses_results_are_a_clear_error(tmp_path):
    import json

    from weight_steering.hypotheses.seeds import load_hypotheses, summarize_hypotheses

    with pytest.raises(HypothesisError, match="no hypotheses.json"):
        load_hypotheses([tmp_path / "missing"])
    (tmp_path / "bad.json").write_text('{"k": ')
    with pytest.raises(HypothesisError, match="bad.json is not valid JSON"):
        load_hypotheses([tmp_path / "bad.json"])
    (tmp_path / "anonymous.json").write_text(json.dumps({"k": 4, "summary": []}))
    with pytest.raises(HypothesisError, match="does not name a family and seed"):
        load_hypotheses([tmp_path / "anonymous.json"])
    for name, seed, k in (("a", 0, 4), ("b", 0, 4), ("c", 1, 8)):
        (tmp_path / f"{name}.json").write_text(json.dumps({**_result("lora", seed, [1, 2, 3], k), "family": None}))
    with pytest.raises(HypothesisError, match="both for lora seed 0"):
        load_hypotheses([tmp_path / "a.json", tmp_path / "b.json"])
    with pytest.raises(HypothesisError, match="different k"):
        load_hypotheses([tmp_path / "a.json", tmp_path / "c.json"])
    with pytest.raises(HypothesisError, match="no hypotheses results"):
        summarize_hypotheses([])
    with pytest.raises(HypothesisError, match="no write-side candidate is scored on every dW"):
        summarize_hypotheses([_result("lora", 0, [1, 2]), {**_result("lora", 1, []), "summary": []}])
