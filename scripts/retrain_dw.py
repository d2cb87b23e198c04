"""Retrain the dW of archived sweep cells (the archive keeps results, not weights) and check it is the same dW.

    python scripts/retrain_dw.py lora:1 pissa:2 ...     # family:seed, sycophancy, default preset
    python scripts/retrain_dw.py                        # only the shared data stage and the α = 0 base eval

Each dW is trained with exactly the sweep cell's settings (`weight_steering.sweep.cell_config`). Its
directory name ends in a hash of the θ⁺ and θ⁻ adapters' SHA-256, so a retrained dW whose directory
equals the archived cell's `dw_dir` is bit-identical to the one the sweep measured; a mismatch exits 1.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from weight_steering.pipeline import preset_config, train_dw
from weight_steering.sweep import Cell, _prepare, cell_config, cell_dir

BEHAVIOR = "sycophancy"
ARCHIVE = "docs/sweep/cells"


def main(pairs: list[str]) -> int:
    config = preset_config("default")
    job = _prepare(config, BEHAVIOR)
    failures = 0
    for pair in pairs:
        family, seed = pair.split(":")
        cell = Cell(BEHAVIOR, family, int(seed))
        marker = cell_dir(config, cell, ARCHIVE) / "cell.json"
        archived = json.loads(marker.read_text())["dw_dir"] if marker.is_file() else None
        started = time.perf_counter()
        dw_dir = train_dw(job, cell_config(config, cell).train)
        same = archived is not None and Path(archived).name == dw_dir.name
        print(f"{cell.name}: {dw_dir} in {time.perf_counter() - started:.0f} s; "
              f"{'identical to the archived cell' if same else f'DIFFERS from the archived {archived}'}", flush=True)
        failures += not same
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
