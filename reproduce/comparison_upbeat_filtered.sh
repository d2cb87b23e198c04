#!/usr/bin/env bash
# Upbeat on filtered pairs (docs/RESULTS.md §2, "Upbeat's negative persona"): its negative persona shows the behaviour
# in 23% of hand labels, and no other wording tried reached 15%, so dW (θ⁺, θ⁻) and the CAA contrast are built only on
# the pairs the paper's filter keeps (positive reply upbeat, negative not), judged by VADER (--filter-pairs metric; the
# threshold best reproducing the 96 hand labels, compound > 0.87). Otherwise exactly the followable comparison
# (reproduce/comparison_followable.sh) at p95 KL = 1 nat, with CAA on all layers as well, at seeds 0-2; the prompt arms
# are the unfiltered run's (they do not depend on the pairs) and are reused. Results: lora-seed<s>-filtered-metric
# beside the unfiltered lora-seed<s> in docs/compare/archive/smollm2-135m-instruct/upbeat/compare. The filter makes the
# pairs purer and fewer at once, so each seed also runs its size control (--size-control): as many pairs as VADER keeps,
# drawn at random from all of them (lora-seed<s>-filtered-metric-sizecontrol). SEEDS and RUNS ("filtered sizecontrol")
# run a subset.
set -euo pipefail
W=.venv/bin/wsteer
for seed in ${SEEDS:-0 1 2}; do
  for run in ${RUNS:-filtered sizecontrol}; do
    /usr/bin/time -f "compare upbeat $run seed $seed: %e s, peak RSS %M KB" \
      $W compare --behavior upbeat --seed "$seed" --filter-pairs metric $([ "$run" = sizecontrol ] && echo --size-control) \
      --methods dW,persona,engineered,caa_slice,caa_all --curve-fractions '' --dilemma-limit 64 --archive docs/compare/archive
  done
done
# one table for the filtered pairs and one for their size control, per-seed values and t-intervals over the seeds run
$W compare-seeds docs/compare/archive/smollm2-135m-instruct/upbeat/compare/lora-seed*-filtered-metric* > docs/compare/upbeat_filtered_seeds.md
