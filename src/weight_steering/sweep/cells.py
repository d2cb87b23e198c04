"""The sweep's cells: one (behaviour, adapter family, seed) each, where it lives on disk, its key and its finished result."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..artifacts import read_json, stable_hash
from ..core.adapters import adapter_family, resolve_train_config, train_key
from ..core.behavior_files import load_behavior
from ..evaluation.scoring import read_records
from ..main_job.config import RunConfig
from ..stage_cache import stage_problem

log = logging.getLogger(__name__)

SWEEP_ALPHAS = (-1.0, 0.0, 1.0)


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


def model_slug(config: RunConfig) -> str:
    return Path(config.model).name.lower().replace("/", "_") or "model"


def cell_dir(config: RunConfig, cell: Cell, root: str | Path | None = None) -> Path:
    """``<root>/<model>/<behaviour>/<family>-seed<seed>``; ``root`` defaults to ``<out>/sweep``
    (an archive folder is laid out the same way)."""
    root = Path(config.out) / "sweep" if root is None else Path(root)
    return root / model_slug(config) / cell.behavior / cell.name.split("/", 1)[1]


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
    settings["train"] = train_key(settings["train"])
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
    return {**read_json(directory / "cell.json"), "records": read_records(directory / "records.jsonl")}
