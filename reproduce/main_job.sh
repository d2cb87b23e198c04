#!/usr/bin/env bash
# The main job (docs/RESULTS.md §3): persona-contrast data, θ⁺ and θ⁻ (LoRA), dW, and its evaluation at
# α ∈ {-2, -1, 0, 1, 2}, for sycophancy (`make demo-sycophancy` runs this one, with the default cached sampler; `make demo` runs
# `tone`, §3) and, at
# α ∈ {-1, 0, 1}, honesty and authority (with the sampler their archived results were made with).
# About 12-15 min per behaviour on 2 cores; every stage is cached under out/ and reused on a rerun.
set -euo pipefail
W=.venv/bin/wsteer
/usr/bin/time -f "sycophancy main job: %e s" $W run --behavior sycophancy
for b in ${BEHAVIORS:-honesty authority}; do
  /usr/bin/time -f "$b main job: %e s" $W run --behavior "$b" --alphas=-1,0,1 --sampler transformers
done
