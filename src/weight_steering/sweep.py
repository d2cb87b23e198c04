"""Sweeps: adapter families × seeds × behaviours, one resumable cell each, run locally or on Ray.

A cell is one (behaviour, family, training seed): train θ⁺ and θ⁻, take dW, evaluate it at
α ∈ {−1, 0, +1} on the job's rows. Cells of one behaviour share the generated data (one data seed)
and the unsteered α = 0 evaluation. Every stage is a resumable stage of :mod:`weight_steering.pipeline`,
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

import gzip
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from .analyse import summarise
from .artifacts import atomic_write, file_sha256, read_json, read_jsonl, stable_hash, write_json, write_jsonl
from .behaviors import load_behavior
from .diff import load_dw
from .pipeline import RunConfig, evaluate_base, evaluate_dw, prepare_job, dw_stage
from .stage_cache import run_stage, stage_problem
from .train import ADAPTER_FAMILIES, adapter_family, resolve_train_config

log = logging.getLogger(__name__)

SWEEP_ALPHAS = (-1.0, 0.0, 1.0)
EXECUTORS = ("local", "ray")


class SweepError(ValueError):
    """Bad sweep input (seeds, executor, Ray missing); the message names the problem and the fix."""


@dataclass(frozen=True)
class Cell:
    """One sweep cell: a behaviour, an adapter family, a training seed and the data-sampling seed.

    ``data_seed`` None means "the same as ``seed``": seed s then varies the generated data as well as
    the adapter initialisation and batch order, so intervals over seeds cover both sources of
    variation. A fixed ``data_seed`` (the same for every cell) isolates training variation on purpose.
    """

    behavior: str
    family: str
    seed: int
    data_seed: int | None = None

    @property
    def data(self) -> int:
        return self.seed if self.data_seed is None else self.data_seed

    @property
    def name(self) -> str:
        suffix = "" if self.data_seed is None else f"-data{self.data_seed}"
        return f"{self.behavior}/{self.family}-seed{self.seed}{suffix}"


def plan_cells(behaviors, families, seeds, data_seed: int | None = None) -> list[Cell]:
    """Validated cells in run order: seed-major, so every family has seed 0 before any has seed 1.

    ``data_seed``: None (default) samples each cell's data with its own seed; an integer fixes one
    data seed for every cell.

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
    if data_seed is not None and (not isinstance(data_seed, int) or data_seed < 0):
        raise SweepError(f"the data seed must be a non-negative integer or None (each cell's own seed); got {data_seed!r}")
    names = [load_behavior(b).name for b in behaviors]
    return [Cell(b, f, s, data_seed) for s in seeds for b in names for f in families]


def _model_slug(config: RunConfig) -> str:
    return Path(config.model).name.lower().replace("/", "_") or "model"


def cell_dir(config: RunConfig, cell: Cell, root: str | Path | None = None) -> Path:
    """``<root>/<model>/<behaviour>/<family>-seed<seed>``; ``root`` defaults to ``<out>/sweep``
    (an archive folder is laid out the same way)."""
    root = Path(config.out) / "sweep" if root is None else Path(root)
    return root / _model_slug(config) / cell.behavior / cell.name.split("/", 1)[1]


def cell_config(config: RunConfig, cell: Cell) -> RunConfig:
    """The main-job config of one cell: ``config`` with the cell's behaviour, family, training seed, data
    seed (:attr:`Cell.data`) and α grid.

    The learning rate is the family default unless ``config.train.learning_rate`` was set.
    """
    train = replace(config.train, family=cell.family, seed=cell.seed)
    return replace(config, behavior=cell.behavior, alphas=SWEEP_ALPHAS, train=resolve_train_config(train),
                   generation=replace(config.generation, seed=cell.data))


def cell_key(config: RunConfig, cell: Cell) -> str:
    """Hash of everything that determines a cell's result (not ``out`` or ``force``), including the
    behaviour file's content (its training prompts, personas and held-out probe), not only its name."""
    settings = asdict(cell_config(config, cell))
    settings.pop("out"), settings.pop("force")
    for name, default in (("thinking", False), ("ood_limit", None)):  # settings added later enter the key only away from
        if settings[name] == default:                                     # their defaults, so archived cells keep their keys
            settings.pop(name)
    return stable_hash({"cell": asdict(cell), "config": settings, "behavior": load_behavior(cell.behavior).to_dict()})


def load_cell(config: RunConfig, cell: Cell) -> dict | None:
    """The finished cell's ``cell.json`` plus its records, or ``None`` when the cell is not done.

    A cell counts as done when its stage marker carries :func:`cell_key` and every file it lists is intact
    (:func:`weight_steering.stage_cache.stage_problem`); a started but damaged or outdated cell is reported
    with a warning (it will be recomputed).
    """
    directory = cell_dir(config, cell)
    problem = stage_problem(directory, cell_key(config, cell))
    if problem == "not started":
        return None
    if problem is not None:
        log.warning("cell %s is damaged or outdated (%s); recomputing the cell", cell.name, problem)
        return None
    return {**read_json(directory / "cell.json"), "records": read_jsonl(directory / "records.jsonl")}


