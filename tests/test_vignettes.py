import json
import math
from pathlib import Path

import numpy as np
import pytest

from weight_steering.analyse import vignette_bare_table, vignette_cells, vignette_delta_table
from weight_steering.eval_data import FOUNDATIONS, EvalDataError, build_vignettes, load_vignettes
from weight_steering.evaluate import AnswerTokenError, answer_sets, evaluate, vignette_rows

from conftest import SHARED

SOURCE = SHARED / "data" / "tinymfv"


def test_shipped_vignettes_have_131_unique_ids_and_documented_counts():
    rows = load_vignettes()
    assert len(rows) == 262 and len({r["vignette_id"] for r in rows}) == 131
    counts = {f: sum(r["foundation_coarse"] == f and r["condition"] == "other_violate" for r in rows) for f in FOUNDATIONS}
    assert counts == {"Care": 31, "Fairness": 17, "Loyalty": 16, "Authority": 17, "Sanctity": 17, "Liberty": 17, "Social Norms": 16}
    kept = [r for r in rows if r["vignette_id"] == "46c0e2c74dac6031"]
    assert {r["foundation"] for r in kept} == {"Liberty"}, "the documented duplicate keeps its last row"
    assert not any(k.startswith("llm_") for r in rows for k in r)


@pytest.mark.skipif(not SOURCE.exists(), reason="needs the raw tinymfv files in ../shared/data")
def test_builder_reproduces_the_shipped_file(tmp_path):
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
    with pytest.raises(AnswerTokenError, match="zzqq"):
        answer_sets(tokenizer, (("zzqq",), ("no",)))
