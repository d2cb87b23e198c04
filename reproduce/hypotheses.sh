#!/usr/bin/env bash
# Which base-model subspace predicts where dW lives, across families and seeds (docs/RESULTS.md §5, "Which base-model
# subspace predicts where dW lives"): `wsteer hypotheses --k 8` on the balanced sycophancy dW of each family and seed
# (seed s sets both the data and the training seed, as in reproduce/comparison.sh, whose archived data it reuses), then
# the summary across dWs: per-seed R_w, t-intervals over seeds, rank agreement against a permutation null.
# Each dW is trained (or reused) on the comparison's archived data by `wsteer compare --dw-only`. About 1.5 min per dW
# to score on 2 cores, plus about 5 min to train one. FAMILIES="lora" SEEDS="0 1" run a subset.
set -euo pipefail
source "$(dirname "$0")/common.sh"
mkdir -p docs/hypotheses/seeds
for family in ${FAMILIES:-lora pissa delora}; do
  for s in ${SEEDS:-0 1 2}; do
    dw=$($W compare --behavior sycophancy --family "$family" --seed "$s" --archive docs/compare/archive --dw-only --sampler transformers)
    /usr/bin/time -f "hypotheses $family seed $s: %e s" $W hypotheses --dw "$dw" --k 8 > /dev/null
    cp "out/hypotheses/$(basename "$dw")-k8/hypotheses.json" "docs/hypotheses/seeds/$(basename "$dw").json"
  done
done
$W summarize-hypotheses docs/hypotheses/seeds/*.json > docs/hypotheses/seeds.md
