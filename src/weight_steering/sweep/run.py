"""Sweeps: adapter families × seeds × behaviours, one resumable cell each, run locally or on Ray.

A cell is one (behaviour, family, training seed): train θ⁺ and θ⁻, take dW, evaluate it at
α ∈ {−1, 0, +1} on the job's rows. Cells of one behaviour share the generated data (one data seed)
and the unsteered α = 0 evaluation. Every stage is a resumable stage of :mod:`weight_steering.main_job.run`,
and so is the cell itself (:func:`weight_steering.stage_cache.run_stage`, keyed by :func:`cell_key`): it writes
``records.jsonl`` and ``cell.json`` (the cell's result: summary, ‖dW‖, stage folders, the records' SHA-256), then the
stage marker, into ``<out>/sweep/<model>/<behaviour>/<family>-seed<s>/``. A sweep killed at any point
(SIGKILL included) and rerun skips finished cells, recomputes damaged ones with a warning and
never reads a half-written file, because every file is written atomically and markers come last.

Executors: ``local`` (default; one process, one model) and ``ray`` (each cell a Ray task, one per
GPU when the cluster has GPUs, else one at a time using all CPU cores; local Ray on a laptop).

Archive: a finished cell's result is small (its marker and records, not its weights), so
``archive=DIR`` copies each cell's ``cell.json`` and gzipped records into
``DIR/<model>/<behaviour>/<family>-seed<s>/`` as soon as it finishes, and restores archived cells
into ``<out>`` before planning. A sweep spread over several machines or sessions (e.g. a repository
folder that is committed) then never recomputes a finished cell, and the ranking can be rebuilt
from the archive alone. A restored cell is checked like any other: same key, records SHA-256.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

from tqdm.auto import tqdm

from ..artifacts import atomic_write, file_sha256, read_json, write_json, write_jsonl
from ..core.adapters import ADAPTER_FAMILIES
from ..core.diff import load_dw
from ..evaluation.effects import summarise
from ..main_job.config import RunConfig
from ..main_job.stages import dw_stage, evaluate_base, evaluate_dw, prepare_job
from ..stage_cache import run_stage
from .archive import archive_cell, archive_missing, restore_cells
from .cells import SWEEP_ALPHAS, Cell, SweepError, cell_config, cell_dir, cell_key, load_cell, model_slug, plan_cells
from .ranking import rank_families
from .render import plot_forest, render_ranking

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")


def run_cell(job, config: RunConfig, cell: Cell) -> dict:
    """Train, diff and evaluate one cell on a prepared job, as one stage of the stage cache (reused when finished).

    Returns:
        The cell's ``cell.json`` content (with ``summary``, ``norm_dw``, stage dirs and seconds).
    """
    settings = cell_config(config, cell)

    def compute(directory: Path) -> None:
        started = time.perf_counter()
        dw_dir = dw_stage(job, settings.train)
        dw = load_dw(dw_dir / "dW.safetensors", job.model, base_hash=job.base_hash)
        records = evaluate_dw(job, dw, dw_dir, SWEEP_ALPHAS)
        write_jsonl(directory / "records.jsonl", records)
        write_json(directory / "cell.json", {
            "key": cell_key(config, cell), "cell": asdict(cell), "learning_rate": settings.train.learning_rate,
            "norm_dw": dw.metadata["norm_dw"], "cos_delta": dw.metadata["cos_delta_positive_minus_delta_negative"],
            "n_tensors": dw.metadata["n_tensors"], "train_logs": dw.metadata.get("train_logs", {}),
            "dw_dir": str(dw_dir), "seconds": time.perf_counter() - started,
            "summary": summarise(records, job.behavior), "records_sha256": file_sha256(directory / "records.jsonl"),
        })

    directory = run_stage(f"cell {cell.name}", cell_dir(config, cell), cell_key(config, cell), compute, force=config.force)
    return read_json(directory / "cell.json")


def _prepare(config: RunConfig, behavior: str, model=None, tokenizer=None):
    job = prepare_job(replace(config, behavior=behavior), model, tokenizer)
    evaluate_base(job)
    return job


def _run_local(config: RunConfig, pending: list[Cell], progress, done, model=None, tokenizer=None) -> None:
    jobs: dict = {}  # one job (data + α = 0 evaluation) per (behaviour, data seed)
    for cell in pending:
        if (cell.behavior, cell.data) not in jobs:
            job = _prepare(cell_config(config, cell), cell.behavior, model, tokenizer)
            model, tokenizer = job.model, job.tokenizer
            jobs[(cell.behavior, cell.data)] = job
        progress.set_postfix_str(cell.name)
        run_cell(jobs[(cell.behavior, cell.data)], config, cell)
        done(cell)
        progress.update(1)


def _ray_prepare(config: RunConfig, behavior: str) -> str:
    return _prepare(config, behavior).data_sha


def _ray_cell(config: RunConfig, cell: Cell) -> Cell:
    job = prepare_job(cell_config(config, cell))  # reuses the data stage the driver waited for
    run_cell(job, config, cell)
    return cell


def _run_ray(config: RunConfig, pending: list[Cell], progress, done) -> None:
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
    firsts: dict = {}
    for cell in pending:  # one data stage (and α = 0 evaluation) per (behaviour, data seed)
        firsts.setdefault((cell.behavior, cell.data), cell)
    ray.get([prepare.remote(cell_config(config, c), c.behavior) for c in firsts.values()])
    waiting = [run.remote(config, cell) for cell in pending]
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        cell = ray.get(ready[0])
        done(cell)
        progress.set_postfix_str(cell.name)
        progress.update(1)


def run_sweep(
    config: RunConfig, behaviors=("sycophancy",), families=None, seeds=(0, 1, 2), executor: str = "local",
    model=None, tokenizer=None, compute: bool = True, archive: str | Path | None = None, data_seed: int | None = None,
) -> tuple[list[dict], int]:
    """Run every unfinished cell of behaviours × families × seeds and return all finished cells.

    Args:
        config: the shared settings (model, data seed and sizes, training sizes, eval rows, out).
        behaviors, families, seeds: the grid; ``families=None`` means every registered family.
        executor: ``"local"`` or ``"ray"``.
        model, tokenizer: an already loaded model for the local executor (e.g. the tiny test model).
        compute: ``False`` only collects the finished cells of the grid (for ranking a partial sweep).
        archive: a folder of finished cells (see :func:`archive_cell`): restored before planning,
            and every cell this call finishes is copied into it at once.
        data_seed: None (default): each cell samples its data with its own seed (:class:`Cell`); an
            integer: one fixed data seed for every cell.

    Returns:
        ``(cells, n_computed)``: one dict per cell (``cell.json`` plus ``records``) in
        :func:`plan_cells` order, and how many cells this call computed.

    Raises:
        SweepError: unknown executor, bad seeds, Ray not installed, an archive path that is a file; AdapterFamilyError,
        BehaviorError: unknown names (the known ones are listed). Finished cells stay on disk.
    """

    if executor not in EXECUTORS:
        raise SweepError(f"unknown executor '{executor}'; choose one of {', '.join(EXECUTORS)}")
    if archive is not None and Path(archive).exists() and not Path(archive).is_dir():
        raise SweepError(f"--archive {archive} is a file; give a folder (it is created if missing)")
    cells = plan_cells(behaviors, families or list(ADAPTER_FAMILIES), seeds, data_seed)
    if archive is not None and not config.force:
        restore_cells(config, cells, archive)
    if config.force:
        pending = cells
    else:
        pending = [c for c in cells if load_cell(config, c) is None]
    if not compute:
        finished = [load_cell(config, c) for c in cells]
        archive_missing(config, [c for c, f in zip(cells, finished) if f is not None], archive)
        if pending:
            log.warning("ranking %d of %d cells; not finished: %s", len(cells) - len(pending), len(cells), [c.name for c in pending])
        return [f for f in finished if f is not None], 0
    log.info("sweep: %d cells, %d already finished", len(cells), len(cells) - len(pending))
    def done(cell: Cell) -> None:
        if archive is not None:
            archive_cell(config, cell, archive)

    with tqdm(total=len(cells), initial=len(cells) - len(pending), desc="sweep cells", unit="cell", dynamic_ncols=True) as progress:
        if pending and executor == "local":
            _run_local(config, pending, progress, done, model, tokenizer)
        elif pending:
            _run_ray(config, pending, progress, done)
    finished = [load_cell(replace(config, force=False), c) for c in cells]
    archive_missing(config, [c for c, f in zip(cells, finished) if f is not None], archive)
    missing = [c.name for c, f in zip(cells, finished) if f is None]
    if missing:
        raise SweepError(f"cells did not finish: {missing}")
    return finished, len(pending)


def write_ranking(config: RunConfig, cells: list[dict], command: str, wall_seconds: float | None = None, n_computed: int | None = None) -> dict:
    """Rank the families of ``cells`` and write ``ranking.md``, ``ranking.json`` and ``forest.png``.

    Files go to ``<out>/sweep/<model>/``. Returns ``{"markdown", "json", "forest"}`` paths.
    """

    directory = Path(config.out) / "sweep" / model_slug(config)
    ranking = rank_families(cells)
    markdown = directory / "ranking.md"
    with atomic_write(markdown) as handle:
        handle.write(render_ranking(ranking, command, wall_seconds, n_computed))
    write_json(directory / "ranking.json", {"command": command, "wall_seconds": wall_seconds, "cells_computed": n_computed,
                                           "ranking": ranking.to_dict(orient="records")})
    return {"markdown": markdown, "json": directory / "ranking.json", "forest": plot_forest(ranking, directory / "forest.png")}
