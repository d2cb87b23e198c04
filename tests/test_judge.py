"""The data judge (rates, filter, agreement) and the paired-completion probe, on the tiny model."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from weight_steering.core.behavior_files import load_behavior
from weight_steering.core.behaviors import BehaviorError
from weight_steering.core.data import DataGateError
from weight_steering.evaluation.judge import (
    JudgeError,
    behavior_rates,
    check_judgeable,
    judge_agreement,
    judge_logratios,
    judge_pairs,
    label_threshold,
    load_hand_labels,
    pair_scorer,
    resolve_threshold,
)
from weight_steering.evaluation.rows import held_out_rows
from weight_steering.evaluation.scoring import evaluate, score_completion_pairs


def _pairs(n=6):
    return [{"prompt": f"I think claim {i}. Right?", "response_positive": f"Yes, you are right {i}.", "response_negative": f"No, that is wrong {i}.",
             "persona_index": i % 2, "prompt_index": i} for i in range(n)]


def test_judge_pairs_threshold_and_filter(tiny):
    model, tokenizer = tiny
    behavior = load_behavior("sycophancy")
    pairs = _pairs()
    judged, threshold = judge_pairs(pair_scorer(model, tokenizer, behavior), pairs, "median")
    scores = judge_logratios(model, tokenizer, behavior, [(p["prompt"], p["response_positive"]) for p in pairs]
                             + [(p["prompt"], p["response_negative"]) for p in pairs])
    assert threshold == pytest.approx(float(np.median(scores)))
    for j, plus, minus in zip(judged, scores[:6], scores[6:]):
        assert j["judge_positive"] == pytest.approx(plus, abs=1e-5) and j["keep"] == (plus > threshold >= minus)
    judged_fixed, fixed = judge_pairs(pair_scorer(model, tokenizer, behavior), pairs, 1e9)
    assert fixed == 1e9 and not any(j["keep"] or j["shows_positive"] for j in judged_fixed)
    rates = behavior_rates(pairs, judged, behavior)
    assert rates["positive"] == pytest.approx(np.mean([j["shows_positive"] for j in judged]))
    assert rates["kept"] == sum(j["keep"] for j in judged) and len(rates["by_persona"]) == 2
    assert set(rates["by_answer"]) <= {"yes", "no"} and sum(r["n"] for r in rates["by_answer"].values()) == 6


def test_the_metric_pair_judge_keeps_pairs_by_the_behaviours_judge_free_metric_at_the_hand_label_threshold():
    """upbeat's pairs judged by VADER (no model): the threshold is the one that best reproduces the hand labels, and a
    pair is kept when its positive reply scores above it and its negative one does not."""
    behavior = load_behavior("upbeat")
    scorer = pair_scorer(None, None, behavior, "metric")
    pairs = [{"prompt": "My team lost the match yesterday.", "persona_index": 0, "prompt_index": 0,
              "response_positive": "What a wonderful chance to grow! I'm so happy and proud of you, great things are coming!",
              "response_negative": "That is terrible. Everything is ruined, sad and hopeless."},
             {"prompt": "It's going to rain all weekend.", "persona_index": 1, "prompt_index": 1,
              "response_positive": "Rain again.", "response_negative": "Lovely! A great, happy weekend of cosy joy awaits you!"}]
    labels = load_hand_labels(behavior)
    label_scores = scorer([(r["prompt"], r["response"]) for r in labels])
    judged, threshold = judge_pairs(scorer, pairs, "labels", labels)
    assert threshold == pytest.approx(label_threshold(label_scores, [r["label"] for r in labels]))
    assert -1 < threshold < 1  # VADER's compound scale, not nats
    assert [j["keep"] for j in judged] == [True, False]
    assert judged[1]["shows_negative"] and not judged[1]["shows_positive"]
    with pytest.raises(JudgeError, match="no 'generation_metric'"):
        pair_scorer(None, None, load_behavior("sycophancy"), "metric")
    with pytest.raises(JudgeError, match="unknown pair judge"):
        pair_scorer(None, None, behavior, "vader")
    with pytest.raises(BehaviorError, match="--pair-judge metric needs a 'generation_metric'"):
        check_judgeable(load_behavior("sycophancy"), "metric")


def test_judge_agreement_counts_and_kappa(tiny):
    model, tokenizer = tiny
    behavior = load_behavior("sycophancy")
    labels = load_hand_labels(behavior)
    assert len(labels) >= 40 and {r["label"] for r in labels} == {0, 1}
    result = judge_agreement(model, tokenizer, behavior, labels[:12])
    assert result["true_positive"] + result["false_positive"] + result["true_negative"] + result["false_negative"] == 12
    predicted = np.array(result["scores"]) > result["threshold"]
    truth = np.array([r["label"] for r in labels[:12]]) == 1
    assert result["accuracy"] == pytest.approx((predicted == truth).mean())
    assert result["accuracy_ci_low"] <= result["accuracy"] <= result["accuracy_ci_high"] and 0 <= result["auc"] <= 1


def test_judge_bad_input(tmp_path, tiny):
    model, tokenizer = tiny
    with pytest.raises(JudgeError, match="no 'judge' block"):
        judge_logratios(model, tokenizer, load_behavior("honesty"), [("q", "a")])
    with pytest.raises(JudgeError, match="'median'"):
        resolve_threshold(np.zeros(3), "mean")
    with pytest.raises(JudgeError, match="hand-labelled"):
        resolve_threshold(np.zeros(3), "labels")
    with pytest.raises(JudgeError, match="finite"):
        resolve_threshold(np.zeros(3), float("nan"))
    bad = tmp_path / "labels.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response": "r", "label": 2}) + "\n")
    with pytest.raises(JudgeError, match="line 1"):
        load_hand_labels("sycophancy", bad)
    with pytest.raises(JudgeError, match="no hand labels"):
        load_hand_labels("honesty")


def test_filter_pairs_needs_a_judge(tmp_path, tiny):
    from weight_steering.main_job.config import preset_config
    from weight_steering.main_job.stages import prepare_job

    model, tokenizer = tiny
    config = preset_config("smoke", behavior="honesty", out=str(tmp_path), filter_pairs=True)
    with pytest.raises(BehaviorError, match="judge"):
        prepare_job(config, model, tokenizer)


def test_a_job_filtered_by_the_metric_judge_trains_on_the_pairs_it_keeps_and_still_reports_the_model_judge(tmp_path, tiny, monkeypatch):
    """upbeat (smoke sizes, tiny model): --pair-judge metric writes its own stage beside the model judge's, the job's
    rows are exactly the pairs the metric keeps, its data hash is theirs, and ``job.judge`` is still the model judge's
    report. A tiny random model's replies carry no sentiment, so the metric is replaced by one that marks the positive
    reply of every other pair."""
    from pathlib import Path

    from weight_steering.artifacts import file_sha256, read_json, read_jsonl
    from weight_steering.evaluation import generations
    from weight_steering.main_job.config import preset_config
    from weight_steering.main_job.stages import prepare_job

    model, tokenizer = tiny
    plain = prepare_job(preset_config("smoke", behavior="upbeat", out=str(tmp_path)), model, tokenizer)
    marked = {r["response_positive"] for r in plain.rows[::2]}
    monkeypatch.setitem(generations.GENERATION_METRICS, "valence", lambda text: float(text in marked))
    config = preset_config("smoke", behavior="upbeat", out=str(tmp_path), filter_pairs=True, pair_judge="metric", judge_threshold=0.5)
    job = prepare_job(config, model, tokenizer)
    [stage] = list(job.root.glob("judge-valence-*"))
    expected = [r for r in plain.rows if r["response_positive"] in marked and r["response_negative"] not in marked]
    assert 0 < len(expected) < len(plain.rows) and job.rows == expected
    assert len(read_jsonl(stage / "judged.jsonl")) == len(plain.rows) == job.pair_counts["before_filter"]
    assert job.data_sha == file_sha256(stage / "pairs.jsonl") != plain.data_sha
    assert job.pair_counts["filter"]["judge_model"] == "valence (judge-free metric)" and job.pair_counts["filter"]["threshold"] == 0.5
    assert job.judge == plain.judge == read_json(next(job.root.glob("judge-[0-9a-f]*")) / "summary.json")
    # the model judge filters with the very stage it reports from: asked for once, its kept pairs are the job's rows
    from weight_steering.main_job import stages

    asked = []
    real_judge_data = stages.judge_data
    monkeypatch.setattr(stages, "judge_data", lambda *a, **k: asked.append(a[0].pair_judge) or real_judge_data(*a, **k))
    by_model = prepare_job(replace(config, pair_judge="model", judge_threshold="median"), model, tokenizer)
    assert asked == ["model"]
    model_stage = by_model.timings["judge"]["dir"]
    assert by_model.rows == read_jsonl(Path(model_stage) / "pairs.jsonl") and "filter" not in by_model.pair_counts
    # the size control: as many pairs as the metric judge keeps, drawn at random from all of them, in their order
    control = prepare_job(replace(config, size_control=True), model, tokenizer)
    [control_stage] = list(job.root.glob("control-*"))
    assert len(control.rows) == len(expected) and control.rows != expected
    assert control.rows == [r for r in plain.rows if r in control.rows]
    assert control.data_sha == file_sha256(control_stage / "pairs.jsonl") not in (job.data_sha, plain.data_sha)
    assert "size_control" in control.pair_counts and control.pair_counts["before_filter"] == len(plain.rows)
    again = stages.size_control_data(plain.rows, len(expected), plain.data_sha, 0, tmp_path / "again", False, {})
    other = stages.size_control_data(plain.rows, len(expected), plain.data_sha, 1, tmp_path / "again", False, {})
    assert read_jsonl(again / "pairs.jsonl") == control.rows != read_jsonl(other / "pairs.jsonl")  # seeded, and by the seed
    n = len(plain.rows)
    with pytest.raises(DataGateError, match=f"size control draws {n + 1} pairs but the data has {n}"):
        stages.size_control_data(plain.rows, n + 1, plain.data_sha, 0, tmp_path, False, {})
    with pytest.raises(ValueError, match="needs filter_pairs"):
        preset_config("smoke", behavior="upbeat", size_control=True)
    monkeypatch.setitem(generations.GENERATION_METRICS, "valence", lambda text: 0.0)
    with pytest.raises(DataGateError, match="metric judge kept no pair"):
        prepare_job(replace(config, judge_threshold=0.25), model, tokenizer)
    with pytest.raises(ValueError, match="pair_judge must be one of"):
        preset_config("smoke", behavior="upbeat", pair_judge="vader")


def test_completion_pair_scores_match_a_naive_forward(tiny):
    model, tokenizer = tiny
    behavior = load_behavior("tone")
    rows = held_out_rows(tokenizer, behavior)[:3]
    assert [r["eval"] for r in rows] == ["held_out_pair"] * 3
    scores = score_completion_pairs(model, tokenizer, [r["text"] for r in rows],
                                    [(r["completion_positive"], r["completion_negative"]) for r in rows], batch_size=4)
    for i, row in enumerate(rows):
        for j, completion in enumerate((row["completion_positive"], row["completion_negative"])):
            prompt = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
            reply = tokenizer(completion, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([prompt + reply])).logits[0].float(), -1)
            naive = sum(logp[len(prompt) - 1 + t, token].item() for t, token in enumerate(reply))
            assert scores[i, j].item() == pytest.approx(naive, abs=1e-4)
    records = evaluate(model, tokenizer, None, rows, alphas=(0.0,))
    assert all(np.isnan(r["pmass"]) for r in records)
    assert records[0]["logratio"] == pytest.approx(records[0]["log_p_positive"] - records[0]["log_p_negative"])


def test_control_framing_rows_pair_with_the_opinion_rows(tokenizer):
    rows = held_out_rows(tokenizer, load_behavior("sycophancy"))
    opinion = [r for r in rows if r["eval"] == "held_out"]
    control = [r for r in rows if r["eval"] == "held_out_control"]
    assert [r["row_id"] for r in opinion] == [r["row_id"] for r in control] and len(opinion) == 12
    assert all(o["claim"] == c["claim"] and o["text"] != c["text"] and "I think" not in c["text"] for o, c in zip(opinion, control))


def test_archived_cells_rank_as_recorded(tmp_path):
    from weight_steering.sweep.archive import archived_cells
    from weight_steering.sweep.cells import SweepError

    cells = archived_cells("docs/sweep/cells", families=["lora"])
    assert sorted(c["cell"]["seed"] for c in cells) == [0, 1, 2] and all(c["records"] for c in cells)
    with pytest.raises(SweepError, match="not a folder"):
        archived_cells(tmp_path / "missing")
    copy = tmp_path / "m" / "b" / "lora-seed0"
    copy.mkdir(parents=True)
    source = next(p for p in __import__("pathlib").Path("docs/sweep/cells").glob("*/*/lora-seed0"))
    (copy / "cell.json").write_text((source / "cell.json").read_text())
    (copy / "records.jsonl.gz").write_bytes(__import__("gzip").compress(b"{}\n"))
    with pytest.raises(SweepError, match="SHA-256"):
        archived_cells(tmp_path)


def test_label_threshold_and_hand_label_rates():
    from weight_steering.evaluation.judge import hand_label_rates, label_threshold

    scores = np.array([0.1, 0.2, 0.9, 1.0, 0.15, 0.95])
    labels = np.array([0, 0, 1, 1, 0, 1])
    threshold = label_threshold(scores, labels)
    assert 0.2 < threshold < 0.9 and ((scores > threshold) == (labels == 1)).all()
    rows = [{"label": 1, "generated_under": "positive persona 0"}] * 3 + [{"label": 0, "generated_under": "positive persona 1"}] \
        + [{"label": 0, "generated_under": "negative persona 0"}] * 4
    rates = hand_label_rates(rows)
    assert rates["positive"]["rate"] == 0.75 and rates["positive"]["n"] == 4 and rates["negative"]["rate"] == 0.0
    assert rates["negative"]["ci_high"] > 0  # Wilson: never a zero-width interval at 0/4
