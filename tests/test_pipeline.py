import os
import re

import pytest
import torch
from safetensors.torch import load_file

from weight_steering.artifacts import atomic_write, file_sha256
from weight_steering.core.data import DataGateError, check_pairs
from weight_steering.core.models import ModelNotAvailableError, load_model
from weight_steering.main_job.config import preset_config
from weight_steering.main_job.run import run_main_job

TINY = {"generation": {"n_prompts": 3, "n_personas": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 8},
        "train": {"rank": 4, "lora_alpha": 8, "learning_rate": 5e-3, "batch_size": 4}, "alphas": (-1.0, 0.0, 1.0), "dilemma_limit": 3}


def _config(out, **extra):
    return preset_config("default", out=str(out), **{**TINY, **extra})


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_main_job_end_to_end_reuse_and_resume(tiny, tmp_path):
    model, tokenizer = tiny
    first = run_main_job(_config(tmp_path), model, tokenizer, command="test")
    assert first.report.exists() and (first.run_dir / "dose_response.png").stat().st_size > 1000
    report = first.report.read_text()
    assert "α=+1 − α=+0" in report and "DailyDilemmas honesty" in report
    per_alpha = first.summary["per_alpha"]
    assert {r["metric"] for r in per_alpha} >= {"id", "id_neutral", "id_controlled", "dilemmas_honesty", "dilemmas_honesty_pooled", "dilemmas_justice", "action_bias"}
    assert [r["k"] for r in first.summary["surgical_informedness"]] == [2.0, 1.0] and "Surgical Informedness" in report
    assert not any(v["reused"] for k, v in first.timings.items() if k not in ("total",))

    again = run_main_job(_config(tmp_path), model, tokenizer, command="test")
    stages = ("data", "train θ⁺", "train θ⁻", "diff dW", "evaluate base", "evaluate")
    assert all(again.timings[s]["reused"] for s in stages)

    # An interrupted run: the evaluate stage never wrote its marker. The rerun redoes only that stage.
    eval_dir = first.timings["evaluate"]["dir"]
    os.unlink(os.path.join(eval_dir, "stage.json"))
    resumed = run_main_job(_config(tmp_path), model, tokenizer, command="test")
    assert [s for s in stages if not resumed.timings[s]["reused"]] == ["evaluate"]
    assert resumed.summary == first.summary


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_same_seed_gives_bitwise_identical_dw(tiny, tmp_path):
    model, tokenizer = tiny
    a = run_main_job(_config(tmp_path / "a"), model, tokenizer, command="test")
    b = run_main_job(_config(tmp_path / "b"), model, tokenizer, command="test")
    ta, tb = load_file(str(a.dw_path)), load_file(str(b.dw_path))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert file_sha256(a.dw_path) == file_sha256(b.dw_path)  # same bytes, metadata included
    c = run_main_job(_config(tmp_path / "c", train={**TINY["train"], "seed": 1}), model, tokenizer, command="test")
    tc = load_file(str(c.dw_path))
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)


def test_bad_inputs_fail_before_work(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="must include 0"):
        run_main_job(_config(tmp_path, alphas=(-1.0, 1.0)), model, tokenizer)
    with pytest.raises(ValueError, match="finite"):
        run_main_job(_config(tmp_path, alphas=(0.0, float("inf"))), model, tokenizer)
    with pytest.raises(Exception, match="Known families"):
        run_main_job(_config(tmp_path, train={"family": "nope"}), model, tokenizer)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("huge")
    assert not (tmp_path / "sycophancy").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"dilemma_limit": -5}, "run.dilemma_limit"), ({"train": {"epochs": -1}}, "train.epochs"),
    ({"train": {"learning_rate": float("nan")}}, "train.learning_rate"), ({"generation": {"n_samples": 0}}, "generation.n_samples"),
    ({"generation": {"temperature": float("inf")}}, "generation.temperature"), ({"alphas": (0.0, float("nan"))}, "run.alphas"),
    ({"judge_threshold": float("nan")}, "run.judge_threshold"), ({"train": {"layer_fraction": (0.8, 0.3)}}, "train.layer_fraction"),
])
def test_invalid_numbers_are_refused_where_parsed(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        preset_config(**overrides)


def test_damaged_dw_and_json_files_get_clear_errors(tmp_path):
    from weight_steering.artifacts import ArtifactError, read_jsonl, write_json
    from weight_steering.core.behavior_files import load_behavior
    from weight_steering.core.behaviors import BehaviorError
    from weight_steering.core.diff import DeltaWeightsError, load_dw

    (tmp_path / "dW.json").write_text("{}")
    (tmp_path / "dW.safetensors").write_bytes(b"\x80\x04\x95 pickle bytes")
    with pytest.raises(DeltaWeightsError, match="not a readable safetensors file"):
        load_dw(tmp_path)
    (tmp_path / "records.jsonl").write_text('{"a": 1}\n{"b": ')
    with pytest.raises(ArtifactError, match="line 2"):
        read_jsonl(tmp_path / "records.jsonl")
    (tmp_path / "b.json").write_text("{name: 1}")
    with pytest.raises(BehaviorError, match="b.json"):
        load_behavior(tmp_path / "b.json")
    write_json(tmp_path / "ok.json", {"x": 1})
    with pytest.raises(ValueError, match="existing file"):
        preset_config(out=str(tmp_path / "ok.json"))


def test_pair_gate():
    row = {"response_positive": "yes", "response_negative": "no"}
    other = {"response_positive": "sure", "response_negative": "nope"}
    assert check_pairs([row, other])["pairs"] == 2
    with pytest.raises(DataGateError, match="same text"):
        check_pairs([row, row])
    with pytest.raises(DataGateError, match="empty"):
        check_pairs([row, {"response_positive": " ", "response_negative": "no"}])
    with pytest.raises(DataGateError, match="identical"):
        check_pairs([{"response_positive": "same", "response_negative": "same"}] * 3 + [row])


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_unavailable_model_names_the_embedded_default(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(ModelNotAvailableError, match="smollm2-135m-instruct"):
        load_model("no-such-org/no-such-model-xyz", device="cpu")
