"""Sweeps: adapter families × seeds × behaviours, one resumable cell each, run locally or on Ray.

A cell is one (behaviour, family, training seed): train θ⁺ and θ⁻, take dW, evaluate it at
α ∈ {−1, 0, +1} on the job's rows. Cells of one behaviour share the generated data (one data seed)
and the unsteered α = 0 evaluation. Every stage is a resumable stage of :mod:`weight_steering.pipeline`;
the cell itself writes ``records.jsonl`` and then ``cell.json`` (its marker, with the records'
SHA-256) into ``<out>/sweep/<model>/<behaviour>/<family>-seed<s>/``. A sweep killed at any point
(SIGKILL included) and rerun skips finished cells, recomputes damaged ones with a warning and
never reads a half-written file, because every file is written atomically and markers come last.

Executors: ``local`` (default; one process, one model) and ``ray`` (each cell a Ray task, one per
GPU when the cluster has GPUs, else one at a time using all CPU cores; local Ray on a laptop).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from .analyse import summarise
from .artifacts import atomic_write, file_sha256, read_json, read_jsonl, stable_hash, write_json, write_jsonl
from .behaviors import load_behavior
from .diff import load_dw
from .pipeline import RunConfig, evaluate_base, evaluate_dw, prepare_job, train_dw
from .train import ADAPTER_FAMILIES, adapter_family, resolve_train_config

log = logging.getLogger(__name__)

SWEEP_ALPHAS = (-1.0, 0.0, 1.0)
EXECUTORS = ("local", "ray")


class SweepError(ValueError):
    """Bad sweep input (seeds, executor, Ray missing); the message names the problem and the fix."""


@dataclass(frozen=True)
class Cell:
    """One sweep cell: a behaviour, an adapter family and a training seed."""

    behavior: str
    family: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.behavior}/{self.family}-seed{self.seed}"


def plan_cells(behaviors, families, seeds) -> list[Cell]:
    """Validated cells in run order: seed-major, so every family has seed 0 before any has seed 1.

    Raises:
        AdapterFamilyError: an unknown family (lists the known ones).
        BehaviorError: an unknown behaviour (lists the shipped ones).
        SweepError: no behaviours, families or seeds; a negative or repeated seed.
    """
    behaviors, families, seeds = list(behaviors), list(families), [int(s) for s in seeds]
    if not behaviors or not families or not seeds:
        raise SweepError("a sweep needs at least one behaviour, one family and one seed (e.g. --families lora --seeds 0)")
    bad = [s for s in seeds if s < 0]
    if bad or len(set(seeds)) != len(seeds):
        raise SweepError(f"seeds must be distinct non-negative integers; got {seeds}")
    for family in families:
        adapter_family(family)
    names = [load_behavior(b).name for b in behaviors]
    return [Cell(b, f, s) for s in seeds for b in names for f in families]


def _model_slug(config: RunConfig) -> str:
    return Path(config.model).name.lower().replace("/", "_") or "model"


def cell_dir(config: RunConfig, cell: Cell) -> Path:
    """``<out>/sweep/<model>/<behaviour>/<family>-seed<seed>``."""
    return Path(config.out) / "sweep" / _model_slug(config) / cell.behavior / f"{cell.family}-seed{cell.seed}"


def cell_config(config: RunConfig, cell: Cell) -> RunConfig:
    """The main-job config of one cell: ``config`` with the cell's behaviour, family, seed and α grid.

    The learning rate is the family default unless ``config.train.learning_rate`` was set.
    """
    train = replace(config.train, family=cell.family, seed=cell.seed)
    return replace(config, behavior=cell.behavior, alphas=SWEEP_ALPHAS, train=resolve_train_config(train))


def cell_key(config: RunConfig, cell: Cell) -> str:
    """Hash of everything that determines a cell's result (not ``out`` or ``force``)."""
    settings = asdict(cell_config(config, cell))
    settings.pop("out"), settings.pop("force")
    return stable_hash({"cell": asdict(cell), "config": settings})


def load_cell(config: RunConfig, cell: Cell) -> dict | None:
    """The finished cell's ``cell.json`` plus its records, or ``None`` when the cell is not done.

    A cell whose marker is unreadable, carries another key, or whose records do not match the
    recorded SHA-256 counts as not done, with a warning (it will be recomputed).
    """
    directory = cell_dir(config, cell)
    marker = directory / "cell.json"
    if not marker.exists():
        return None
    try:
        info = read_json(marker)
        if info.get("key") != cell_key(config, cell):
            log.warning("cell %s was made with other settings; recomputing it", cell.name)
            return None
        records_path = directory / "records.jsonl"
        if not records_path.is_file() or file_sha256(records_path) != info["records_sha256"]:
            log.warning("cell %s: records.jsonl is missing or damaged; recomputing the cell", cell.name)
            return None
        return {**info, "records": read_jsonl(records_path)}
    except (ValueError, KeyError) as err:
        log.warning("cell %s: unreadable marker (%s); recomputing the cell", cell.name, err)
        return None


def run_cell(job, config: RunConfig, cell: Cell) -> dict:
    """Train, diff and evaluate one cell on a prepared job; write its records and marker.

    Returns:
        The cell's ``cell.json`` content (with ``summary``, ``norm_dw``, stage dirs and seconds).
    """
    started = time.perf_counter()
    settings = cell_config(config, cell)
    dw_dir = train_dw(job, settings.train)
    dw = load_dw(dw_dir / "dW.safetensors", job.model, base_hash=job.base_hash)
    records = evaluate_dw(job, dw, dw_dir, SWEEP_ALPHAS)
    directory = cell_dir(config, cell)
    write_jsonl(directory / "records.jsonl", records)
    info = {
        "key": cell_key(config, cell), "cell": asdict(cell), "learning_rate": settings.train.learning_rate,
        "norm_dw": dw.metadata["norm_dw"], "cos_delta": dw.metadata["cos_delta_positive_minus_delta_negative"],
        "n_tensors": dw.metadata["n_tensors"], "train_logs": dw.metadata.get("train_logs", {}),
        "dw_dir": str(dw_dir), "seconds": time.perf_counter() - started,
        "summary": summarise(records), "records_sha256": file_sha256(directory / "records.jsonl"),
    }
    write_json(directory / "cell.json", info)
    return info


