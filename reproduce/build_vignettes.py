"""Rebuild the shipped moral-foundation vignettes from tinymfv's airisk files (commit 8f39fb1).

    python reproduce/build_vignettes.py ../shared/data/tinymfv

Writes src/weight_steering/resources/tinymfv/vignettes_airisk.jsonl (deterministic; tests check it).
"""

import sys
from collections import Counter
from pathlib import Path

from weight_steering.artifacts import write_jsonl
from weight_steering.evaluation.datasets import VIGNETTE_FILE, build_vignettes

source = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/tinymfv"
target = Path(__file__).resolve().parents[1] / "src" / "weight_steering" / "resources" / VIGNETTE_FILE
rows = build_vignettes(source)
write_jsonl(target, rows)
counts = Counter(r["foundation_coarse"] for r in rows if r["condition"] == "other_violate")
print(f"wrote {len(rows)} rows ({len(rows) // 2} vignettes × 2 conditions) to {target}; per foundation: {dict(counts)}")
