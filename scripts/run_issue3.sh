#!/usr/bin/env bash
# Issue 3 on the embedded model: all thirteen families at seed 0, then LoRA, PiSSA, DeLoRA and
# DoRA at seeds 0, 1, 2 (finished cells are skipped on rerun), then the ranking.
# THREADS (default: torch's choice) lets it share the CPU with another job, e.g. THREADS=1.
set -euo pipefail
W=.venv/bin/wsteer
ALL=lora,dora,pissa,delora,oft,ia3,vera,road,miss,loha,lokr,hra,boft
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
/usr/bin/time -f "seed 0, 13 families: %e s" $W sweep --families $ALL --seeds 0
/usr/bin/time -f "seeds 0-2, 4 families: %e s" $W sweep --families lora,pissa,delora,dora --seeds 0,1,2
$W sweep --rank-only --families $ALL --seeds 0,1,2
