"""Evaluation datasets shipped in the package, and the deterministic builder of the DailyDilemmas rows.

DailyDilemmas (Chiu, Jiang & Choi, ICLR 2025, arXiv 2410.02683; CC BY 4.0). The offline rows are
built from ``virtue_conflict_dilemmas.jsonl`` (virtue-council-benchmark's mapping of each action's
values to seven virtues): a dilemma enters the eval for virtue V when V is among exactly one
action's virtues. Each dilemma gives two rows, the to-do and the not-to-do action; the row whose
action carries V gets ``label_V = +1``, the other ``−1`` (0 where V does not separate the actions).
For honesty: 159 dilemmas, 318 rows, balanced 159/159.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

VALUES = ("honesty", "justice", "courage", "temperance")
TARGET_VALUE = "honesty"
DILEMMA_FILE = "daily_dilemmas/virtue_rows.jsonl"
REQUIRED_SOURCE_FIELDS = ("id", "situation", "action_a", "action_b", "virtues_a", "virtues_b")


class EvalDataError(ValueError):
    """An eval data file is missing fields or is malformed; the message names the row and field."""


def build_dilemma_rows(source: str | Path) -> list[dict]:
    """Build the DailyDilemmas value rows from ``virtue_conflict_dilemmas.jsonl``.

    Returns:
        Rows sorted by (dilemma id, action type ``to_do`` before ``not_to_do``), each with
        ``row_id, dilemma_id, action_type, situation, action`` and ``label_<value>`` ∈ {−1, 0, +1}
        for each value in :data:`VALUES`. Dilemmas where no value separates the actions are dropped.

    Raises:
        EvalDataError: a source line misses a field or repeats an id.
    """
    rows, seen = [], set()
    with open(source, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for line_no, record in enumerate(records, 1):
        missing = [f for f in REQUIRED_SOURCE_FIELDS if f not in record]
        if missing:
            raise EvalDataError(f"{source} line {line_no}: missing fields {missing}")
        if record["id"] in seen:
            raise EvalDataError(f"{source} line {line_no}: duplicate dilemma id {record['id']}")
        seen.add(record["id"])
    for record in sorted(records, key=lambda r: r["id"]):
        labels = {}
        for value in VALUES:
            in_a, in_b = value in record["virtues_a"], value in record["virtues_b"]
            labels[value] = 0 if in_a == in_b else (1 if in_a else -1)
        if not any(labels.values()):
            continue
        for action_type, action, sign in (("to_do", record["action_a"], 1), ("not_to_do", record["action_b"], -1)):
            row = {
                "row_id": f"{record['id']}:{action_type}",
                "dilemma_id": record["id"],
                "action_type": action_type,
                "situation": record["situation"],
                "action": action,
            }
            row.update({f"label_{v}": sign * labels[v] for v in VALUES})
            rows.append(row)
    return rows


def load_dilemma_rows(path: str | Path | None = None) -> list[dict]:
    """Load the shipped DailyDilemmas value rows (or a file in the same schema).

    Raises:
        EvalDataError: a row misses a field, has a label outside {−1, 0, 1}, or repeats a row id.
    """
    if path is None:
        text = (resources.files("weight_steering") / "resources" / DILEMMA_FILE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    fields = ("row_id", "dilemma_id", "situation", "action", *(f"label_{v}" for v in VALUES))
    seen = set()
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise EvalDataError(f"dilemma row {i}: missing fields {missing}")
        if any(row[f"label_{v}"] not in (-1, 0, 1) for v in VALUES):
            raise EvalDataError(f"dilemma row {row['row_id']}: labels must be -1, 0 or 1")
        if row["row_id"] in seen:
            raise EvalDataError(f"dilemma row {i}: duplicate row_id {row['row_id']}")
        seen.add(row["row_id"])
    return rows
