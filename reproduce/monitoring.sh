#!/usr/bin/env bash
# Monitoring a fine-tune with dW (docs/RESULTS.md, "Monitoring a fine-tune"): LoRA fine-tunes on 100 rows mixing
# the sycophancy dW's positive-persona responses with the neutral prompts' reference answers at behaviour shares
# 0, 0.1, 0.25, 0.5 and 1, seeds 0-2; cos(fine-tune Δ, dW) against random directions and the honesty dW (the
# unrelated null). Uses the dW that reproduce/comparison.sh trains (sycophancy at SYC_SEED, default 0; honesty at
# seed 0); every finished cell is kept in docs/monitor/archive, so a stopped run resumes there or on another machine.
set -euo pipefail
source "$(dirname "$0")/common.sh"
dw=$(one "out/sycophancy/$M/dw-lora-seed${SYC_SEED:-0}-*")
unrelated=$(one "out/honesty/$M/dw-lora-seed0-*")
# Fine-tune seeds that no dW here was trained with: a fine-tune with dW's own training seed starts from θ⁺'s LoRA
# initialisation (the same A), which inflates the cosine (docs/RESULTS.md shows it with seeds 0-2 against the seed-1 dW).
/usr/bin/time -f "monitoring experiment: %e s" $W monitor-experiment --dw "$dw" --unrelated "$unrelated" --seeds "${FINETUNE_SEEDS:-3,4,5}" \
  --archive docs/monitor/archive
mkdir -p docs/monitor
cp "out/monitor/$(basename "$dw")/monitoring."{json,md,png} docs/monitor/
