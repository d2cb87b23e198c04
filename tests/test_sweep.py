import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from weight_steering.core.adapters import AdapterFamilyError
from weight_steering.core.behaviors import BehaviorError
from weight_steering.evaluation.statistics import hierarchical_bootstrap
from weight_steering.main_job.config import preset_config
from weight_steering.sweep.cells import SweepError, cell_dir, load_cell, plan_cells
from weight_steering.sweep.run import run_sweep, write_ranking

TINY = {"generation": {"n_prompts": 3, "n_personas": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 8},
        "train": {"rank": 4, "lora_alpha": 8, "learning_rate": 5e-3, "batch_size": 4}, "dilemma_limit": 3}


def _config(out, **extra):
    return preset_config("default", out=str(out), **{**TINY, **extra})


@pytest.mark.slow
def test_sweep_runs_resumes_and_ranks(tiny, tmp_path, caplog):
    model, tokenizer = tiny
    config = _config(tmp_path)
    cells, computed = run_sweep(config, ["sycophancy"], ["lora", "ia3"], [0, 1], model=model, tokenizer=tokenizer)
    assert computed == 4 and [c["cell"]["family"] for c in cells] == ["lora", "ia3", "lora", "ia3"]
    assert {r["alpha"] for r in cells[0]["records"]} == {-1.0, 0.0, 1.0}
    assert cells[0]["norm_dw"] != cells[2]["norm_dw"], "different seeds must give different dW"

    paths = write_ranking(config, cells, "test", 10.0, computed)
    ranking = json.loads(paths["json"].read_text())["ranking"]
    assert {r["family"] for r in ranking} == {"lora", "ia3"} and all(r["n_seeds"] == 2 for r in ranking)
    for r in ranking:
        assert r["id_spread_ci_low"] <= r["id_spread"] <= r["id_spread_ci_high"]
        assert r["off_target"] > 0 and r["sign_agreement"].endswith("/2")  # a mean of |Δ| on the other values: finite and not 0
    assert paths["forest"].stat().st_size > 1000 and "| lora |" in paths["markdown"].read_text()

    # Nothing left to do.
    _, computed = run_sweep(config, ["sycophancy"], ["lora", "ia3"], [0, 1], model=model, tokenizer=tokenizer)
    assert computed == 0

    # A cell without its marker (killed before the end) and a cell with damaged records are redone;
    # the redone cells reuse their finished stages and give the same numbers.
    victim, damaged = cell_dir(config, plan_cells(["sycophancy"], ["lora"], [1])[0]), cell_dir(config, plan_cells(["sycophancy"], ["ia3"], [0])[0])
    (victim / "cell.json").unlink()
    (damaged / "records.jsonl").write_text("{\"half\": ")
    with caplog.at_level(logging.WARNING):
        again, computed = run_sweep(config, ["sycophancy"], ["lora", "ia3"], [0, 1], model=model, tokenizer=tokenizer)
    assert computed == 2 and "damaged" in caplog.text
    assert [c["summary"] for c in again] == [c["summary"] for c in cells]


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_damaged_stage_file_is_detected_and_recomputed(tiny, tmp_path, caplog):
    model, tokenizer = tiny
    config = _config(tmp_path)
    cells, _ = run_sweep(config, ["sycophancy"], ["lora"], [0], model=model, tokenizer=tokenizer)
    dw_file = Path(cells[0]["dw_dir"]) / "dW.safetensors"
    dw_file.write_bytes(dw_file.read_bytes()[:100])  # truncated copy
    (cell_dir(config, plan_cells(["sycophancy"], ["lora"], [0])[0]) / "cell.json").unlink()
    with caplog.at_level(logging.WARNING):
        again, computed = run_sweep(config, ["sycophancy"], ["lora"], [0], model=model, tokenizer=tokenizer)
    assert computed == 1 and "does not match its recorded SHA-256" in caplog.text
    assert again[0]["summary"] == cells[0]["summary"]


