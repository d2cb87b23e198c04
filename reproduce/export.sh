#!/usr/bin/env bash
# Serving dW (docs/RESULTS.md, "Serving dW"): the sycophancy dW of comparison seed SEED (default 0) exported exactly and truncated as a PEFT
# adapter, and as a llama.cpp GGUF adapter compared with the fp32 steered model in llama.cpp (needs the optional
# `pip install llama-cpp-python`, which builds llama.cpp from source).
set -euo pipefail
source "$(dirname "$0")/common.sh"
dw=$(one "out/sycophancy/$M/dw-lora-seed${SEED:-0}-*")
$W export --dw "$dw" --out out/export/peft-exact --force
$W export --dw "$dw" --out out/export/peft-rank8 --rank 8 --force
$W export --dw "$dw" --out out/export/peft-energy099 --energy 0.99 --force
$W export --dw "$dw" --out out/export/gguf --format gguf --force
.venv/bin/python benchmarks/bench_gguf_export.py --dw "$dw" --json docs/gguf_export.json
