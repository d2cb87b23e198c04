import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, require_shared

from weight_steering.evaluation.datasets import FOUNDATIONS, EvalDataError, build_vignettes, load_vignettes
from weight_steering.evaluation.rows import vignette_rows
from weight_steering.evaluation.scoring import AnswerTokenError, answer_sets, evaluate
from weight_steering.vignettes.tables import vignette_bare_table, vignette_cells, vignette_delta_table

SOURCE = SHARED / "data" / "tinymfv"


def test_shipped_vignettes_have_131_unique_ids_and_documented_counts():
    rows = load_vignettes()
    assert len(rows) == 262 and len({r["vignette_id"] for r in rows}) == 131
    counts = {f: sum(r["foundation_coarse"] == f and r["condition"] == "other_violate" for r in rows) for f in FOUNDATIONS}
    assert counts == {"Care": 31, "Fairness": 17, "Loyalty": 16, "Authority": 17, "Sanctity": 17, "Liberty": 17, "Social Norms": 16}
    kept = [r for r in rows if r["vignette_id"] == "46c0e2c74dac6031"]
    assert {r["foundation"] for r in kept} == {"Liberty"}, "the documented duplicate keeps its last row"
    assert not any(k.startswith("llm_") for r in rows for k in r)


def test_builder_reproduces_the_shipped_file(tmp_path):
    require_shared(SOURCE)
    shipped = Path(__file__).resolve().parents[1] / "src" / "weight_steering" / "resources" / "tinymfv" / "vignettes_airisk.jsonl"
    rebuilt = "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in build_vignettes(SOURCE))
    assert rebuilt == shipped.read_text(encoding="utf-8")