def test_bad_sweep_input(tmp_path):
    with pytest.raises(AdapterFamilyError, match="Known families: lora"):
        plan_cells(["sycophancy"], ["lora", "nope"], [0])
    with pytest.raises(BehaviorError):
        plan_cells(["no-such-behaviour"], ["lora"], [0])
    with pytest.raises(SweepError, match="non-negative"):
        plan_cells(["sycophancy"], ["lora"], [-1])
    with pytest.raises(SweepError, match="at least one"):
        plan_cells(["sycophancy"], [], [0])
    with pytest.raises(SweepError, match="unknown executor"):
        run_sweep(_config(tmp_path), ["sycophancy"], ["lora"], [0], executor="slurm")


def test_hierarchical_bootstrap_widens_with_seed_spread():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(40), 2)
    tight = [{"m": (rng.normal(1.0, 0.1, 80), clusters)} for _ in range(3)]
    spread = [{"m": (rng.normal(mu, 0.1, 80), clusters)} for mu in (0.0, 1.0, 2.0)]
    width = {name: np.ptp(np.percentile(hierarchical_bootstrap(s)["m"], [2.5, 97.5])) for name, s in (("tight", tight), ("spread", spread))}
    assert width["spread"] > 5 * width["tight"]
    assert abs(hierarchical_bootstrap(tight)["m"].mean() - 1.0) < 0.05


def _save_tiny(tiny, path: Path) -> str:
    model, tokenizer = tiny
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


