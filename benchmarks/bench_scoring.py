"""Yes/No scoring throughput on the embedded model: naive per-row forward vs the grouped, prefix-cached scorer.

    python benchmarks/bench_scoring.py --n-dilemmas 32

Prints rows/s for (a) one row per forward with full logits (the naive baseline), (b) the grouped
scorer, and the max |difference| of the two in log P(answer set) (nats).
"""

import argparse
import time

import torch

from weight_steering.evaluation.scoring import answer_token_ids, score_answer_sets
from weight_steering.evaluation.rows import dilemma_rows
from weight_steering.core.models import load_model

parser = argparse.ArgumentParser()
parser.add_argument("--n-dilemmas", type=int, default=32)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name, path or HF id")
args = parser.parse_args()

model, tokenizer = load_model(args.model)
rows = dilemma_rows(tokenizer, limit=args.n_dilemmas)
texts, groups = [r["text"] for r in rows], [r["group"] for r in rows]
sets = list(answer_token_ids(tokenizer).values())
n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)

start = time.perf_counter()
naive = []
with torch.inference_mode():
    for text in texts:
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        logp = torch.log_softmax(model(**ids).logits[0, -1].float(), -1)
        naive.append([torch.logsumexp(logp[s], 0) for s in sets])
naive_s = time.perf_counter() - start

start = time.perf_counter()
grouped = score_answer_sets(model, tokenizer, texts, sets, groups, batch_size=args.batch_size)
grouped_s = time.perf_counter() - start

print(f"model: {args.model}; rows: {len(rows)} ({args.n_dilemmas} dilemmas), mean {n_tokens / len(rows):.0f} tokens/row, threads {torch.get_num_threads()}")
print(f"naive per-row forward:  {len(rows) / naive_s:.2f} rows/s")
print(f"grouped prefix-cached:  {len(rows) / grouped_s:.2f} rows/s  ({naive_s / grouped_s:.1f}x)")
print(f"max |Δ log P(set)|: {(torch.tensor(naive) - grouped.log_probs).abs().max():.2e} nats")