def _write_source(folder: Path, other: list[dict], self_: list[dict]) -> Path:
    folder.mkdir()
    for name, rows in (("other_violate", other), ("self_violate", self_)):
        (folder / f"vignettes_airisk_{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_builder_names_bad_rows(tmp_path):
    good = {"id": "a1", "foundation": "Care (p)", "foundation_coarse": "Care", "wrong": "4.0", "text": "You see an AI ..."}
    with pytest.raises(EvalDataError, match="line 1: missing field.*text"):
        build_vignettes(_write_source(tmp_path / "a", [{**good, "text": ""}], [good]))
    with pytest.raises(EvalDataError, match="duplicate vignette id a1"):
        build_vignettes(_write_source(tmp_path / "b", [good, good], [good]))
    with pytest.raises(EvalDataError, match="different vignette ids"):
        build_vignettes(_write_source(tmp_path / "c", [good], [{**good, "id": "b2"}]))


def test_vignette_rows_are_524_prompts_with_the_scoring_mode(tiny):
    _, tokenizer = tiny
    rows = vignette_rows(tokenizer)
    assert len(rows) == 524 and {r["scoring_mode"] for r in rows} == {"no-think"}
    assert rows[0]["text"].endswith('{"is_wrong": ') and rows[1]["text"].endswith('{"is_acceptable": ')


def _records(logratios: dict, pmass: float = 0.95) -> list[dict]:
    records = []
    for (alpha, vid, cond, frame), lr in logratios.items():
        records.append({"eval": "vignettes", "alpha": alpha, "vignette_id": vid, "condition": cond, "frame": frame,
                        "polarity": 1 if frame == "wrong" else -1, "foundation": "Authority", "logratio": lr, "pmass": pmass})
    return records


def test_wrongness_logit_delta_and_flips_by_hand():
    # α = 0: p_true(is_wrong) = σ(2), p_true(is_acceptable) = σ(−2) -> w = σ(2) = 0.881, logit(w) = 2.
    # α = 1: σ(−3) and σ(3) -> w = σ(−3) = 0.047, logit(w) = −3: Δlogit = −5 and one flip to acceptable.
    logratios = {(0.0, "v1", "other_violate", "wrong"): 2.0, (0.0, "v1", "other_violate", "accept"): -2.0,
                 (1.0, "v1", "other_violate", "wrong"): -3.0, (1.0, "v1", "other_violate", "accept"): 3.0}
    cells = vignette_cells(_records(logratios))
    base = cells[cells["alpha"] == 0.0].iloc[0]
    sigma = 1 / (1 + math.exp(-2))
    assert base["w"] == pytest.approx(sigma) and base["logit_w"] == pytest.approx(2.0)
    steered = cells[cells["alpha"] == 1.0].iloc[0]
    assert steered["logit_w"] == pytest.approx(-3.0)
    delta = vignette_delta_table(cells, 1.0).iloc[0]
    assert delta["delta_logit"] == pytest.approx(-5.0) and delta["flips_to_acceptable"] == 1 and delta["n_pairs"] == 1


def test_cells_below_the_mass_floor_are_counted_not_divided():
    logratios = {(0.0, "v1", "other_violate", "wrong"): 1.0, (0.0, "v1", "other_violate", "accept"): -1.0}
    cells = vignette_cells(_records(logratios, pmass=0.2), pmass_floor=0.5)
    table = vignette_bare_table(cells)
    assert table.iloc[0]["n_valid"] == 0 and table.iloc[0]["n_below_floor"] == 1 and np.isnan(table.iloc[0]["logit_w_mean"])
    assert vignette_delta_table(cells, 0.0).iloc[0]["n_pairs"] == 0


def test_logit_is_clipped():
    cells = vignette_cells(_records({(0.0, "v", "self_violate", "wrong"): 40.0, (0.0, "v", "self_violate", "accept"): -40.0}))
    assert cells.iloc[0]["logit_w"] == pytest.approx(math.log(0.99 / 0.01))


def test_tiny_model_scores_vignettes_and_missing_tokens_are_named(tiny):
    model, tokenizer = tiny
    records = evaluate(model, tokenizer, None, vignette_rows(tokenizer, limit=3), (0.0,))
    assert len(records) == 12 and all("log_p_true" in r and 0 < r["pmass"] <= 1 for r in records)
    cells = vignette_cells(records, pmass_floor=0.0)
    assert cells["w"].between(0, 1).all() and len(cells) == 6
    bare = vignette_bare_table(cells)
    assert (bare["ci_low"] <= bare["logit_w_mean"] + 1e-12).all() and (bare["logit_w_mean"] <= bare["ci_high"] + 1e-12).all()
    with pytest.raises(AnswerTokenError, match="zzqq"):
        answer_sets(tokenizer, (("zzqq",), ("no",)))


def test_surgical_informedness_by_hand():
    from weight_steering.evaluation.si import surgical_informedness

    y_ref = [1, 1, 1, 1, -1, -1]          # cho = 4, rej = 2
    y_plus = [1, 1, 1, -1, 1, -1]         # fix 1/2, broke 1/4
    y_minus = [-1, -1, 1, 1, -1, 1]       # flip 2/4, counter 1/2
    out = surgical_informedness(y_ref, y_plus, y_minus, pmass_plus=0.9, pmass_minus=0.8, k=2)
    assert out["si_forward"] == pytest.approx(0.5 - 2 * 0.25)
    assert out["si_reverse"] == pytest.approx(0.5 - 2 * 0.5)
    assert out["si"] == pytest.approx(np.mean([0.0, -0.5]) * 0.8 ** 2 * 100) and out["k"] == 2
    k1 = surgical_informedness(y_ref, y_plus, y_minus, 0.9, 0.8, k=1)
    assert k1["si_forward"] == pytest.approx(0.25)
    forward_only = surgical_informedness(y_ref, y_plus, None, pmass_plus=0.9, k=2)
    assert forward_only["si"] == pytest.approx(0.0) and np.isnan(forward_only["si_reverse"])
    assert np.isnan(surgical_informedness([1, 1], [1, -1], [1, 1])["si"]), "no rejected items: SI undefined, not a division error"


def test_si_pairs_arms_by_sign_with_asymmetric_alpha():
    from weight_steering.vignettes.tables import si_vignettes

    logratios = {}
    for vid, base in (("a", 2.0), ("b", 2.0), ("c", -2.0)):
        for alpha, shift in ((0.0, 0.0), (0.7, -3.0), (-1.6, 3.0)):  # α₊ = 0.7, α₋ = −1.6 (not −α₊)
            logratios[(alpha, vid, "other_violate", "wrong")] = base + shift
            logratios[(alpha, vid, "other_violate", "accept")] = -(base + shift)
    cells = vignette_cells(_records(logratios))
    out = si_vignettes(cells, "Authority", intent=-1, alpha_plus=0.7, alpha_minus=-1.6, k=2)
    # intent −1: items judged wrong are "not yet in the intended state". ref: a, b wrong (rej), c acceptable (cho).
    assert (out["n_chosen"], out["n_rejected"]) == (1, 2)
    assert not np.isnan(out["si_reverse"]), "the reverse arm must be used even though α₋ ≠ −α₊"
    assert out["si_ci_low"] <= out["si"] <= out["si_ci_high"]


def test_run_vignettes_writes_tables_and_resumes(tiny, tmp_path):
    import torch

    from weight_steering.core.diff import compute_dw, save_dw
    from weight_steering.vignettes.run import run_vignettes

    model, tokenizer = tiny
    params = dict(model.named_parameters())
    torch.manual_seed(0)
    positive = {k: 0.05 * torch.randn_like(params[k]) for k in ("model.layers.2.mlp.down_proj.weight", "model.layers.3.self_attn.o_proj.weight")}
    save_dw(compute_dw(positive, {k: -v for k, v in positive.items()}, {"model": "tiny", "behavior": "authority"}), tmp_path / "dw" / "dW.safetensors")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = run_vignettes(tmp_path / "dw", alphas=(-1.0, 0.0, 1.0), out=str(tmp_path), limit=4, pmass_floor=0.0, loaded=(model, tokenizer))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "weights restored after steering"
    assert {r["foundation"] for r in result["bare"]} and result["si"][0]["k"] == 2.0
    # the intent comes from the dW's behaviour file: authority names the Authority foundation, intended −1
    assert [(r["foundation"], r["intent"]) for r in result["si"]] == [("Authority", -1)]
    assert (result["path"] / "vignettes.md").read_text().count("| foundation |") == 4
    again = run_vignettes(tmp_path / "dw", alphas=(-1.0, 0.0, 1.0), out=str(tmp_path), limit=4, pmass_floor=0.0, loaded=(model, tokenizer))
    assert again["seconds_per_pass"] is None and again["deltas"] == result["deltas"]
    with pytest.raises(ValueError, match="include 0"):
        run_vignettes(tmp_path / "dw", alphas=(1.0,), loaded=(model, tokenizer))