def archive_cell(config: RunConfig, cell: Cell, archive: str | Path) -> Path:
    """Copy a finished cell's ``cell.json`` and ``records.jsonl.gz`` into ``archive``; return its folder.

    The records are gzipped (the marker keeps the SHA-256 of the uncompressed file); the marker is
    written last and atomically, so a half-copied archive cell is never taken as finished.

    Raises:
        SweepError: the cell is not finished in ``config.out``.
    """
    if load_cell(replace(config, force=False), cell) is None:
        raise SweepError(f"cell {cell.name} is not finished under {config.out}; run the sweep first")
    source = cell_dir(config, cell)
    target = cell_dir(config, cell, archive)
    with atomic_write(target / "records.jsonl.gz", "wb") as handle:
        handle.write(gzip.compress((source / "records.jsonl").read_bytes(), mtime=0))
    write_json(target / "cell.json", read_json(source / "cell.json"))
    return target


def restore_cells(config: RunConfig, cells: list[Cell], archive: str | Path) -> list[Cell]:
    """Copy the archived result of every cell that is unfinished in ``config.out`` into place.

    An archived cell is taken only when its marker carries this cell's key and its decompressed
    records match the marker's SHA-256; otherwise it is skipped with a warning (and computed).
    Returns the restored cells.
    """
    restored = []
    for cell in cells:
        source = cell_dir(config, cell, archive)
        if not (source / "cell.json").is_file() or load_cell(replace(config, force=False), cell) is not None:
            continue
        try:
            info = read_json(source / "cell.json")
            records = gzip.decompress((source / "records.jsonl.gz").read_bytes())
        except (OSError, ValueError, EOFError) as err:
            log.warning("archived cell %s is unreadable (%s); it will be computed", cell.name, err)
            continue
        if info.get("key") != cell_key(config, cell):
            log.warning("archived cell %s was made with other settings; it will be computed", cell.name)
            continue
        if hashlib.sha256(records).hexdigest() != info.get("records_sha256"):
            log.warning("archived cell %s: records do not match its marker; it will be computed", cell.name)
            continue

        def write(directory: Path, info=info, records=records) -> None:
            with atomic_write(directory / "records.jsonl", "wb") as handle:
                handle.write(records)
            write_json(directory / "cell.json", info)

        run_stage(f"restore cell {cell.name}", cell_dir(config, cell), info["key"], write, force=True)
        restored.append(cell)
    if restored:
        log.info("restored %d finished cells from %s", len(restored), archive)
    return restored


def archived_cells(archive: str | Path, behaviors=None, families=None, seeds=None) -> list[dict]:
    """Every finished cell in an archive folder, as recorded (``cell.json`` plus its records).

    Unlike :func:`restore_cells` this does not ask whether a cell matches today's settings: it
    rebuilds a ranking from committed results alone. Each cell's records are checked against the
    SHA-256 in its marker. ``behaviors`` / ``families`` / ``seeds`` filter the cells (None: all).

    Raises:
        SweepError: the archive is missing, or a cell's records do not match its marker.
    """
    archive = Path(archive)
    if not archive.is_dir():
        raise SweepError(f"archive {archive} is not a folder; give the folder a sweep wrote with --archive")
    cells = []
    for marker in sorted(archive.glob("*/*/*/cell.json")):
        try:
            info = read_json(marker)
            cell = info["cell"]
        except (ValueError, KeyError) as err:
            raise SweepError(f"archived cell marker {marker} is unreadable ({err}); restore it with `git checkout -- {marker}`") from err
        if (behaviors and cell["behavior"] not in behaviors) or (families and cell["family"] not in families) or (seeds and cell["seed"] not in seeds):
            continue
        try:
            records = gzip.decompress((marker.parent / "records.jsonl.gz").read_bytes())
        except (OSError, EOFError) as err:
            raise SweepError(f"archived records {marker.parent / 'records.jsonl.gz'} are missing or truncated ({err}); "
                             f"restore them with `git checkout -- {marker.parent}`") from err
        if hashlib.sha256(records).hexdigest() != info.get("records_sha256"):
            raise SweepError(f"archived cell {marker.parent}: records do not match the SHA-256 in its cell.json; restore it from git")
        cells.append({**info, "records": [json.loads(line) for line in records.decode().splitlines() if line.strip()]})
    return cells


def _archive_missing(config: RunConfig, finished: list[Cell], archive: str | Path | None) -> None:
    """Archive the finished cells that the archive lacks or holds in another version."""
    if archive is None:
        return
    for cell in finished:
        marker = cell_dir(config, cell, archive) / "cell.json"
        try:
            same = read_json(marker)["records_sha256"] == read_json(cell_dir(config, cell) / "cell.json")["records_sha256"]
        except (OSError, ValueError, KeyError):
            same = False
        if not same:
            archive_cell(config, cell, archive)


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
        _archive_missing(config, [c for c, f in zip(cells, finished) if f is not None], archive)
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
    _archive_missing(config, [c for c, f in zip(cells, finished) if f is not None], archive)
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
