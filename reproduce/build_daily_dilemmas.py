"""Rebuild the shipped DailyDilemmas value rows from the raw source file.

    python reproduce/build_daily_dilemmas.py ../shared/data/daily_dilemmas/virtue_conflict_dilemmas.jsonl

Writes src/weight_steering/resources/daily_dilemmas/virtue_rows.jsonl (deterministic: same input,
same bytes; tests check the hash).
"""

import sys
from pathlib import Path

from weight_steering.artifacts import write_jsonl
from weight_steering.evaluation.datasets import DILEMMA_FILE, build_dilemma_rows

source = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/daily_dilemmas/virtue_conflict_dilemmas.jsonl"
target = Path(__file__).resolve().parents[1] / "src" / "weight_steering" / "resources" / DILEMMA_FILE
rows = build_dilemma_rows(source)
write_jsonl(target, rows)
counts = {v: sum(r[f"label_{v}"] != 0 for r in rows) // 2 for v in ("honesty", "justice", "courage", "temperance")}
print(f"wrote {len(rows)} rows ({len(rows) // 2} dilemmas) to {target}; dilemmas per value: {counts}")
