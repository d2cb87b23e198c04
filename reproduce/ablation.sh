#!/usr/bin/env bash
# Where dW lives, over three seeds (docs/RESULTS.md, "Where dW lives"): the causal ablation of the balanced
# sycophancy LoRA dW at seeds 0-2 (the dW that reproduce/comparison.sh trains; seed s sets both the data and the
# training seed), module and own-SVD variants, each keep variant with five norm-matched random draws and each SVD
# crop with five within-dW subsets, on the 12 held-out claims (both framings) and the first 32 dilemmas; then the
# summary across seeds. About 19 min per seed on 2 cores. SEEDS="1 2" runs a subset.
set -euo pipefail
source "$(dirname "$0")/common.sh"
folders=()
for s in ${SEEDS:-0 1 2}; do
  # the comparison's dW: its archived data restored, the adapters trained (or reused)
  dw=$($W compare --behavior sycophancy --seed "$s" --archive docs/compare/archive --dw-only --sampler transformers)
  /usr/bin/time -f "ablate lora seed $s: %e s" $W ablate --dw "$dw" --groups svd,module --dilemma-limit 32
  folders+=("$(one "out/ablation/$(basename "$dw")-*")")
done
mkdir -p docs/ablation/seeds
for f in "${folders[@]}"; do cp "$f/ablation.json" "docs/ablation/seeds/$(basename "$f").json"; done
$W summarize-ablations docs/ablation/seeds/*.json > docs/ablation/seeds.md
