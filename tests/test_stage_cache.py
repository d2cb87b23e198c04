"""The stage cache: a finished stage is reused, a damaged one (files or marker) is recomputed with a warning."""

from weight_steering.stage_cache import copy_finished_stages, recording_stages, run_stage, stage_is_finished


def _stage(calls):
    def compute(directory):
        calls.append(directory)
        (directory / "result.txt").write_text(f"run {len(calls)}")
    return compute


def test_a_finished_stage_is_reused_and_a_corrupt_marker_is_recomputed(tmp_path, caplog):
    calls, directory = [], tmp_path / "stage-abc"
    run_stage("demo", directory, "abc", _stage(calls))
    run_stage("demo", directory, "abc", _stage(calls))
    assert len(calls) == 1 and stage_is_finished(directory, "abc")
    (directory / "stage.json").write_text('{"stage": "demo", "key": ')  # truncated marker
    assert not stage_is_finished(directory)
    run_stage("demo", directory, "abc", _stage(calls))
    assert len(calls) == 2 and "unreadable marker" in caplog.text and stage_is_finished(directory, "abc")
    (directory / "result.txt").write_text("edited")
    run_stage("demo", directory, "abc", _stage(calls))
    assert len(calls) == 3 and "does not match its recorded SHA-256" in caplog.text
    run_stage("demo", directory, "other", _stage(calls))
    assert len(calls) == 4  # another key is another stage


def test_copy_finished_stages_skips_unfinished_ones(tmp_path):
    calls = []
    run_stage("demo", tmp_path / "src" / "data-1", "k1", _stage(calls))
    (tmp_path / "src" / "data-2").mkdir()
    (tmp_path / "src" / "data-2" / "result.txt").write_text("no marker: unfinished")
    run_stage("demo", tmp_path / "src" / "eval-3", "k3", _stage(calls))
    copied = copy_finished_stages(tmp_path / "src", tmp_path / "dst", ("data-",))
    assert copied == ["data-1"] and stage_is_finished(tmp_path / "dst" / "data-1", "k1")
    assert copy_finished_stages(tmp_path / "src", tmp_path / "dst", ("data-",)) == []  # already there, same key


def test_recording_stages_lets_a_run_archive_only_the_stages_it_asked_for(tmp_path):
    calls = []
    run_stage("another run", tmp_path / "src" / "data-other", "k0", _stage(calls))
    with recording_stages() as outer:
        run_stage("demo", tmp_path / "src" / "data-1", "k1", _stage(calls))
        with recording_stages() as inner:
            run_stage("demo", tmp_path / "src" / "data-1", "k1", _stage(calls))  # reused: recorded too
            run_stage("demo", tmp_path / "src" / "eval-2", "k2", _stage(calls))
    run_stage("after the block", tmp_path / "src" / "data-3", "k3", _stage(calls))
    assert len(calls) == 4
    assert inner == {tmp_path / "src" / "data-1", tmp_path / "src" / "eval-2"} and outer == inner
    copied = copy_finished_stages(tmp_path / "src", tmp_path / "dst", ("data-", "eval-"), {d.name for d in outer})
    assert copied == ["data-1", "eval-2"]


# ---------------------------------------------------------------------------------------------
# Machine faults: full disk, read-only or non-folder paths, two processes on one stage

import errno  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

from weight_steering.artifacts import StorageError, write_json  # noqa: E402


@pytest.mark.parametrize("code, cause", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                         (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")])
def test_a_machine_fault_inside_a_stage_is_a_clear_error_and_the_rerun_resumes(tmp_path, monkeypatch, code, cause):
    """The disk fills (or turns read-only, or refuses permission) while a stage writes: a StorageError that names the
    path, the cause and the fix; no marker, no half-written file; the rerun computes the stage and finishes it."""
    real_fsync = os.fsync

    def failing(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(StorageError) as err:
        run_stage("s", tmp_path / "stage", "k", lambda d: write_json(d / "out.json", {"x": 1}))
    assert cause in str(err.value) and "out.json" in str(err.value) and "rerun the same command" in str(err.value)
    assert not (tmp_path / "stage" / "stage.json").exists() and not (tmp_path / "stage" / "out.json").exists()
    assert not [p for p in (tmp_path / "stage").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "fsync", real_fsync)
    run_stage("s", tmp_path / "stage", "k", lambda d: write_json(d / "out.json", {"x": 1}))
    assert stage_is_finished(tmp_path / "stage", "k")


def test_a_stage_below_a_file_names_the_file(tmp_path):
    (tmp_path / "notes.txt").write_text("user notes")
    with pytest.raises(StorageError, match="a part of the path is a file, not a folder|a file stands where a folder is needed"):
        run_stage("s", tmp_path / "notes.txt" / "stage", "k", lambda d: write_json(d / "out.json", {}))
    assert (tmp_path / "notes.txt").read_text() == "user notes"


def test_other_os_errors_pass_unchanged(tmp_path):
    def compute(directory):
        raise FileNotFoundError(errno.ENOENT, "no such input", "input.json")

    with pytest.raises(FileNotFoundError) as err:
        run_stage("s", tmp_path / "stage", "k", compute)
    assert not isinstance(err.value, StorageError)


def _compute_slowly(directory, log):
    with open(log, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    time.sleep(5.0)  # long enough that the second process, started with the first, finds the stage in progress
    write_json(directory / "out.json", {"pid": os.getpid()})


def _run_one(root, log, messages):
    import logging

    logging.basicConfig(filename=str(messages), level=logging.INFO)
    run_stage("shared", root / "stage", "k", lambda d: _compute_slowly(d, log))


def test_two_processes_on_one_stage_compute_it_once(tmp_path):
    """Two processes ask for the same stage at once: one computes it, the other waits (saying so) and reuses it."""
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "computed.log"
    workers = [ctx.Process(target=_run_one, args=(tmp_path, log, tmp_path / f"messages{i}.log")) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert len(log.read_text().split()) == 1  # computed once
    assert stage_is_finished(tmp_path / "stage", "k")
    messages = [(tmp_path / f"messages{i}.log").read_text() for i in range(2)]
    assert sum("being computed by another process; waiting" in m for m in messages) == 1  # the other one said it waits
    assert sum("reusing" in m for m in messages) == 1


def _hold_lock_then_die(path):
    from filelock import FileLock

    FileLock(str(path)).acquire()
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    (tmp_path / "stage").mkdir()
    killer = multiprocessing.get_context("spawn").Process(target=_hold_lock_then_die, args=(tmp_path / "stage" / ".stage.lock",))
    killer.start()
    killer.join(30)
    assert killer.exitcode == -signal.SIGKILL
    started = time.perf_counter()
    run_stage("s", tmp_path / "stage", "k", lambda d: write_json(d / "out.json", {}))
    assert stage_is_finished(tmp_path / "stage", "k") and time.perf_counter() - started < 10
