"""The main job: data → train θ⁺/θ⁻ → dW → evaluate over α → analyse → report, with resumable stages.

Every stage writes into its own directory ``out/<behavior>/<model>/<stage>-<key>/``, where ``key``
hashes the stage's config and inputs. Files are written atomically and a ``stage.json`` marker is
written last; a rerun reuses every stage whose marker carries the same key and resumes at the first
unfinished one (``force=True`` redoes all).
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ..artifacts import storage_errors, write_json
from ..core.adapters import resolve_train_config
from ..core.chat import generate_text
from ..core.diff import DeltaWeights, load_dw
from ..core.models import dtype_name
from ..core.steer import check_alpha_grid, steer
from ..evaluation.effects import summarise
from .config import RUN_FORMAT, RunConfig
from .render import write_report
from .stages import dw_stage, evaluate_dw, prepare_job

log = logging.getLogger(__name__)

@dataclass
class MainJobResult:
    """What :func:`run_main_job` made: the dW (in memory and its ``dW.safetensors``), the analysis, the report.

    ``summary`` is :func:`~weight_steering.evaluation.effects.summarise` as written in ``run.json``: ``per_alpha`` and
    ``contrasts`` (long tables, one row per metric and α or contrast; nats of log-odds), ``surgical_informedness``,
    ``n_truncated``, ``ood_target``, ``behavior``. ``timings``: per stage ``{"seconds", "reused", "dir"}``.
    ``generations``: greedy replies to one held-out prompt at α = −1, 0, +1.
    """

    summary: dict
    report: Path
    dw: DeltaWeights
    dw_path: Path
    run_dir: Path
    timings: dict
    generations: list[dict]

    def contrasts(self) -> pd.DataFrame:
        """``metric, contrast, mean, ci_low, ci_high, n``: every paired α contrast with its 95% bootstrap CI."""
        return pd.DataFrame(self.summary["contrasts"])

    def contrast(self, metric: str, label: str = "α=+1 − α=+0") -> dict | None:
        """One contrast row (``mean``, ``ci_low``, ``ci_high`` in the metric's units, ``n`` rows), None if not scored."""
        return next((c for c in self.summary["contrasts"] if c["metric"] == metric and c["contrast"] == label), None)


def run_main_job(config: RunConfig, model=None, tokenizer=None, command: str | None = None) -> MainJobResult:
    """Run (or resume) the main job and return its :class:`MainJobResult` (also written as ``run.json`` and a report).

    Args:
        config: see :class:`RunConfig`; :func:`preset_config` builds one.
        model, tokenizer: an already loaded model (e.g. the tiny test model); else ``config.model`` is loaded.
        command: the command line to record in the report.

    Raises:
        ModelNotAvailableError, BehaviorError, AdapterFamilyError, DataGateError, DeltaWeightsError,
        ValueError: with messages naming the problem and the fix; finished stages stay on disk.
    """
    started = time.perf_counter()
    alphas = check_alpha_grid(config.alphas)
    job = prepare_job(config, model, tokenizer)
    train = resolve_train_config(config.train)
    dw_dir = dw_stage(job, train)  # train_dw's stages: a dW made by train_dw is reused here
    dw = load_dw(dw_dir / "dW.safetensors", job.model, base_hash=job.base_hash)
    summary = summarise(evaluate_dw(job, dw, dw_dir, alphas), job.behavior)

    t0 = time.perf_counter()
    behavior = job.behavior
    prompt = behavior.held_out.prompts()[0] if behavior.held_out else behavior.train_prompts[0]
    generations = []
    for alpha in (-1.0, 0.0, 1.0):
        with steer(job.model, dw, alpha):
            generations.append({"alpha": alpha, "prompt": prompt, "text": generate_text(job.model, job.tokenizer, prompt, 60)})
    timings = job.timings
    run_dir = job.root / f"{train.family}-seed{train.seed}{'-filtered' if config.filter_pairs else ''}{'-sizecontrol' if config.size_control else ''}"
    timings["generations + report"] = {"seconds": time.perf_counter() - t0, "reused": False, "dir": str(run_dir)}
    timings["total"] = {"seconds": time.perf_counter() - started, "reused": False, "dir": ""}
    run_info = {
        "behavior": behavior.name, "model": config.model, "family": train.family, "seed": train.seed,
        "norm_dw": dw.metadata["norm_dw"], "cos_delta": dw.metadata["cos_delta_positive_minus_delta_negative"],
        "n_tensors": dw.metadata["n_tensors"], "n_pairs": job.pair_counts["pairs"], "alphas": list(alphas),
        "command": command or " ".join(shlex.quote(a) for a in sys.argv), "timings": timings, "judge": job.judge,
        "filtered": config.filter_pairs, "device": str(job.model.device), "dtype": dtype_name(job.model.dtype),
    }
    with storage_errors(run_dir):
        report = write_report(run_dir, run_info, summary, generations)
    write_json(run_dir / "run.json", {"format": RUN_FORMAT, **run_info, "config": asdict(config), "pair_counts": job.pair_counts, "judge": job.judge,
                                      "stages": {k: v["dir"] for k, v in timings.items() if v["dir"]}, "summary": summary})
    return MainJobResult(summary=summary, report=report, dw=dw, dw_path=dw_dir / "dW.safetensors", run_dir=run_dir, timings=timings,
                         generations=generations)
