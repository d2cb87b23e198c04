import numpy as np
import pytest
import torch

from weight_steering.ablation.variants import AblationError, build_variants, check_reconstruction, parse_key, random_like, retained


def _dw(layers=(2, 3), projections=(("self_attn", "o_proj"), ("self_attn", "q_proj"), ("mlp", "down_proj"))):
    torch.manual_seed(0)
    tensors, base = {}, {}
    for layer in layers:
        for block, proj in projections:
            key = f"model.layers.{layer}.{block}.{proj}.weight"
            tensors[key] = torch.randn(12, 8) @ torch.diag(torch.linspace(2, 0.1, 8)) * 0.1
            base[key] = torch.randn(12, 8)
    return tensors, base


def test_parse_key():
    assert parse_key("model.layers.9.mlp.down_proj.weight") == (9, "mlp", "down_proj")
    assert parse_key("model.embed_tokens.weight") is None


def test_variants_reconstruct_and_controls_match_norms():
    tensors, base = _dw()
    variants = build_variants(tensors, base)
    assert variants["zero"]["energy_fraction"] == 0 and variants["full"]["energy_fraction"] == pytest.approx(1)
    attention, mlp = variants["attention"]["energy_fraction"], variants["mlp"]["energy_fraction"]
    assert attention + mlp == pytest.approx(1) and 0 < mlp < 1
    assert variants["layer_2_only"]["energy_fraction"] + variants["without_layer_2"]["energy_fraction"] == pytest.approx(1)
    for name in ("top_25pct_rank_S", "top_90pct_energy_S", "top_50pct_energy_S_base"):
        keep, drop = variants[name]["tensors"], variants[f"not_{name}"]["tensors"]
        assert check_reconstruction(keep, drop, tensors, name) < 1e-6
        control = variants[f"{name}_random"]["tensors"]
        for key in tensors:
            assert float(control[key].norm()) == pytest.approx(float(keep[key].norm()), rel=1e-5)
    # energy crops keep the smallest prefix reaching the target: at least the target, less than one more direction
    assert 0.9 <= variants["top_90pct_energy_S"]["energy_fraction"] < 1.0
    assert 0.5 <= variants["top_50pct_energy_S"]["energy_fraction"] < variants["top_90pct_energy_S"]["energy_fraction"]
    # a projection the dW does not touch is unavailable, not zero
    assert variants["v_proj_only"]["tensors"] is None and "v_proj_only_random" not in variants


def test_lazy_variants_match_the_eager_ones_and_check_reconstruction_on_the_way(monkeypatch):
    from weight_steering.ablation import variants as ablate

    tensors, base = _dw()
    eager = build_variants(tensors, base)
    lazy = list(ablate.iter_variants(tensors, base))
    assert [name for name, _ in lazy] == list(eager)
    for name, entry in lazy:
        assert entry["energy_fraction"] == eager[name]["energy_fraction"]
        if entry["tensors"] is not None:
            assert all(torch.equal(entry["tensors"][k], eager[name]["tensors"][k]) for k in tensors)
    assert not ablate._SVD_CACHE, "the SVD memo is cleared when the iterator ends"

    original = ablate._own_svd

    def broken_drop(crop, keep):
        build = original(crop, keep)
        return build if keep else (lambda t, b: {k: 2 * v for k, v in build(t, b).items()})

    monkeypatch.setattr(ablate, "_own_svd", broken_drop)
    names = []
    with pytest.raises(AblationError, match="reconstructs"):
        for name, _ in ablate.iter_variants(tensors, base, groups=("svd",)):
            names.append(name)
    assert names[-2:] == ["top_25pct_rank_S", "top_25pct_rank_S_random"], "the keep variant is scored before its drop fails"


def test_random_control_is_seeded_and_norm_matched():
    tensors, _ = _dw()
    a, b, c = random_like(tensors, 0), random_like(tensors, 0), random_like(tensors, 1)
    assert all(torch.equal(a[k], b[k]) for k in a) and any(not torch.equal(a[k], c[k]) for k in a)
    assert all(float(a[k].norm()) == pytest.approx(float(tensors[k].norm()), rel=1e-5) for k in a)


