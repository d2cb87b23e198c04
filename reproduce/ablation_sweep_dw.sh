#!/usr/bin/env bash
# The earlier ablation (docs/history.md: the earlier ablation of the sweep dW): the sweep's (unbalanced) sycophancy dW for LoRA, PiSSA and
# DeLoRA at α = 1, with norm-matched random controls and the subspace-alignment tables.
# The archive (docs/sweep/cells) keeps each cell's results but not its weights, so each dW is first
# retrained with the cell's exact settings by reproduce/retrain_sweep_dw.py (a few seconds when it is already
# on disk; it checks the result against the archived cell). Resumable (each variant is a stage).
# Env: THREADS=1 to share the CPU; VARIANT_GROUPS (default all: module,svd,layer,base_svd,native);
# DILEMMAS (default 64 dilemmas = 128 rows; empty for all 252); FAMILIES; SEED (default 0).
# It ran seed 0 with the defaults, seed 1 with VARIANT_GROUPS=module,svd,native DILEMMAS=32,
# seed 2 with VARIANT_GROUPS=module,svd,native DILEMMAS=16.
set -euo pipefail
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
W=.venv/bin/wsteer
seed=${SEED:-0}
limit=${DILEMMAS-64}
for family in ${FAMILIES:-lora pissa delora}; do
  dw=$(.venv/bin/python reproduce/retrain_sweep_dw.py --paths "$family:$seed")  # messages on stderr, the dW folder on stdout
  /usr/bin/time -f "ablate $family seed $seed: %e s" $W ablate --dw "$dw" --groups "${VARIANT_GROUPS:-all}" ${limit:+--dilemma-limit $limit}
done
