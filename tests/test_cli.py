"""Bad input at the command line: a non-zero exit, no traceback, a message that names the field or file and the fix,
and nothing already written lost. Every case fails before a model is loaded."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from weight_steering.cli import app

CASES = [
    (["run", "--epochs", "-1"], "train.epochs"),
    (["run", "--dilemma-limit", "-5"], "run.dilemma_limit"),
    (["run", "--n-samples", "0"], "generation.n_samples"),
    (["run", "--learning-rate", "nan"], "train.learning_rate"),
    (["run", "--alphas", "1,2"], "must include 0"),
    (["run", "--alphas", "0,x"], "--alphas"),
    (["run", "--out", "README.md"], "existing file"),
    (["run", "--behavior", "telepathy"], "unknown behaviour 'telepathy'"),
    (["run", "--judge-threshold", "nan"], "--judge-threshold"),
    (["sweep", "--seeds", "a,b"], "--seeds"),
    (["sweep", "--archive", "README.md"], "is a file"),
    (["sweep", "--seeds", "0", "--data-seed", "-1"], "data seed"),
    (["summarize", "no/such/run"], "no run.json"),
    (["compare", "--archive", "README.md"], "is a file"),
    (["compare", "--methods", "dW,telepathy"], "unknown method"),
    (["compare-seeds", "no/such/folder"], "does not exist"),
    (["monitor", "--dw", "x", "--finetune", "y", "--margin", "nan"], "--margin"),
    (["export", "--dw", "x", "--out", "y", "--format", "onnx"], "unknown export format 'onnx'"),
    (["export", "--dw", "x", "--out", "README.md"], "README.md exists"),
    (["export", "--dw", "x", "--out", "y", "--rank", "0"], "--rank"),
    (["export", "--dw", "x", "--out", "y", "--energy", "1.5"], "--energy"),
    (["export", "--dw", "x", "--out", "y", "--rank", "4", "--energy", "0.9"], "not both"),
    (["compare-seeds", "docs/sweep"], "no comparison.json"),
    (["run", "--epochs", "x"], "'--epochs'"),
    (["run", "--learning-rate", "inf"], "train.learning_rate"),
    (["run", "--max-new-tokens", "0"], "generation.max_new_tokens"),
    (["run", "--preset", "huge"], "preset"),
    (["run", "--family", "telepathy"], "telepathy"),
    (["run", "--sampler", "vllm"], "unknown sampler 'vllm'; choose one of cached, transformers"),
    (["compare", "--sampler", "vllm"], "unknown sampler 'vllm'"),
    (["sweep", "--behaviors", ""], "at least one behaviour"),
    (["sweep", "--families", "lora,telepathy"], "telepathy"),
    (["vignettes", "--dw", "x", "--intent", "Care=2"], "--intent"),
    (["vignettes", "--dw", "x", "--alphas", "1,2"], "must include 0"),
    (["degradation", "--dw", "x", "--alphas", "-1,1"], "must include 0"),
    (["ablate", "--dw", "x", "--groups", "layer,telepathy"], "telepathy"),
    (["ablate", "--dw", "x", "--n-controls", "0"], "n_controls"),
    (["ablate", "--dw", "x", "--candidates", "o_proj_out,telepathy"], "--candidates must name candidates"),
    (["ablate", "--dw", "x", "--candidates", "o_proj_out", "--k", "0"], "--k be ≥ 1"),
    (["compare", "--target", "0"], "--target"),
    (["compare", "--tolerance", "nan"], "--tolerance"),
    (["export", "--dw", "x", "--out", "y", "--energy", "nan"], "--energy"),
    (["export", "--dw", "no/such/dw", "--out", "y"], "no dW at"),
    (["generate", "--dw", "x", "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["generate", "--dw", "x", "--prompt", "hi", "--alpha", "nan"], "α"),
    (["monitor-experiment", "--dw", "x", "--fractions", "0,2"], "--fractions"),
    (["monitor-experiment", "--dw", "x", "--n-rows", "1"], "--n-rows"),
    (["summarize-ablations", "no/such/ablation"], "no ablation.json"),
    (["hypotheses", "--dw", "x", "--candidates", "o_proj_out,telepathy"], "telepathy"),
    (["hypotheses", "--dw", "x", "--k", "0"], "--k"),
    (["run", "--alphas=1,1,0"], "--alphas: '1' is given twice"),
    (["run", "--alphas", "0,inf"], "--alphas: 'inf' is not finite"),
    (["compare", "--curve-fractions", "0.5,abc"], "--curve-fractions: 'abc' is not a number"),
    (["compare", "--curve-fractions", "0.5,0.5"], "--curve-fractions: '0.5' is given twice"),
    (["sweep", "--seeds", "0,0"], "--seeds: '0' is given twice"),
    (["sweep", "--families", "lora,lora"], "--families names a family twice"),
    (["monitor-experiment", "--dw", "x", "--fractions", "0,0.5,0.5"], "--fractions: '0.5' is given twice"),
    (["monitor-experiment", "--dw", "x", "--seeds", "1000,x"], "--seeds: 'x' is not an integer"),
    (["compare", "--methods", "dW,dW"], "repeat"),
    (["run", "--dtype", "int8"], "--dtype 'int8' is not a known dtype; use one of float32"),
    (["compare", "--dtype", "fp64"], "--dtype 'fp64' is not a known dtype"),
    (["generate", "--dw", "x", "--prompt", "hi", "--device", "gpu0"], "--device 'gpu0' is not a device torch knows"),
    (["ablate", "--dw", "x", "--device", "meta"], "only cpu and cuda are supported"),
    pytest.param(["run", "--device", "cuda"], "sees no CUDA GPU; run with --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
    pytest.param(["vignettes", "--dw", "x", "--device", "cuda:0"], "sees no CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(c.values[0] if hasattr(c, "values") else c[0]) for c in CASES])
def test_bad_cli_input_is_a_clear_error(args, message):
    """Each case fails before any work (no model is loaded); run from the repository root (README.md is a file there)."""
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, TypeError, AttributeError))
    assert message in text, text


def _dw_files(folder, tensor):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"model.layers.0.mlp.up_proj.weight": tensor}, str(folder / "dW.safetensors"))
    (folder / "dW.json").write_text(json.dumps({"model": "smollm2-135m-instruct"}))
    return folder


def _truncated_dw(tmp):
    folder = _dw_files(tmp / "dw", torch.ones(4, 4))
    data = (folder / "dW.safetensors").read_bytes()
    (folder / "dW.safetensors").write_bytes(data[: len(data) // 2])
    return ["export", "--dw", str(folder), "--out", str(tmp / "o")], "not a readable safetensors file", folder / "dW.safetensors"


def _pickle_dw(tmp):
    folder = _dw_files(tmp / "dw", torch.ones(4, 4))
    torch.save({"model.layers.0.mlp.up_proj.weight": torch.ones(4, 4)}, folder / "dW.safetensors")  # a pickle, named as safetensors
    return ["monitor", "--dw", str(folder), "--finetune", str(folder)], "never pickle", folder / "dW.safetensors"


def _nan_dw(tmp):
    folder = _dw_files(tmp / "dw", torch.tensor([[1.0, float("nan")]]))
    return ["generate", "--dw", str(folder), "--prompt", "hi"], "NaN or Inf", folder / "dW.safetensors"


def _dw_without_sidecar(tmp):
    folder = _dw_files(tmp / "dw", torch.ones(2, 2))
    (folder / "dW.json").unlink()
    return ["ablate", "--dw", str(folder)], "dW.json", folder / "dW.safetensors"


def _finetune_missing(tmp):
    folder = _dw_files(tmp / "dw", torch.ones(2, 2))
    return ["monitor", "--dw", str(folder), "--finetune", str(tmp / "no_such_adapter")], "no_such_adapter", folder / "dW.safetensors"


def _behavior_file(tmp, text):
    path = tmp / "mine.json"
    path.write_text(text)
    return path


def _invalid_behavior_json(tmp):
    path = _behavior_file(tmp, '{"name": "mine", oops}')
    return ["run", "--behavior", str(path)], "mine.json", path


def _behavior_with_duplicate_prompts(tmp):
    raw = json.loads((_shipped("sycophancy")))
    raw["train_items"] = raw["train_items"][:2] + raw["train_items"][:1]
    path = _behavior_file(tmp, json.dumps(raw))
    return ["run", "--behavior", str(path)], "train_items", path


def _behavior_with_unpaired_personas(tmp):
    raw = json.loads(_shipped("sycophancy"))
    raw["negative_system_prompts"] = raw["negative_system_prompts"][:-1]
    path = _behavior_file(tmp, json.dumps(raw))
    return ["run", "--behavior", str(path)], "negative_system_prompts", path


def _shipped(name):
    from importlib import resources

    return (resources.files("weight_steering") / "resources" / "behaviors" / f"{name}.json").read_text()


def _finetune_seed_is_the_dw_training_seed(tmp):
    folder = _dw_files(tmp / "dw", torch.ones(2, 2))
    (folder / "dW.json").write_text(json.dumps({"model": "smollm2-135m-instruct", "train_seed": 3}))
    return ["monitor-experiment", "--dw", str(folder), "--seeds", "3,4"], "training seed of --dw", folder / "dW.json"


def _corrupt_comparison(tmp):
    folder = tmp / "compare" / "lora-seed0"
    folder.mkdir(parents=True)
    (folder / "comparison.json").write_text('{"behavior": "sycophancy", ')
    return ["compare-seeds", str(tmp / "compare")], "comparison.json", folder / "comparison.json"


def _truncated_run_json(tmp):
    folder = tmp / "run"
    folder.mkdir()
    (folder / "run.json").write_text('{"behavior": ')
    return ["summarize", str(folder)], "run.json", folder / "run.json"


def _foreign_run_json(tmp):
    folder = tmp / "run"
    folder.mkdir()
    (folder / "run.json").write_text('{"behavior": "sycophancy", "summary": {"contrasts": []}}')
    return ["summarize", str(folder)], "is not a finished main job's run.json (no family, seed, n_pairs, norm_dw, config)", folder / "run.json"


def _out_below_a_file(tmp):
    (tmp / "notes.txt").write_text("user notes")
    return ["run", "--out", str(tmp / "notes.txt" / "sub")], "notes.txt", tmp / "notes.txt"


def _export_over_user_files(tmp):
    dw = _dw_files(tmp / "dw", torch.ones(2, 2))
    (tmp / "adapter").mkdir()
    (tmp / "adapter" / "keep.txt").write_text("user file")
    return ["export", "--dw", str(dw), "--out", str(tmp / "adapter")], "--force", tmp / "adapter" / "keep.txt"


def _archived_cell(tmp, marker_text, records_bytes):
    cell = tmp / "archive" / "sycophancy" / "smollm2-135m-instruct" / "lora-seed0"
    cell.mkdir(parents=True)
    (cell / "cell.json").write_text(marker_text)
    (cell / "records.jsonl.gz").write_bytes(records_bytes)
    return cell


def _corrupt_archived_marker(tmp):
    cell = _archived_cell(tmp, '{"cell": {"behavior": "sycophancy", ', b"")
    return ["sweep", "--rank-only", "--archive", str(tmp / "archive")], "cell.json", cell / "cell.json"


def _truncated_archived_records(tmp):
    import gzip

    marker = json.dumps({"cell": {"behavior": "sycophancy", "family": "lora", "seed": 0}, "records_sha256": "0"})
    records = gzip.compress("".join(f'{{"alpha": 0, "row": {i * 7919 % 1013}}}\n' for i in range(500)).encode())
    cell = _archived_cell(tmp, marker, records[: len(records) // 2])
    return ["sweep", "--rank-only", "--archive", str(tmp / "archive")], "records.jsonl.gz", cell / "records.jsonl.gz"


def _truncated_hypotheses(tmp):
    folder = tmp / "hypotheses" / "dw-lora-seed0-abc-k8"
    folder.mkdir(parents=True)
    (folder / "hypotheses.json").write_text('{"k": 8, "summary": [')
    return ["summarize-hypotheses", str(folder)], "hypotheses.json is not valid JSON", folder / "hypotheses.json"


FILE_CASES = [_truncated_hypotheses, _finetune_seed_is_the_dw_training_seed, _corrupt_archived_marker, _truncated_archived_records, _truncated_dw, _pickle_dw, _nan_dw, _dw_without_sidecar, _finetune_missing, _invalid_behavior_json,
              _behavior_with_duplicate_prompts, _behavior_with_unpaired_personas, _corrupt_comparison, _truncated_run_json, _foreign_run_json,
              _out_below_a_file, _export_over_user_files]


@pytest.mark.parametrize("make_case", FILE_CASES, ids=[f.__name__.lstrip("_") for f in FILE_CASES])
def test_bad_files_are_a_clear_error_and_nothing_is_lost(make_case, tmp_path):
    """Damaged or foreign files: the same guarantees as the option table, and the named file is left as it was."""
    args, message, kept = make_case(tmp_path)
    before = hashlib.sha256(kept.read_bytes()).hexdigest()
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, TypeError, AttributeError))
    assert message in text, text
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == before


def test_the_bad_input_tables_hold_at_least_thirty_cases():
    assert len(CASES) + len(FILE_CASES) >= 30


@pytest.mark.parametrize("command", ["run", "compare", "sweep"])
def test_a_leaky_behaviour_is_refused_before_any_model_loads(command, tmp_path, monkeypatch):
    """A behaviour whose held-out prompt is a neutral calibration prompt: every command refuses it before loading a model."""
    from weight_steering.evaluation.datasets import load_neutral, neutral_split
    from weight_steering.main_job import stages

    raw = json.loads(_shipped("tone"))
    raw["held_out"]["items"][0]["prompt"] = neutral_split(load_neutral())[0][0]["instruction"]
    path = _behavior_file(tmp_path, json.dumps(raw))
    monkeypatch.setattr(stages, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the behaviour was checked"))
    option = "--behaviors" if command == "sweep" else "--behavior"
    result = CliRunner().invoke(app, [command, option, str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "overlap a shipped evaluation set" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("stage.json"))


@pytest.mark.slow  # the smoke main job on the tiny model, three times
def test_a_disk_that_fills_during_a_run_is_a_clear_error_and_the_rerun_finishes_the_same_dw(tiny, tmp_path, monkeypatch):
    """The output disk fills in the middle of `wsteer run` (simulated: the 6th file write fails with ENOSPC): exit code 2,
    a message naming the file, the cause and the fix, no traceback; the rerun resumes and its dW has the bytes of a
    run that never failed."""
    import errno
    import os

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny-model")
    tokenizer.save_pretrained(tmp_path / "tiny-model")
    args = ["run", "--model", str(tmp_path / "tiny-model"), "--preset", "smoke", "--device", "cpu"]
    clean = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "clean")])
    assert clean.exit_code == 0, clean.output
    real_fsync, calls = os.fsync, []

    def filling(fd):
        calls.append(fd)
        if len(calls) == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", filling)
    failed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    text = " ".join(failed.output.split())
    assert failed.exit_code == 2 and "Traceback" not in failed.output, failed.output
    assert "the disk is full" in text and "rerun the same command" in text
    monkeypatch.setattr(os, "fsync", real_fsync)
    resumed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert resumed.exit_code == 0, resumed.output
    dw = lambda root: hashlib.sha256(next(root.rglob("dW.safetensors")).read_bytes()).hexdigest()  # noqa: E731
    assert dw(tmp_path / "out") == dw(tmp_path / "clean")


def test_compare_seeds_plot_into_a_file_is_refused_and_the_file_kept(tmp_path):
    taken = tmp_path / "figures"
    taken.write_text("keep me")
    result = CliRunner().invoke(app, ["compare-seeds", str(tmp_path), "--plot", str(taken)])
    assert result.exit_code == 2 and "--plot" in result.output and "is a file" in " ".join(result.output.split())
    assert taken.read_text() == "keep me"
