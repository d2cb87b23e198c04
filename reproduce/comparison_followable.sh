#!/usr/bin/env bash
# The paper's question on behaviours SmolLM2-135M follows (docs/RESULTS.md §1, "Does weight steering generalise further
# than activation steering and prompting?"): dW against the persona and engineered prompts and CAA on dW's own layers,
# each continuous method calibrated per sign to p95 KL = 1 nat, for `tone` (casual register) and `upbeat` (upbeat
# outlook) at seeds 0-2 (seed s sets both the data and the training seed). Each comparison scores the held-out paired
# completions (ID), three OOD sets of 24 paired completions, and greedy generations of every method on those prompts.
# DailyDilemmas enters only as the off-target action-bias row, on its first 64 dilemmas (128 rows); no curves.
# Then seed 0 of each with PCA, all-layer CAA and CAA increments as well (the same stages plus three methods).
# Every small finished stage is kept in docs/compare/archive (resume anywhere). The cached decoder samples the data.
# Measured two at a time on 2 cores, one thread each: 27-45 min per behaviour and seed (a behaviour's first seed is the
# longest; later seeds reuse the prompt arms, which do not depend on the seed). SEEDS="0" BEHAVIORS="tone" run a subset.
set -euo pipefail
W=.venv/bin/wsteer
METHODS=dW,persona,engineered,caa_slice
for seed in ${SEEDS:-0 1 2}; do
  for behavior in ${BEHAVIORS:-tone upbeat}; do
    /usr/bin/time -f "compare $behavior seed $seed: %e s, peak RSS %M KB" \
      $W compare --behavior "$behavior" --seed "$seed" --methods $METHODS --curve-fractions '' --dilemma-limit 64 --archive docs/compare/archive
  done
done
# seed 0 of each behaviour with PCA, all-layer CAA and CAA increments as well (docs/compare/<behavior>_seed0_seven_methods.md);
# then the four-method result again (all reused), so the archive's seed-0 comparison matches seeds 1-2
if [[ " ${SEEDS:-0 1 2} " == *" 0 "* ]]; then
  for behavior in ${BEHAVIORS:-tone upbeat}; do
    $W compare --behavior "$behavior" --seed 0 --methods $METHODS,pca_slice,caa_all,caa_increments --curve-fractions '' --dilemma-limit 64 --archive docs/compare/archive
    cp "out/compare/$behavior/smollm2-135m-instruct/lora-seed0/comparison.md" "docs/compare/${behavior}_seed0_seven_methods.md"
    $W compare --behavior "$behavior" --seed 0 --methods $METHODS --curve-fractions '' --dilemma-limit 64 --archive docs/compare/archive
  done
fi
$W compare-seeds docs/compare/archive/smollm2-135m-instruct/{tone,upbeat}/compare/lora-seed{0,1,2} > docs/compare/followable_seeds.md
.venv/bin/python reproduce/followable_tables.py > docs/compare/followable_summary.md
