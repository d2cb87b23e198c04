#!/usr/bin/env bash
# Vignettes and degradation (docs/RESULTS.md, "Moral-foundation vignettes"): honesty and authority main jobs (α ∈ {−1, 0, 1}), then the
# moral-foundation vignettes and the degradation table for the sycophancy, honesty and authority dW.
set -euo pipefail
W=.venv/bin/wsteer
M=smollm2-135m-instruct
for b in honesty authority; do
  /usr/bin/time -f "$b main job: %e s" $W run --behavior $b --alphas=-1,0,1
done
for b in sycophancy honesty authority; do
  dw=$(ls -td out/$b/$M/dw-lora-seed0-* | head -1)
  /usr/bin/time -f "$b vignettes: %e s" $W vignettes --dw "$dw" --intent Authority=-1 --intent Care=1
  /usr/bin/time -f "$b degradation: %e s" $W degradation --dw "$dw"
done
