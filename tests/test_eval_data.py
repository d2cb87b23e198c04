import json
from importlib import resources

import pytest
from conftest import SHARED, require_shared

from weight_steering.artifacts import file_sha256, write_jsonl
from weight_steering.evaluation.datasets import EvalDataError, build_dilemma_rows, load_dilemma_rows

SOURCE = SHARED / "data" / "daily_dilemmas" / "virtue_conflict_dilemmas.jsonl"


def test_shipped_rows_have_the_documented_counts():
    rows = load_dilemma_rows()
    assert len(rows) == 504
    for value, n in {"honesty": 159, "justice": 148, "courage": 139, "temperance": 135}.items():
        labelled = [r for r in rows if r[f"label_{value}"] != 0]
        assert len(labelled) == 2 * n
        assert sum(r[f"label_{value}"] for r in labelled) == 0  # balanced +1 / −1


def test_builder_reproduces_shipped_file(tmp_path):
    require_shared(SOURCE)
    write_jsonl(tmp_path / "rows.jsonl", build_dilemma_rows(SOURCE))
    shipped = resources.files("weight_steering") / "resources" / "daily_dilemmas" / "virtue_rows.jsonl"
    assert file_sha256(tmp_path / "rows.jsonl") == file_sha256(shipped)


def test_builder_rejects_missing_field_and_duplicate_id(tmp_path):
    good = {"id": "d1", "situation": "s", "action_a": "a", "action_b": "b", "virtues_a": ["honesty"], "virtues_b": []}
    path = tmp_path / "src.jsonl"
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "action_b"}) + "\n")
    with pytest.raises(EvalDataError, match="action_b"):
        build_dilemma_rows(path)
    path.write_text((json.dumps(good) + "\n") * 2)
    with pytest.raises(EvalDataError, match="duplicate"):
        build_dilemma_rows(path)


def test_loader_rejects_bad_label(tmp_path):
    row = load_dilemma_rows()[0] | {"label_honesty": 2}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(EvalDataError, match="labels"):
        load_dilemma_rows(path)
