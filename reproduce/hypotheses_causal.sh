#!/usr/bin/env bash
# Does the best base-model subspace carry dW's effect? (docs/RESULTS.md §5, "Which base-model subspace predicts where dW
# lives"): the causal check of `wsteer hypotheses`' top three candidates on the balanced sycophancy LoRA dW at seeds
# 0-2. dW's write side is projected inside and outside each rank-8 candidate subspace and scored with the retained
# measure of `wsteer ablate` (norm-matched random and energy-matched within-dW controls), with the module variants for
# reference, on the 12 held-out claims (both framings) and the first 32 dilemmas; then the summary across seeds.
# The module variants are shared with reproduce/ablation.sh (reused when it ran). SEEDS="1 2" runs a subset.
set -euo pipefail
source "$(dirname "$0")/common.sh"
CANDIDATES=${CANDIDATES:-contrast_pca,down_proj_out,o_down_out}
mkdir -p docs/hypotheses/causal
for s in ${SEEDS:-0 1 2}; do
  dw=$($W compare --behavior sycophancy --seed "$s" --archive docs/compare/archive --dw-only --sampler transformers)
  /usr/bin/time -f "causal check lora seed $s: %e s" \
    $W ablate --dw "$dw" --groups module --candidates "$CANDIDATES" --k 8 --dilemma-limit 32 > /dev/null
  folder=$(one "out/ablation/$(basename "$dw")-*")
  cp "$folder/ablation.json" "docs/hypotheses/causal/$(basename "$folder").json"
done
$W summarize-ablations docs/hypotheses/causal/*.json > docs/hypotheses/causal.md
