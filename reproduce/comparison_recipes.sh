#!/usr/bin/env bash
# Is the answer robust to the recipe and the budget (docs/RESULTS.md §1)? The followable comparison with six methods:
# dW on the default recipe (LoRA r 32 / lora_alpha 64 on layers 9-23, 144 pairs of 64 tokens), dW on the paper's recipe
# at 2-core size (`dW_paper`, preset paper_2core: r 32 / lora_alpha 16 on every layer and linear module, 504 pairs of
# 128 tokens), CAA on dW's slice and on all layers, the persona and the engineered prompt; every continuous method
# calibrated per sign at p95 KL = 1, 0.5 and 2 nats, for tone and upbeat at seeds 0-2. Each run is its own result
# (`recipes-seed<s>-kl<target>`) in the committed archive, beside the four-method results of comparison_followable.sh,
# whose finished stages (dW, prompts, CAA on the slice at 1 nat) it reuses. The 1-nat run comes first: it trains the
# paper-recipe dW the other budgets reuse. SEEDS, BEHAVIORS and TARGETS run a subset.
set -euo pipefail
W=.venv/bin/wsteer
METHODS=dW,dW_paper,persona,engineered,caa_slice,caa_all
for seed in ${SEEDS:-0 1 2}; do
  for behavior in ${BEHAVIORS:-tone upbeat}; do
    for target in ${TARGETS:-1 0.5 2}; do
      /usr/bin/time -f "compare $behavior seed $seed kl $target: %e s, peak RSS %M KB" \
        $W compare --behavior "$behavior" --seed "$seed" --methods $METHODS --target "$target" --curve-fractions '' \
        --dilemma-limit 64 --archive docs/compare/archive --name "recipes-seed$seed-kl$target"
    done
  done
done
# one table per behaviour and budget, per-seed values and t-intervals over seeds, and per behaviour the OOD spread against
# the budget and against the ID spread (docs/compare/<behaviour>_budgets.png)
$W compare-seeds docs/compare/archive/smollm2-135m-instruct/*/compare/recipes-seed* --plot docs/compare > docs/compare/recipes_seeds.md
# the answer table per behaviour and budget, quoted in docs/RESULTS.md §1 (tests/test_results_docs.py checks it)
.venv/bin/python reproduce/followable_tables.py --runs recipes > docs/compare/recipes_summary.md
