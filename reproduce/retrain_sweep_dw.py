"""Retrain the dW of archived sweep cells (the archive keeps results, not weights) and check it is the same dW.

    python reproduce/retrain_sweep_dw.py lora:1 pissa:2 ...     # family:seed, sycophancy, default preset
    python reproduce/retrain_sweep_dw.py                        # only the shared data stage and the α = 0 base eval

Each dW is trained with exactly the sweep cell's settings (`weight_steering.sweep.run.cell_config`). Its
directory name ends in a hash of the θ⁺ and θ⁻ adapters' SHA-256, so a retrained dW whose directory
equals the archived cell's `dw_dir` is bit-identical to the one the sweep measured. Across machines
(another CPU, another BLAS path) training is reproducible only to floating-point precision: the
script then compares ‖dW‖ and exits 1 only if it differs by more than NORM_TOLERANCE (relative).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dataclasses import replace

from weight_steering.core.data import sampler_settings
from weight_steering.main_job.stages import evaluate_base, prepare_job, dw_stage
from weight_steering.main_job.config import preset_config
from weight_steering.sweep.cells import Cell, cell_config, cell_dir

BEHAVIOR = "sycophancy_unbalanced"  # the archived sweep trained on this file (then named sycophancy)
ARCHIVE = "docs/sweep/cells"
NORM_TOLERANCE = 1e-5  # relative ‖dW‖ difference accepted as floating-point noise (another CPU or BLAS path)


def main(pairs: list[str]) -> int:
    """Messages go to stderr; with ``--paths`` the retrained dW folders are printed to stdout, one per cell."""
    paths = "--paths" in pairs
    pairs = [p for p in pairs if p != "--paths"]
    found = []
    cells = []
    for pair in pairs:
        family, _, seed = pair.partition(":")
        if not family or not seed.isdigit():
            raise SystemExit(f"bad cell {pair!r}: give family:seed, e.g. lora:1")
        cells.append(Cell(BEHAVIOR, family, int(seed), data_seed=0))  # the archived sweep fixed the data seed at 0
    config = preset_config("default", generation=sampler_settings("transformers"))  # as the archived sweep sampled its data
    job = prepare_job(replace(config, behavior=BEHAVIOR, judge=False))
    if not cells:
        evaluate_base(job)  # data-stage-only mode: also the shared α = 0 evaluation the sweep needs
    failures = 0
    for cell in cells:
        marker = cell_dir(config, cell, ARCHIVE).with_name(f"{cell.family}-seed{cell.seed}") / "cell.json"  # archived before data seeds varied
        if not marker.is_file():
            print(f"{cell.name}: not in the archive {ARCHIVE}; run the sweep cell first", file=sys.stderr, flush=True)
            failures += 1
            continue
        archived = json.loads(marker.read_text())
        started = time.perf_counter()
        dw_dir = dw_stage(job, cell_config(config, cell).train)
        seconds = time.perf_counter() - started
        found.append(dw_dir)
        if Path(archived["dw_dir"]).name == dw_dir.name:
            print(f"{cell.name}: {dw_dir} in {seconds:.0f} s; bit-identical to the archived cell's dW", file=sys.stderr, flush=True)
            continue
        norm = json.loads((dw_dir / "dW.json").read_text())["norm_dw"]
        relative = abs(norm - archived["norm_dw"]) / archived["norm_dw"]
        verdict = "float-level difference only" if relative <= NORM_TOLERANCE else "a DIFFERENT dW"
        print(f"{cell.name}: {dw_dir} in {seconds:.0f} s; not bit-identical to the archived {archived['dw_dir']}: "
              f"‖dW‖ {norm:.9f} vs {archived['norm_dw']:.9f} (relative {relative:.1e}): {verdict}", file=sys.stderr, flush=True)
        failures += relative > NORM_TOLERANCE
    if paths:
        print("\n".join(str(d) for d in found))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