SWEEP_SCRIPT = """
import sys
from weight_steering.main_job import preset_config
from weight_steering.sweep.run import run_sweep
config = preset_config("default", model=sys.argv[1], out=sys.argv[2], **{tiny})
run_sweep(config, ["sycophancy"], ["lora", "ia3", "loha"], [0, 1], executor=sys.argv[3])
"""


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume(tiny, tmp_path):
    """A sweep killed with SIGKILL after its first finished cell resumes without redoing that cell."""
    model_path = _save_tiny(tiny, tmp_path / "tiny-model")
    out = tmp_path / "out"
    script = SWEEP_SCRIPT.format(tiny=repr(TINY))
    proc = subprocess.Popen([sys.executable, "-c", script, model_path, str(out), "local"], stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not list(out.glob("sweep/*/sycophancy/*/stage.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("sweep/*/sycophancy/*/stage.json")}  # the cell's marker comes last
    assert finished, "the first cell should have finished before the kill"
    config = preset_config("default", model=model_path, out=str(out), **TINY)
    cells, computed = run_sweep(config, ["sycophancy"], ["lora", "ia3", "loha"], [0, 1])
    assert computed == 6 - len(finished) and len(cells) == 6
    for name, mtime in finished.items():
        assert (out / "sweep" / "tiny-model" / "sycophancy" / name / "stage.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_ray_executor_matches_local(tiny, tmp_path):
    pytest.importorskip("ray", reason="Ray is a dev dependency; install with pip install -e '.[dev]'")
    model_path = _save_tiny(tiny, tmp_path / "tiny-model")
    local = preset_config("default", model=model_path, out=str(tmp_path / "local"), **TINY)
    remote = preset_config("default", model=model_path, out=str(tmp_path / "ray"), **TINY)
    expected, _ = run_sweep(local, ["sycophancy"], ["lora"], [0])
    got, computed = run_sweep(remote, ["sycophancy"], ["lora"], [0], executor="ray")
    assert computed == 1 and got[0]["summary"] == expected[0]["summary"]
    assert load_cell(remote, plan_cells(["sycophancy"], ["lora"], [0])[0]) is not None
    _, computed = run_sweep(remote, ["sycophancy"], ["lora"], [0], executor="ray")
    assert computed == 0


def test_ray_missing_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SweepError, match="pip install"):
        run_sweep(_config(tmp_path, model=str(tmp_path / "never-loaded")), ["sycophancy"], ["lora"], [0], executor="ray")


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_rank_only_collects_finished_cells_of_a_partial_sweep(tiny, tmp_path):
    model, tokenizer = tiny
    config = _config(tmp_path)
    run_sweep(config, ["sycophancy"], ["lora"], [0], model=model, tokenizer=tokenizer)
    cells, computed = run_sweep(config, ["sycophancy"], ["lora", "ia3"], [0], compute=False)
    assert computed == 0 and [c["cell"]["family"] for c in cells] == ["lora"]
    assert not cell_dir(config, plan_cells(["sycophancy"], ["ia3"], [0])[0]).exists(), "rank-only must not start work"


@pytest.mark.slow  # an end-to-end job on the tiny model
def test_archive_restores_finished_cells_into_a_fresh_output_folder(tiny, tmp_path, caplog):
    """Cells archived by one sweep are restored (not recomputed) by a sweep with an empty output
    folder; a damaged or differently-configured archived cell is computed again, with a warning."""
    model, tokenizer = tiny
    archive = tmp_path / "archive"
    first = _config(tmp_path / "first")
    cells, computed = run_sweep(first, ["sycophancy"], ["lora", "ia3"], [0], model=model, tokenizer=tokenizer, archive=archive)
    assert computed == 2 and len(list(archive.glob("*/sycophancy/*/records.jsonl.gz"))) == 2

    second = _config(tmp_path / "second")
    again, computed = run_sweep(second, ["sycophancy"], ["lora", "ia3"], [0], model=model, tokenizer=tokenizer, archive=archive)
    assert computed == 0 and [c["summary"] for c in again] == [c["summary"] for c in cells]
    assert [c["records"] for c in again] == [c["records"] for c in cells]

    damaged = cell_dir(first, plan_cells(["sycophancy"], ["ia3"], [0])[0], archive) / "records.jsonl.gz"
    damaged.write_bytes(damaged.read_bytes()[:-20])
    third = _config(tmp_path / "third")
    with caplog.at_level(logging.WARNING):
        _, computed = run_sweep(third, ["sycophancy"], ["lora", "ia3"], [0], model=model, tokenizer=tokenizer, archive=archive)
    assert computed == 1 and "ia3-seed0 is unreadable" in caplog.text
    assert load_cell(third, plan_cells(["sycophancy"], ["ia3"], [0])[0]) is not None

    other = _config(tmp_path / "fourth", train={**TINY["train"], "rank": 2})
    cells_other, _ = run_sweep(other, ["sycophancy"], ["lora"], [0], model=model, tokenizer=tokenizer, compute=False, archive=archive)
    assert cells_other == [] and "made with other settings" in caplog.text


def test_archive_that_is_a_file_is_refused_before_any_work(tiny, tmp_path):
    model, tokenizer = tiny
    config = _config(tmp_path)
    not_a_folder = tmp_path / "archive.txt"
    not_a_folder.write_text("x")
    with pytest.raises(SweepError, match="is a file; give a folder"):
        run_sweep(config, ["sycophancy"], ["lora"], [0], model=model, tokenizer=tokenizer, archive=not_a_folder)
    assert not cell_dir(config, plan_cells(["sycophancy"], ["lora"], [0])[0]).exists()


def test_seed_varies_the_data_seed_unless_fixed(tmp_path):
    from weight_steering.sweep.cells import cell_config, cell_key

    config = _config(tmp_path)
    varied = plan_cells(["sycophancy"], ["lora"], [0, 1])
    fixed = plan_cells(["sycophancy"], ["lora"], [0, 1], data_seed=0)
    assert [cell_config(config, c).generation.seed for c in varied] == [0, 1]
    assert [cell_config(config, c).generation.seed for c in fixed] == [0, 0]
    assert cell_dir(config, fixed[1]).name == "lora-seed1-data0" and cell_dir(config, varied[1]).name == "lora-seed1"
    assert cell_key(config, varied[1]) != cell_key(config, fixed[1])
    with pytest.raises(SweepError, match="data seed"):
        plan_cells(["sycophancy"], ["lora"], [0], data_seed=-1)
