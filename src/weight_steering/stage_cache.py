"""The stage cache: every pipeline stage is a folder keyed by the hash of its config and inputs.

A stage writes its files atomically (:mod:`weight_steering.artifacts`) and then a marker ``stage.json`` that
lists the SHA-256 of every file. A rerun reuses a stage whose marker carries the same key and whose files are
intact, and recomputes a damaged one with a warning; ``force`` recomputes. :func:`copy_finished_stages` moves
finished stages between an output root and an archive folder, so long runs resume after a stop and on another
machine.

One process computes a stage: :func:`run_stage` holds a file lock (``filelock``, an OS lock that dies with its process,
so a killed run never blocks the next) on ``<stage>/.stage.lock`` while it computes; a second process asking for the
same stage says it is waiting, then reuses what the first one finished.

A run that archives its stages records which ones it used (:func:`recording_stages`) and archives only those, so stages
of other runs that share its output root stay out of its archive. The main job (:mod:`weight_steering.main_job.run`), the sweep's cells (:mod:`weight_steering.sweep.run`), the
comparison (:mod:`weight_steering.comparison.run`), the assessments (:mod:`weight_steering.vignettes.run`) and the monitoring
experiment (:mod:`weight_steering.monitoring.run`) all run their stages through :func:`run_stage`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path

from .artifacts import atomic_write, file_sha256, read_json, storage_errors, write_json

log = logging.getLogger(__name__)

OTHER_SETTINGS = "it was made with other settings"  # a stage_problem that is no damage: the key changed
_recorders: list[set[Path]] = []  # the sets of the open recording_stages() blocks


@contextlib.contextmanager
def recording_stages():
    """Collect, inside the block, the folder of every stage :func:`run_stage` is asked for (run or reused).

    Yields the set of folders (``Path``), filled as stages are asked for; blocks may nest, and each sees every stage asked
    for while it is open. A comparison archives only these (``copy_finished_stages(..., names=...)``), not the other
    runs' stages that share its output root.
    """
    used: set[Path] = set()
    _recorders.append(used)
    try:
        yield used
    finally:
        _recorders.remove(used)


def run_stage(name: str, directory: Path, key: str, compute: Callable[[Path], None], *, force: bool = False,
              timings: dict | None = None) -> Path:
    """Run ``compute(directory)`` unless a completed, intact stage with the same key is on disk.

    The marker ``stage.json`` is written last and lists the SHA-256 of every file the stage wrote;
    a stage whose files are missing or differ from the marker (a crash, a truncated copy, an edit),
    or whose marker is unreadable, is reported with a warning and recomputed.

    Args:
        name: the stage's label in logs and ``timings``.
        directory: the stage's folder; ``key``: the hash of its config and inputs (:func:`weight_steering.artifacts.stable_hash`).
        compute: ``directory -> None`` writes the stage's files (atomically, :mod:`weight_steering.artifacts`).
        force: recompute even when a finished stage with the same key is on disk.
        timings: a dict that receives ``{name: {"seconds", "reused", "dir"}}`` (optional).

    Raises:
        StorageError: the machine cannot store the stage (full disk, read-only or non-folder path, no permission); the
            stage is left without a marker, so rerunning resumes at it. Whatever ``compute`` raises otherwise.
    """
    timings = {} if timings is None else timings
    for used in _recorders:
        used.add(Path(directory))
    started = time.perf_counter()
    if not force and stage_problem(directory, key) is None:
        return _reused(name, directory, timings)
    with _stage_lock(name, directory):
        problem = None if force else stage_problem(directory, key)  # again: another process may have finished it meanwhile
        if problem is None and not force:
            return _reused(name, directory, timings)
        if problem not in (None, "not started", OTHER_SETTINGS):  # a crash, a truncated copy, an edit: say so, then recompute
            log.warning("stage %s in %s: %s; recomputing it", name, directory, problem)
        marker = directory / "stage.json"
        with storage_errors(directory):  # a full disk, a read-only folder …: a clear error, and no marker, so a rerun resumes here
            if marker.exists():
                marker.unlink()
            compute(directory)
            seconds = time.perf_counter() - started
            files = {str(f.relative_to(directory)): file_sha256(f) for f in sorted(directory.rglob("*"))
                     if f.is_file() and f.name != "stage.json" and not f.name.startswith(".")}
            write_json(marker, {"stage": name, "key": key, "seconds": seconds, "files": files})
    timings[name] = {"seconds": seconds, "reused": False, "dir": str(directory)}
    return directory


def _reused(name: str, directory: Path, timings: dict) -> Path:
    timings[name] = {"seconds": 0.0, "reused": True, "dir": str(directory)}
    log.info("stage %s: reusing %s", name, directory)
    return directory


@contextlib.contextmanager
def _stage_lock(name: str, directory: Path):
    """Hold ``<directory>/.stage.lock`` (creating the folder); if another process holds it, say so and wait."""
    from filelock import FileLock, Timeout

    with storage_errors(directory):
        directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / ".stage.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("stage %s in %s is being computed by another process; waiting for it to finish, then reusing it", name, directory)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def stage_problem(directory: Path, key: str | None = None) -> str | None:
    """Why ``directory`` does not hold a finished stage (with ``key``, when given), or ``None`` if it does.

    The reasons, in the order they are checked: ``"not started"`` (no marker), an unreadable marker, another key
    (made with other settings), a file the marker lists that is missing or differs from its recorded SHA-256.
    """
    marker = Path(directory) / "stage.json"
    if not marker.is_file():
        return "not started"
    try:
        info = read_json(marker)
    except ValueError as err:
        return f"unreadable marker ({err})"
    if key is not None and info.get("key") != key:
        return OTHER_SETTINGS
    return _stage_problem(Path(directory), info)


def stage_is_finished(directory: Path, key: str | None = None) -> bool:
    """Whether ``directory`` holds a finished stage: a marker (with ``key``, when given) whose files are all intact."""
    return stage_problem(directory, key) is None


def copy_finished_stages(source: Path, target: Path, prefixes: tuple[str, ...], names: Collection[str] | None = None) -> list[str]:
    """Copy every finished stage directory ``source/<name>`` whose name starts with one of ``prefixes`` (and is one of
    ``names``, when given) into ``target/<name>``, unless ``target`` already holds that stage finished with the same key.

    Used both ways: to archive a run's small stages in a committed folder, and to restore them into an
    output root, so a long run resumes after a stop and on another machine (as the sweep's archive does).
    Files are copied atomically and the marker last, so a half-copied stage is never taken as finished.
    Returns the names copied.
    """
    copied = []
    if not Path(source).is_dir():
        return copied
    for directory in sorted(Path(source).iterdir()):
        if not directory.is_dir() or not directory.name.startswith(prefixes) or (names is not None and directory.name not in names):
            continue
        if not stage_is_finished(directory):
            continue
        destination = Path(target) / directory.name
        if stage_is_finished(destination, read_json(directory / "stage.json")["key"]):
            continue
        if (destination / "stage.json").exists():
            (destination / "stage.json").unlink()
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.name != "stage.json" and not path.name.startswith("."):
                with atomic_write(destination / path.relative_to(directory), "wb") as handle:
                    handle.write(path.read_bytes())
        with atomic_write(destination / "stage.json", "wb") as handle:
            handle.write((directory / "stage.json").read_bytes())
        copied.append(directory.name)
    return copied


def _stage_problem(directory: Path, info: dict) -> str | None:
    """``None`` if every file listed in a stage marker is present with its recorded SHA-256."""
    if "files" not in info:
        return "its marker lists no files"
    for relative, sha in info["files"].items():
        path = directory / relative
        if not path.is_file():
            return f"{relative} is missing"
        if file_sha256(path) != sha:
            return f"{relative} does not match its recorded SHA-256"
    return None
