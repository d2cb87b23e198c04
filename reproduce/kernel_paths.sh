#!/usr/bin/env bash
# How far a dW moves between torch's CPU kernel paths (docs/engineering.md §1): record the 13 families' dW fingerprints
# (tests/family_dw.py: two steps per sign on layers 15-16) under this CPU's native kernels, then run the `recorded` test
# under AVX2 and under the non-vectorised "default" path; each prints its largest difference per family, relative to
# each tensor's norm. `--compare` adds how far a change of training seed moves LoRA's dW.
set -euo pipefail
OUT=${OUT:-out/kernel_paths}
env -u ATEN_CPU_CAPABILITY .venv/bin/python tests/family_dw.py --save "$OUT/native"
.venv/bin/python tests/family_dw.py --record-from "$OUT/native"
for path in avx2 default; do
  ATEN_CPU_CAPABILITY=$path .venv/bin/python -m pytest -q -s -m recorded tests/test_real_model.py
done
.venv/bin/python tests/family_dw.py --compare "$OUT"  # how far a change of training seed moves LoRA's dW
