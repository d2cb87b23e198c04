#!/usr/bin/env bash
# The iso-KL comparison at three seeds (docs/RESULTS.md, "The iso-KL comparison") (seed s sets both the data and the training seed): dW, both prompt
# methods, CAA and PCA on the dW layer slice and CAA at the best layer, each calibrated per sign to p95 KL = 1 nat,
# for sycophancy and honesty. Every small finished stage is kept in docs/compare/archive, so a stopped run
# resumes from the committed archive on any machine (only the adapters and dW are retrained, deterministically).
# About 35-40 min per behaviour and seed on 2 cores. SEEDS="0" BEHAVIORS="sycophancy" run a subset.
set -euo pipefail
W=.venv/bin/wsteer
METHODS=dW,persona,engineered,caa_slice,pca_slice,caa_best
for seed in ${SEEDS:-0 1 2}; do
  for behavior in ${BEHAVIORS:-sycophancy honesty}; do
    /usr/bin/time -f "compare $behavior seed $seed: %e s, peak RSS %M KB" \
      $W compare --behavior "$behavior" --seed "$seed" --methods "$METHODS" --curve-fractions '' --archive docs/compare/archive --sampler transformers
  done
done
$W compare-seeds docs/compare/archive > docs/compare/seeds.md
