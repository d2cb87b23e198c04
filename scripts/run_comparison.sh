#!/usr/bin/env bash
# Issue 4 on the embedded model: every steering method at p95 KL = 1 nat for each behaviour (the main
# job's LoRA seed-0 dW is reused or trained), then the effect-vs-KL curve points for honesty.
# Each step is a resumable stage: rerunning skips what is done. THREADS=1 shares the CPU with another job;
# BEHAVIORS="sycophancy" runs a subset (two 1-thread copies on different behaviours use 2 cores well).
set -euo pipefail
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
W=.venv/bin/wsteer
for behavior in ${BEHAVIORS:-honesty sycophancy authority}; do
  /usr/bin/time -f "compare $behavior: %e s" $W compare --behavior "$behavior" --curve-fractions ''
done
/usr/bin/time -f "compare honesty + curve points: %e s" $W compare --behavior honesty --curve-fractions 0.5
