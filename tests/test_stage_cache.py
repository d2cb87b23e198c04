"""The stage cache: a finished stage is reused, a damaged one (files or marker) is recomputed with a warning."""

from weight_steering.stage_cache import copy_finished_stages, run_stage, stage_is_finished


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
