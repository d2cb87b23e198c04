#!/usr/bin/env bash
# The balanced sycophancy main job at seeds 0-2 (training seed = data seed), once per data sampler: the default
# cached decoder, and transformers' generate (the sampler of every archived stage). Then one table with the per-seed
# values and a Student-t interval over the seeds for each sampler: docs/main_job/seeds.md (docs/RESULTS.md,
# "The main job at three seeds"). Stages are cached under out/, so the transformers runs reuse the data, adapters and
# dW that `reproduce/hypotheses.sh` left there; each run from scratch takes about 12-15 min on 2 cores.
set -euo pipefail
W=.venv/bin/wsteer
mkdir -p docs/main_job
for sampler in cached transformers; do
  for s in 0 1 2; do
    /usr/bin/time -f "$sampler seed $s main job: %e s" $W run --behavior sycophancy --seed $s --data-seed $s --sampler $sampler
    # both samplers' runs of a seed report into out/sycophancy/<model>/lora-seed<s>: keep each run.json at once
    cp out/sycophancy/smollm2-135m-instruct/lora-seed$s/run.json docs/main_job/$sampler-seed$s.json
  done
done
$W summarize docs/main_job/cached-seed{0,1,2}.json docs/main_job/transformers-seed{0,1,2}.json > docs/main_job/seeds.md