def _prepare(config: RunConfig, behavior: str, model=None, tokenizer=None):
    job = prepare_job(replace(config, behavior=behavior), model, tokenizer)
    evaluate_base(job)
    return job


def _run_local(config: RunConfig, pending: list[Cell], progress, model=None, tokenizer=None) -> None:
    jobs: dict = {}
    for cell in pending:
        if cell.behavior not in jobs:
            job = _prepare(config, cell.behavior, model, tokenizer)
            model, tokenizer = job.model, job.tokenizer
            jobs[cell.behavior] = job
        progress.set_postfix_str(cell.name)
        run_cell(jobs[cell.behavior], config, cell)
        progress.update(1)


def _ray_prepare(config: RunConfig, behavior: str) -> str:
    return _prepare(config, behavior).data_sha


def _ray_cell(config: RunConfig, cell: Cell) -> str:
    job = prepare_job(replace(config, behavior=cell.behavior))  # reuses the data stage the driver waited for
    run_cell(job, config, cell)
    return cell.name


def _run_ray(config: RunConfig, pending: list[Cell], progress) -> None:
    try:
        import ray
    except ImportError as err:
        raise SweepError("--executor ray needs Ray: pip install 'weight-steering[ray]' (or pip install 'ray>=2.40')") from err
    import os

    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    gpus = ray.cluster_resources().get("GPU", 0)
    resources = {"num_gpus": 1} if gpus else {"num_cpus": max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))}
    prepare = ray.remote(**resources)(_ray_prepare)
    run = ray.remote(**resources)(_ray_cell)
    ray.get([prepare.remote(config, b) for b in dict.fromkeys(c.behavior for c in pending)])
    waiting = [run.remote(config, cell) for cell in pending]
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        progress.set_postfix_str(ray.get(done[0]))
        progress.update(1)


def run_sweep(
    config: RunConfig, behaviors=("sycophancy",), families=None, seeds=(0, 1, 2), executor: str = "local",
    model=None, tokenizer=None, compute: bool = True,
) -> tuple[list[dict], int]:
    """Run every unfinished cell of behaviours × families × seeds and return all finished cells.

    Args:
        config: the shared settings (model, data seed and sizes, training sizes, eval rows, out).
        behaviors, families, seeds: the grid; ``families=None`` means every registered family.
        executor: ``"local"`` or ``"ray"``.
        model, tokenizer: an already loaded model for the local executor (e.g. the tiny test model).
        compute: ``False`` only collects the finished cells of the grid (for ranking a partial sweep).

    Returns:
        ``(cells, n_computed)``: one dict per cell (``cell.json`` plus ``records``) in
        :func:`plan_cells` order, and how many cells this call computed.

    Raises:
        SweepError: unknown executor, bad seeds, Ray not installed; AdapterFamilyError,
        BehaviorError: unknown names (the known ones are listed). Finished cells stay on disk.
    """

    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor '{executor}'; choose one of {', '.join(EXECUTORS)}")
    cells = plan_cells(behaviors, families or list(ADAPTER_FAMILIES), seeds)
    if config.force:
        pending = cells
    else:
        pending = [c for c in cells if load_cell(config, c) is None]
    if not compute:
        finished = [load_cell(config, c) for c in cells]
        if pending:
            log.warning("ranking %d of %d cells; not finished: %s", len(cells) - len(pending), len(cells), [c.name for c in pending])
        return [f for f in finished if f is not None], 0
    log.info("sweep: %d cells, %d already finished", len(cells), len(cells) - len(pending))
    with tqdm(total=len(cells), initial=len(cells) - len(pending), desc="sweep cells", unit="cell", dynamic_ncols=True) as progress:
        if pending and executor == "local":
            _run_local(config, pending, progress, model, tokenizer)
        elif pending:
            _run_ray(config, pending, progress)
    finished = [load_cell(replace(config, force=False), c) for c in cells]
    missing = [c.name for c, f in zip(cells, finished) if f is None]
    if missing:
        raise SweepError(f"cells did not finish: {missing}")
    return finished, len(pending)


def write_ranking(config: RunConfig, cells: list[dict], command: str, wall_seconds: float | None = None, n_computed: int | None = None) -> dict:
    """Rank the families of ``cells`` and write ``ranking.md``, ``ranking.json`` and ``forest.png``.

    Files go to ``<out>/sweep/<model>/``. Returns ``{"markdown", "json", "forest"}`` paths.
    """
    from .analyse import rank_families
    from .report import plot_forest, render_ranking

    directory = Path(config.out) / "sweep" / _model_slug(config)
    ranking = rank_families(cells)
    markdown = directory / "ranking.md"
    with atomic_write(markdown) as handle:
        handle.write(render_ranking(ranking, command, wall_seconds, n_computed))
    write_json(directory / "ranking.json", {"command": command, "wall_seconds": wall_seconds, "cells_computed": n_computed,
                                           "ranking": ranking.to_dict(orient="records")})
    return {"markdown": markdown, "json": directory / "ranking.json", "forest": plot_forest(ranking, directory / "forest.png")}
