"""Main-job results across runs: a run's contrasts, its seeds and sampler, and seed-level groups of runs."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import read_json
from ..evaluation.statistics import seed_summary
from .config import RUN_FORMAT


def run_contrast(run: dict, metric: str, contrast_label: str) -> dict | None:
    """One contrast of a finished main job (its ``run.json``), or None if it was not scored. ``metric`` may be
    ``ood_target`` / ``ood_target_pooled``: the behaviour's DailyDilemmas target, action-stratified / pooled."""
    target = (run["summary"].get("ood_target") or {}).get("value")
    name = {"ood_target": f"dilemmas_{target}", "ood_target_pooled": f"dilemmas_{target}_pooled"}.get(metric, metric)
    found = next((c for c in run["summary"]["contrasts"] if c["metric"] == name and c["contrast"] == contrast_label), None)
    return None if found is None or found["n"] == 0 else found


def run_seeds(run: dict) -> tuple[int, int]:
    """``(training seed, data seed)`` of a finished main job."""
    return run["seed"], run["config"]["generation"]["seed"]


def run_sampler(run: dict) -> str:
    """The data sampler of a finished main job (a run read by :func:`load_runs`)."""
    return run["config"]["generation"]["sampler"]


def upgrade_run(run_json: dict) -> dict:
    """A ``run.json`` of any format in today's form (:data:`~weight_steering.main_job.config.RUN_FORMAT`): format 1 (no
    ``format`` field) ran before the data sampler was recorded, with the transformers sampler.

    Raises:
        ValueError: a format newer than this version reads.
    """
    version = run_json.get("format", 1)
    if version > RUN_FORMAT:
        raise ValueError(f"run.json has format {version}; this version reads up to {RUN_FORMAT}: upgrade weight-steering")
    if version == 1:
        config = run_json["config"]
        run_json = {**run_json, "config": {**config, "generation": {"sampler": "transformers", **config["generation"]}}}
    return {**run_json, "format": RUN_FORMAT}


def run_seed_groups(runs: list[dict], measures: list[tuple[str, str]]) -> list[dict]:
    """Main jobs that differ only in their seeds, with a Student-t interval over the seeds for each measure.

    Runs are grouped by behaviour, adapter family, judge filtering and data sampler; a group is kept when it has
    at least two distinct (training seed, data seed) pairs. The unit of replication is the seed: each run
    contributes its contrast mean, and :func:`~weight_steering.evaluation.statistics.seed_summary` gives mean ± t·sd/√n.

    Args:
        runs: ``run.json`` dicts (order kept within a group). measures: ``(metric, contrast label)`` pairs as in
            :func:`run_contrast`.

    Returns:
        Per group ``{"behavior", "family", "filtered", "sampler", "seeds": [(s, d), ...], "measures": [{"mean",
        "ci_low", "ci_high", "n", "per_seed": [...]} or None per measure]}`` (None where a seed lacks the measure).
    """
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["behavior"], run["family"], bool(run.get("filtered")), run_sampler(run)), []).append(run)
    out = []
    for (behavior, family, filtered, sampler), members in groups.items():
        if len({run_seeds(r) for r in members}) < 2:
            continue
        summaries = []
        for metric, label in measures:
            found = [run_contrast(r, metric, label) for r in members]
            values = [c["mean"] for c in found if c is not None]
            summaries.append(None if len(values) < len(members) else seed_summary(values))
        out.append({"behavior": behavior, "family": family, "filtered": filtered, "sampler": sampler,
                    "seeds": [run_seeds(r) for r in members], "measures": summaries})
    return out


RUN_FIELDS = ("behavior", "family", "seed", "n_pairs", "norm_dw", "summary", "config")


def load_runs(paths: list[str | Path]) -> list[dict]:
    """The ``run.json`` of finished main-job runs, from their folders or the files themselves, upgraded (:func:`upgrade_run`).

    Raises:
        FileNotFoundError: no ``run.json`` at a path. ValueError: a file that is not a finished main job's ``run.json``.
    """
    loaded = []
    for run in paths:
        path = Path(run) / "run.json" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise FileNotFoundError(f"no run.json at {path}; give the folder `wsteer run` printed its report in")
        run_json = read_json(path)
        missing = [k for k in RUN_FIELDS if k not in run_json]
        if missing:
            raise ValueError(f"{path} is not a finished main job's run.json (no {', '.join(missing)}); "
                             "give the run.json `wsteer run` wrote, or rerun that job")
        loaded.append(upgrade_run(run_json))
    return loaded
