#!/usr/bin/env bash
# Vignettes at the calibrated α (docs/RESULTS.md, "Moral-foundation vignettes"): the dW of each behaviour is calibrated to p95 KL = 1 nat per sign by
# `wsteer compare --methods dW` (which also gives its KL, NLL change and pmass at those α), then the
# moral-foundation vignettes are scored at (α₋, 0, α₊). THREADS=1 shares the CPU with another job.
set -euo pipefail
if [ -n "${THREADS:-}" ]; then export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS; fi
W=.venv/bin/wsteer
M=smollm2-135m-instruct
for b in sycophancy honesty authority; do
  # calibrate the dW unless a comparison already did (a dW-only run would overwrite a full comparison table)
  ls out/compare/$b/$M/calibrate-dW-minus-*/calibration.json > /dev/null 2>&1 || $W compare --behavior $b --methods dW --curve-fractions '' --sampler transformers > /dev/null
  alphas=$(.venv/bin/python - "$b" <<'PY'
import glob, json, sys
arms = {}
for sign in ("plus", "minus"):
    found = glob.glob(f"out/compare/{sys.argv[1]}/smollm2-135m-instruct/calibrate-dW-{sign}-*/calibration.json")
    if len(found) != 1:
        sys.exit(f"expected one dW calibration for {sign}, found {found}")
    arms[sign] = json.load(open(found[0]))["alpha"]
print(f"{arms['minus']:.6g},0,{arms['plus']:.6g}")
PY
)
  dw=$(ls -td out/$b/$M/dw-lora-seed0-* | head -1)
  /usr/bin/time -f "$b vignettes at α = $alphas: %e s" $W vignettes --dw "$dw" --alphas="$alphas" --intent Authority=-1 --intent Care=1
done
