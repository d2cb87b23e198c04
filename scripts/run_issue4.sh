#!/usr/bin/env bash
# Issue 4 on the embedded model: every steering method at p95 KL = 1 nat for the honesty behaviour
# (the main job's LoRA seed-0 dW is reused or trained), then the effect-vs-KL curve points.
# Each step is a resumable stage: rerunning skips what is done. THREADS=1 shares the CPU with a sweep.
set -euo pipefail
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
W=.venv/bin/wsteer
/usr/bin/time -f "compare honesty: %e s" $W compare --behavior honesty --curve-fractions ''
/usr/bin/time -f "compare honesty + curve points: %e s" $W compare --behavior honesty --curve-fractions 0.5
