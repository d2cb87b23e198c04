#!/usr/bin/env bash
# Vignettes and degradation (docs/RESULTS.md, "Moral-foundation vignettes"): the sycophancy, honesty and authority main
# jobs (honesty and authority at α ∈ {−1, 0, 1}; every stage reused when main_job.sh ran), then the moral-foundation
# vignettes and the degradation table for each behaviour's dW. The data are sampled with transformers' generate, as
# when these tables were made (`--sampler transformers`).
set -euo pipefail
W=.venv/bin/wsteer
for b in sycophancy honesty authority; do
  alphas=$([ "$b" = sycophancy ] && echo "-2,-1,0,1,2" || echo "-1,0,1")
  dw=$($W run --behavior $b --alphas="$alphas" --sampler transformers | tail -1 | sed 's/^dW: //')
  /usr/bin/time -f "$b vignettes: %e s" $W vignettes --dw "$dw" --intent Authority=-1 --intent Care=1
  /usr/bin/time -f "$b degradation: %e s" $W degradation --dw "$dw"
done
