"""The sweep's archive: finished cells kept in a folder (committed, say), restored before a run and listed for ranking without recomputing."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path

from ..artifacts import atomic_write, read_json, write_json
from ..evaluation.scoring import upgrade_records
from ..main_job.config import RunConfig
from ..stage_cache import run_stage
from .cells import Cell, SweepError, cell_dir, cell_key, load_cell

log = logging.getLogger(__name__)


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
        cells.append({**info, "records": upgrade_records([json.loads(line) for line in records.decode().splitlines() if line.strip()])})
    return cells


def archive_missing(config: RunConfig, finished: list[Cell], archive: str | Path | None) -> None:
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