def test_bad_reconstruction_and_missing_base_are_named():
    tensors, base = _dw()
    with pytest.raises(AblationError, match="reconstructs"):
        check_reconstruction(tensors, tensors, tensors, "double")
    with pytest.raises(AblationError, match="base weights missing"):
        build_variants(tensors, {}, groups=("base_svd",))


def test_retained_ratio_and_undefined_full_effect():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(50), 2)
    base = rng.normal(0, 1, 100)
    full = base + 1.0 + rng.normal(0, 0.1, 100)
    half = base + 0.5 + rng.normal(0, 0.1, 100)
    out = retained(half, full, base, clusters)
    assert out["defined"] and out["retained"] == pytest.approx(0.5, abs=0.05) and out["ci_low"] < 0.5 < out["ci_high"]
    flat = base + rng.normal(0, 0.1, 100)
    undefined = retained(half, flat, base, clusters)
    assert not undefined["defined"] and np.isnan(undefined["retained"])


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_run_ablation_on_the_tiny_model(tiny, tmp_path):
    from weight_steering.ablation.run import run_ablation
    from weight_steering.core.diff import compute_dw, save_dw

    model, tokenizer = tiny
    params = dict(model.named_parameters())
    torch.manual_seed(0)
    keys = ["model.layers.2.mlp.down_proj.weight", "model.layers.3.self_attn.o_proj.weight", "model.layers.3.self_attn.q_proj.weight"]
    positive = {k: 0.3 * torch.randn_like(params[k]) for k in keys}
    save_dw(compute_dw(positive, {k: -v for k, v in positive.items()}, {"model": "tiny"}), tmp_path / "dw" / "dW.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pairs = [{"prompt": f"Question {i}?", "response_positive": f"Yes, honestly {i}.", "response_negative": f"No way {i}!"} for i in range(6)]
    result = run_ablation(tmp_path / "dw", groups=("module",), dilemma_limit=6, out=str(tmp_path), loaded=(model, tokenizer),
                          pair_rows=pairs, activation_k=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    sides = {r["projection"]: r for r in result["activation_alignment"]}
    assert sides["o_proj"]["side"] == "write" and sides["q_proj"]["side"] == "read" and sides["down_proj"]["available"]
    assert all(0 <= r["energy"] <= 1 and np.isfinite(r["z"]) for r in sides.values())
    assert "persona-contrast activation subspace" in (result["path"] / "ablation.md").read_text()
    by = {(r["variant"], r.get("metric")): r for r in result["rows"]}
    full, zero = by[("full", "dilemmas_honesty")], by[("zero", "dilemmas_honesty")]
    assert full["delta_variant"] == pytest.approx(full["delta_full"]) and full["delta_full"] != 0
    assert zero["delta_variant"] == pytest.approx(0.0, abs=1e-6), "a zero dW scores exactly as the base"
    assert by[("v_proj_only", None)]["available"] is False
    assert (result["path"] / "retained_vs_energy.png").exists() and "unavailable" in (result["path"] / "ablation.md").read_text()


def test_base_subspace_alignment_detects_a_planted_top_subspace():
    from weight_steering.ablation.alignment import base_subspace_alignment

    torch.manual_seed(0)
    base = {"model.layers.0.self_attn.o_proj.weight": torch.randn(40, 40)}
    u, s, vh = torch.linalg.svd(base["model.layers.0.self_attn.o_proj.weight"])
    planted = {"model.layers.0.self_attn.o_proj.weight": u[:, :4] @ torch.randn(4, 4) @ vh[:4]}
    random = {"model.layers.0.self_attn.o_proj.weight": torch.randn(40, 40)}
    top = base_subspace_alignment(planted, base)[0]
    null = base_subspace_alignment(random, base)[0]
    assert top["energy_top"] == pytest.approx(1.0) and top["ratio"] == pytest.approx(100.0) and top["z"] > 10
    assert abs(null["z"]) < 4 and null["ratio"] < 5


def test_unknown_variant_group_is_named():
    tensors, base = _dw()
    with pytest.raises(AblationError, match="unknown variant group"):
        build_variants(tensors, base, groups=("layers",))


def test_dora_native_parts_rebuild_dw_and_other_families_are_unavailable(tiny, tmp_path):
    """DoRA's direction + magnitude + interaction reproduce the PEFT-merged dW; LoRA has no native split."""
    from weight_steering.ablation.native import dora_parts, native_dw_parts
    from weight_steering.ablation.variants import build_variants
    from weight_steering.core.diff import load_dw
    from weight_steering.main_job.config import preset_config
    from weight_steering.main_job.stages import dw_stage, prepare_job, train_dirs_of

    model, tokenizer = tiny
    tiny_sizes = {"generation": {"n_prompts": 3, "n_personas": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 8}}
    job = prepare_job(preset_config(out=str(tmp_path), train={"family": "dora", "rank": 4, "lora_alpha": 8, "learning_rate": 5e-2,
                                                              "batch_size": 4}, **tiny_sizes), model, tokenizer)
    dw_dir = dw_stage(job)
    dw = load_dw(dw_dir / "dW.safetensors")
    dirs = train_dirs_of(dw_dir)
    assert dirs is not None and all(d.name.startswith("train-dora-") for d in dirs.values())
    params = dict(model.named_parameters())
    base = {k: params[k].detach().float() for k in dw.tensors}
    one = dora_parts(dirs["positive"] / "adapter", base)
    some = next(iter(one["magnitude"]))
    assert one["magnitude"][some].abs().max() > 0 and one["direction"][some].abs().max() > 0
    native = native_dw_parts(dirs["positive"], dirs["negative"], "dora", base)
    variants = build_variants(dw.tensors, base, groups=("native",), native=native)  # checks the sum rebuilds dW
    assert {"dora_direction", "dora_magnitude", "dora_direction_random"} <= set(variants)
    shares = variants["dora_direction"]["energy_fraction"], variants["dora_magnitude"]["energy_fraction"]
    assert all(0 < share for share in shares) and variants["dora_interaction"]["energy_fraction"] > 0  # the second-order term is there
    assert native_dw_parts(dirs["positive"], dirs["negative"], "lora", base) is None
    assert build_variants(dw.tensors, base, groups=("native",), native=None)["native"]["tensors"] is None
    broken = {k: {n: 2 * t for n, t in part.items()} for k, part in native.items()}
    with pytest.raises(AblationError, match="native parts"):
        build_variants(dw.tensors, base, groups=("native",), native=broken)


def test_delora_native_parts_rebuild_dw(tiny, tmp_path):
    """DeLoRA's direction part λ̄(D⁺ − D⁻) + scale part (λ⁺ − λ⁻)D̄ reproduce the PEFT-merged dW."""
    from weight_steering.ablation.native import delora_parts, native_dw_parts
    from weight_steering.ablation.variants import build_variants
    from weight_steering.core.diff import load_dw
    from weight_steering.main_job.config import preset_config
    from weight_steering.main_job.stages import dw_stage, prepare_job, train_dirs_of

    model, tokenizer = tiny
    tiny_sizes = {"generation": {"n_prompts": 3, "n_personas": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 8}}
    job = prepare_job(preset_config(out=str(tmp_path), train={"family": "delora", "rank": 4, "learning_rate": 5e-2, "batch_size": 4},
                                    **tiny_sizes), model, tokenizer)
    dw_dir = dw_stage(job)
    dw, dirs = load_dw(dw_dir / "dW.safetensors"), train_dirs_of(dw_dir)
    params = dict(model.named_parameters())
    base = {k: params[k].detach().float() for k in dw.tensors}
    one = delora_parts(dirs["positive"] / "adapter")
    assert set(one) == set(dw.tensors)
    native = native_dw_parts(dirs["positive"], dirs["negative"], "delora", base)
    variants = build_variants(dw.tensors, base, groups=("native",), native=native)  # raises unless the parts sum to dW
    assert {"delora_direction", "delora_scale", "delora_scale_random"} <= set(variants)
    assert variants["delora_direction"]["energy_fraction"] > 0 and variants["delora_scale"]["energy_fraction"] > 0
    (tmp_path / "lora_adapter").mkdir()
    (tmp_path / "lora_adapter" / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(AblationError, match="not a DeLoRA adapter"):
        delora_parts(tmp_path / "lora_adapter")


def test_activation_subspace_alignment_detects_a_planted_contrast_direction():
    from weight_steering.ablation.alignment import activation_subspace_alignment

    torch.manual_seed(0)
    hidden = 64
    direction = torch.nn.functional.normalize(torch.randn(hidden), dim=0)
    contrast = {1: torch.randn(32, 1) * direction + 0.01 * torch.randn(32, hidden)}  # differences along one direction
    tensors = {"model.layers.1.self_attn.o_proj.weight": torch.outer(direction, torch.randn(48)),  # writes along it
               "model.layers.1.mlp.down_proj.weight": torch.randn(hidden, 48),  # writes anywhere
               "model.layers.1.self_attn.q_proj.weight": torch.outer(torch.randn(48), direction),  # reads along it
               "model.layers.1.mlp.up_proj.weight": torch.randn(48, hidden)}
    rows = {r["projection"]: r for r in activation_subspace_alignment(tensors, contrast, contrast, k=1)}
    assert rows["o_proj"]["energy"] == pytest.approx(1.0, abs=1e-3) and rows["o_proj"]["ratio"] == pytest.approx(hidden, rel=1e-3)
    assert rows["q_proj"]["energy"] == pytest.approx(1.0, abs=1e-3) and rows["q_proj"]["z"] > 10
    assert abs(rows["down_proj"]["z"]) < 4 and rows["up_proj"]["available"] is False
    with pytest.raises(AblationError, match="k=99"):
        activation_subspace_alignment(tensors, contrast, contrast, k=99)


def test_layer_retained_bars_need_the_layer_group(tmp_path):
    from weight_steering.ablation.render import plot_layer_retained

    def row(variant, value):
        return {"variant": variant, "available": True, "defined": True, "metric": "dilemmas_honesty", "retained": value,
                "ci_low": value - 0.1, "ci_high": value + 0.1}

    rows = [row(f"layer_{layer}_only", 0.1 * layer) for layer in (9, 10)] + [row("layer_9_only_random", 0.0), row("without_layer_10", 0.8)]
    assert plot_layer_retained(rows, tmp_path / "bars.png").stat().st_size > 0
    assert plot_layer_retained([row("attention", 0.5)], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_top_share_crop_counts_the_numerical_rank():
    from weight_steering.ablation.variants import CROPS

    spectrum = torch.cat([torch.linspace(10, 1, 8), torch.full((24,), 1e-4)])  # rank 8 plus a float32 rounding floor
    assert len(CROPS["top_25pct_rank"](spectrum)) == 2
    assert len(CROPS["top_25pct_rank"](torch.linspace(10, 1, 32))) == 8


def test_agreement_ranks_variants_and_ignores_anchors_and_controls():
    from weight_steering.ablation.seeds import agreement

    def rows(values, extra=()):
        out = [{"variant": f"v{i}", "group": "layer", "available": True, "metric": "m", "retained": v, "defined": True, "control_of": None}
               for i, v in enumerate(values)]
        out += [{"variant": "full", "group": "anchor", "available": True, "metric": "m", "retained": 1.0, "control_of": None},
                {"variant": "v0_random", "group": "layer", "available": True, "metric": "m", "retained": 0.0, "control_of": "v0"},
                {"variant": "v1", "group": "layer", "available": True, "metric": "other", "retained": 9.0, "control_of": None}]
        return out + list(extra)

    values = np.linspace(0.0, 1.0, 10)
    result = agreement({"a": rows(values), "same": rows(values * 3), "reversed": rows(values[::-1]),
                        "few": [{"variant": "v0", "group": "layer", "available": True, "metric": "m", "retained": 0.1, "control_of": None}]},
                       metric="m", n_permutations=500)
    assert list(result["retained"].index[:10]) == [f"v{i}" for i in range(10)] and "full" not in result["retained"].index
    assert "v0_random" not in result["retained"].index
    by = {(p["a"], p["b"]): p for p in result["pairs"]}
    assert by[("a", "same")]["spearman"] == pytest.approx(1.0) and by[("a", "same")]["p_value"] < 0.01
    assert by[("a", "reversed")]["spearman"] == pytest.approx(-1.0) and by[("a", "same")]["n_variants"] == 10
    assert np.isnan(by[("a", "few")]["spearman"]) and by[("a", "few")]["n_variants"] == 1
    assert agreement({"a": rows(values), "b": rows(values)}, metric="m", groups=("module",))["pairs"][0]["n_variants"] == 0


def test_several_control_draws_and_a_within_dw_null():
    import torch

    from weight_steering.ablation import variants as ablate

    torch.manual_seed(0)
    tensors = {f"model.layers.{i}.self_attn.o_proj.weight": torch.randn(8, 4) @ torch.randn(4, 8) for i in range(2)}
    base = {k: torch.randn(8, 8) for k in tensors}
    variants = ablate.build_variants(tensors, base, groups=("svd",), n_controls=5, n_within=3)
    randoms = [n for n, e in variants.items() if e["control_of"] == "top_50pct_energy_S" and e["control_kind"] == "random"]
    subsets = [n for n, e in variants.items() if e["control_of"] == "top_50pct_energy_S" and e["control_kind"] == "within_dw"]
    assert len(randoms) == 5 and len(subsets) == 3
    assert not torch.equal(variants[randoms[0]]["tensors"][next(iter(tensors))], variants[randoms[1]]["tensors"][next(iter(tensors))])
    kept = variants["top_50pct_energy_S"]["energy_fraction"]
    for name in subsets:  # a random subset of dW's own directions with at least the variant's energy, and no more than one direction over
        assert variants[name]["energy_fraction"] >= kept - 1e-9
        for key, w in tensors.items():
            assert torch.linalg.matrix_rank(variants[name]["tensors"][key].double()) <= torch.linalg.matrix_rank(w.double())
    with pytest.raises(ablate.AblationError, match="n_controls"):
        ablate.build_variants(tensors, base, n_controls=0)


def test_agreement_over_disjoint_variants_only():
    from weight_steering.ablation.seeds import agreement

    def rows(values):
        out = [{"variant": f"layer_{i}_only", "group": "layer", "available": True, "metric": "id", "retained": v} for i, v in enumerate(values)]
        out += [{"variant": f"without_layer_{i}", "group": "layer", "available": True, "metric": "id", "retained": 1 - v} for i, v in enumerate(values)]
        return out

    tables = {"a": rows([0.1, 0.2, 0.3, 0.4]), "b": rows([0.4, 0.1, 0.3, 0.2])}
    both = agreement(tables, "id", groups=("layer",))
    only = agreement(tables, "id", disjoint="single_layers")
    assert only["pairs"][0]["n_variants"] == 4 and both["pairs"][0]["n_variants"] == 8
    assert set(only["retained"].index) == {f"layer_{i}_only" for i in range(4)}


def _ablation_result(family: str, seed: int, offset: float) -> dict:
    from weight_steering.ablation.seeds import SUMMARY_VARIANTS

    rows = []
    for i, variant in enumerate(SUMMARY_VARIANTS):
        retained = 0.1 * i + offset * (i % 3)  # seeds disagree by ``offset`` on some variants
        rows.append({"variant": variant, "group": "svd" if "_S" in variant else "module", "available": True, "defined": True,
                     "metric": "id_controlled", "energy_fraction": 0.5, "control_of": None, "control_kind": None, "retained": retained,
                     "ci_low": retained - 0.1, "ci_high": retained + 0.1, "control_random_mean": 0.0, "control_random_sd": 0.05})
    return {"dw": f"out/sycophancy/smollm2-135m-instruct/dw-{family}-seed{seed}-0123456789abcdef/dW.safetensors", "alpha": 1.0,
            "seed": 0, "rows": rows}


def test_ablation_seed_summary_uses_t_intervals_over_seeds_and_disjoint_projections(tmp_path):
    import json

    from weight_steering.ablation.seeds import load_ablations, summarize_ablation_seeds
    from weight_steering.evaluation.statistics import seed_interval

    folders = []
    for seed, offset in ((0, 0.0), (1, 0.3), (2, -0.2)):
        folder = tmp_path / f"ablation-{seed}"
        folder.mkdir()
        (folder / "ablation.json").write_text(json.dumps(_ablation_result("lora", seed, offset)))
        folders.append(folder)
    [group] = summarize_ablation_seeds(load_ablations(folders), n_permutations=200)
    assert group["family"] == "lora" and group["seeds"] == [0, 1, 2]
    row = next(r for r in group["rows"] if r["variant"] == "mlp")  # index 1: the seeds disagree by the offsets
    assert row["per_seed"] == pytest.approx([0.1, 0.4, -0.1])
    expected = seed_interval([0.1, 0.4, -0.1])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected["ci_low"], expected["ci_high"]))
    assert row["ci_high"] - row["ci_low"] > 2 * (0.4 - (-0.1))  # three seeds: wider than their range
    pairs = group["agreement"]["id_controlled"]
    assert len(pairs) == 3 and all(p["n_variants"] == 7 for p in pairs)  # the seven projections alone, nothing nested
    from weight_steering.ablation.render import render_ablation_seeds

    mlp_line = next(line for line in render_ablation_seeds([group]).splitlines() if line.startswith("| mlp |"))
    assert "+0.10" in mlp_line and "+0.40" in mlp_line and "-0.10" in mlp_line  # every seed's value is in the table


def test_ablation_seed_summary_refuses_bad_folders(tmp_path):
    import json

    from weight_steering.ablation.seeds import load_ablations
    from weight_steering.ablation.variants import AblationError

    with pytest.raises(AblationError, match="no ablation.json"):
        load_ablations([tmp_path / "missing"])
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "ablation.json").write_text(json.dumps(_ablation_result("lora", 1, 0.0)))
    with pytest.raises(AblationError, match="both for lora seed 1"):
        load_ablations([tmp_path / "a", tmp_path / "b"])
    (tmp_path / "a" / "ablation.json").write_text("{")
    with pytest.raises(AblationError, match="not valid JSON"):
        load_ablations([tmp_path / "a"])


def test_subspace_variants_split_the_write_side_and_carry_both_controls():
    from weight_steering.ablation.variants import subspace_parts

    tensors, base = _dw()
    generator = torch.Generator().manual_seed(0)
    bases = {layer: torch.linalg.qr(torch.randn(12, 3, generator=generator, dtype=torch.float64))[0] for layer in (2, 3)}  # [d_model=12, k=3]
    inside, outside = subspace_parts(tensors, bases, True), subspace_parts(tensors, bases, False)
    for key, w in tensors.items():
        if parse_key(key)[2] in ("o_proj", "down_proj"):
            assert torch.allclose(inside[key] + outside[key], w, atol=1e-6)
            q = bases[parse_key(key)[0]]
            assert torch.allclose((q @ q.T @ inside[key].double()).float(), inside[key], atol=1e-6)  # inside span(Q)
            assert (q.T @ outside[key].double()).abs().max() < 1e-6  # orthogonal to it
        else:
            assert not inside[key].any() and not outside[key].any()  # the read side is not part of the check
    assert subspace_parts(tensors, {}, True) is None

    variants = build_variants(tensors, base, groups=("subspace",), n_controls=2, n_within=2, subspaces={"cand": bases})
    write = sum(float(w.double().pow(2).sum()) for k, w in tensors.items() if parse_key(k)[2] in ("o_proj", "down_proj"))
    total = sum(float(w.double().pow(2).sum()) for w in tensors.values())
    assert variants["in_cand"]["energy_fraction"] + variants["outside_cand"]["energy_fraction"] == pytest.approx(write / total)
    kinds = sorted(e["control_kind"] for e in variants.values() if e["control_of"] == "in_cand")
    assert kinds == ["random", "random", "within_dw", "within_dw"] and not any(e["control_of"] == "outside_cand" for e in variants.values())
    unavailable = build_variants(tensors, base, groups=("subspace",))
    assert unavailable["subspace"]["tensors"] is None


def test_causal_check_of_a_planted_subspace_on_the_tiny_model(tiny, tmp_path):
    """A dW whose write side lies in W_o's top-4 write directions: inside that candidate it keeps the whole write side,
    outside it nothing; the candidate names k in its variant names; a read-side candidate is refused."""
    from weight_steering.ablation.run import run_ablation
    from weight_steering.core.diff import compute_dw, save_dw
    from weight_steering.hypotheses.candidates import HypothesisError

    model, tokenizer = tiny
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(0)
    positive = {}
    for layer in (2, 3):
        w_o = params[f"model.layers.{layer}.self_attn.o_proj.weight"].detach().double()
        u = torch.linalg.svd(w_o, full_matrices=False)[0][:, :4]  # [d_model, 4]
        positive[f"model.layers.{layer}.self_attn.o_proj.weight"] = (0.3 * u @ torch.randn(4, w_o.shape[1], generator=generator, dtype=torch.float64)).float()
        positive[f"model.layers.{layer}.self_attn.q_proj.weight"] = 0.1 * torch.randn(params[f"model.layers.{layer}.self_attn.q_proj.weight"].shape, generator=generator)
    save_dw(compute_dw(positive, {k: -v for k, v in positive.items()}, {"model": "tiny"}), tmp_path / "dw" / "dW.safetensors")
    result = run_ablation(tmp_path / "dw", groups=("module",), dilemma_limit=4, out=str(tmp_path), loaded=(model, tokenizer),
                          n_controls=1, n_within=1, candidates=("o_proj_out",), k=4)
    rows = {r["variant"]: r for r in result["rows"] if r.get("metric") == "dilemmas_honesty"}
    assert rows["in_o_proj_out_k4"]["energy_fraction"] == pytest.approx(rows["write_side"]["energy_fraction"], rel=1e-5)
    assert rows["outside_o_proj_out_k4"]["energy_fraction"] < 1e-9
    assert rows["in_o_proj_out_k4"]["retained"] == pytest.approx(rows["write_side"]["retained"], abs=2e-3)  # the same tensors up to fp32 rounding
    assert result["candidates"] == {"names": ["o_proj_out"], "k": 4}
    with pytest.raises(HypothesisError, match="read-side"):
        run_ablation(tmp_path / "dw", groups=("module",), dilemma_limit=4, out=str(tmp_path), loaded=(model, tokenizer), candidates=("qkv_in",))


def test_ablation_seed_summary_carries_the_causal_checks_subspace_variants_but_not_their_controls():
    from weight_steering.ablation.seeds import summarize_ablation_seeds

    results = []
    for seed, inside in ((0, 0.02), (1, -0.01)):
        result = _ablation_result("lora", seed, 0.0)
        for variant, control_of, retained in (("in_down_proj_out_k8", None, inside), ("outside_down_proj_out_k8", None, 0.3),
                                              ("in_down_proj_out_k8_random", "in_down_proj_out_k8", 0.0)):
            result["rows"].append({"variant": variant, "group": "subspace", "available": True, "defined": True,
                                   "metric": "id_controlled", "energy_fraction": 0.01, "control_of": control_of, "retained": retained,
                                   "ci_low": retained - 0.1, "ci_high": retained + 0.1})
        results.append({**result, "family": "lora", "dw_seed": seed})
    [group] = summarize_ablation_seeds(results, n_permutations=50)
    by_variant = {r["variant"]: r for r in group["rows"]}
    assert by_variant["in_down_proj_out_k8"]["per_seed"] == pytest.approx([0.02, -0.01])
    assert by_variant["outside_down_proj_out_k8"]["mean"] == pytest.approx(0.3)
    assert "in_down_proj_out_k8_random" not in by_variant  # a control is the null beside its variant, not a row


def test_named_variants_keep_their_controls_and_the_anchors_and_unknown_names_are_refused():
    from weight_steering.ablation.variants import iter_variants

    tensors, base = _dw()
    every = dict(iter_variants(tensors, base, groups=("module",), n_controls=2))
    chosen = dict(iter_variants(tensors, base, groups=("module",), n_controls=2, names=("attention",)))
    assert set(chosen) == {"full", "zero", "attention", "attention_random", "attention_random_1", "random_norm_matched",
                           "random_norm_matched_1"}
    assert "mlp" in every and len(every) > len(chosen)
    for name in chosen:  # the same variant, with the same controls, as in the whole group
        assert all(torch.equal(chosen[name]["tensors"][k], every[name]["tensors"][k]) for k in tensors), name
    with pytest.raises(AblationError, match="unknown variant name.*mlp_only"):
        dict(iter_variants(tensors, base, groups=("module",), names=("mlp_only",)))  # no such variant: the MLP one is `mlp`
