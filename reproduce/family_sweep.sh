#!/usr/bin/env bash
# The family sweep (docs/RESULTS.md §6): all thirteen families at seed 0 plus LoRA, PiSSA, DeLoRA and DoRA at
# seeds 0, 1, 2, then the ranking. Every finished cell's result (marker + gzipped records, not its
# weights) is copied into the committed archive docs/sweep/cells as soon as it finishes, and restored
# from it first, so the sweep resumes across sessions and machines without recomputing a cell.
# THREADS (default: torch's choice) lets it share the CPU with another job, e.g. THREADS=1.
# FAMILIES_SEED0 / FAMILIES_SEEDS012 narrow the two stages (e.g. to split them over two processes).
set -euo pipefail
W=.venv/bin/wsteer
A=docs/sweep/cells
ALL=lora,dora,pissa,delora,oft,ia3,vera,road,miss,loha,lokr,hra,boft
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
/usr/bin/time -f "seeds 0-2, 4 families: %e s" $W sweep --archive $A --sampler transformers --families "${FAMILIES_SEEDS012:-lora,pissa,delora,dora}" --seeds 0,1,2
/usr/bin/time -f "seed 0, 13 families: %e s" $W sweep --archive $A --sampler transformers --families "${FAMILIES_SEED0:-$ALL}" --seeds 0
$W sweep --archive $A --sampler transformers --rank-only --families $ALL --seeds 0,1,2
