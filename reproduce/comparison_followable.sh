#!/usr/bin/env bash
# The paper's question on behaviours SmolLM2-135M follows (docs/RESULTS.md, "Does weight steering generalise further?"):
# the iso-KL comparison of every method (dW, persona and engineered prompts, CAA on the slice / all layers / increments /
# best layer, PCA, S-space), each calibrated per sign to p95 KL = 1 nat, for `tone` (casual register) and `upbeat`
# (upbeat outlook) at seeds 0-2 (seed s sets both the data and the training seed). Each comparison scores the held-out
# paired completions (ID), three OOD sets of 24 paired completions, and greedy generations of every method on those
# prompts. DailyDilemmas enters only as the off-target action-bias row, on its first 64 dilemmas (128 rows); no curves.
# Every small finished stage is kept in docs/compare/archive (resume anywhere). The cached decoder samples the data.
# About 50 min per behaviour and seed on 2 cores. SEEDS="0" BEHAVIORS="tone" run a subset.
set -euo pipefail
W=.venv/bin/wsteer
for seed in ${SEEDS:-0 1 2}; do
  for behavior in ${BEHAVIORS:-tone upbeat}; do
    /usr/bin/time -f "compare $behavior seed $seed: %e s, peak RSS %M KB" \
      $W compare --behavior "$behavior" --seed "$seed" --methods all --curve-fractions '' --dilemma-limit 64 --archive docs/compare/archive
  done
done
$W compare-seeds docs/compare/archive/smollm2-135m-instruct/tone docs/compare/archive/smollm2-135m-instruct/upbeat > docs/compare/followable_seeds.md
