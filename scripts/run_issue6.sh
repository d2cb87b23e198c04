#!/usr/bin/env bash
# Issue 6 on the embedded model: causal ablation of the sweep's seed-0 sycophancy dW for LoRA, PiSSA
# and DeLoRA at α = 1, with norm-matched random controls and the subspace-alignment tables.
# The dW must be on disk: the sweep cell (scripts/run_issue3.sh, or
# `wsteer sweep --families lora,pissa,delora --seeds 0`) trains it; a cell restored from the archive
# has no weights, so its dW is retrained by `wsteer sweep --force` or `wsteer run --family F`.
# Resumable (each variant is a stage). Env: THREADS=1 to share the CPU; VARIANT_GROUPS (default all:
# module,svd,layer,base_svd,native); DILEMMAS (default 64 dilemmas = 128 rows; empty for all 252);
# FAMILIES; SEED (default 0).
set -euo pipefail
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
W=.venv/bin/wsteer
for family in ${FAMILIES:-lora pissa delora}; do
  dw=$(python3 -c "import json; print(json.load(open('out/sweep/smollm2-135m-instruct/sycophancy/$family-seed${SEED:-0}/cell.json'))['dw_dir'])")
  limit=${DILEMMAS-64}
  /usr/bin/time -f "ablate $family: %e s" $W ablate --dw "$dw" --groups "${VARIANT_GROUPS:-all}" ${limit:+--dilemma-limit $limit}
done
