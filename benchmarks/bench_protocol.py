"""Every stage of the protocol on the embedded model, before and after, against the machine's measured GEMM roofline.

    python benchmarks/bench_protocol.py                # the stage benchmarks (about 10 min on 2 cores)
    python benchmarks/bench_protocol.py --main-job     # also the main job, once per sampler (about 25 min more)
    python benchmarks/bench_protocol.py --compare      # also one comparison from scratch (99 min in the last run)

Writes docs/perf.json (``--out``) and prints a markdown table. "before" is the code path the archived results were
made with, "after" the current default or opt-in fast path, measured in the same process on the same inputs:

* gemm_gflops: fp32 ``F.linear`` throughput at the model's matrix shapes with 200 rows, weighted by each shape's
  share of a token's FLOPs (the roofline for everything below).
* generation: tokens/s of persona-contrast sampling at the default settings (T 0.7, top-k 50, top-p 0.9, 64 new
  tokens, each prompt twice as n_samples = 2 makes it); before = ``model.generate`` in batches of 50, after = the
  cached decoder (:func:`weight_steering.core.decoding.decode`) in batches of 200. Tokens counted: those generated up to
  and including the stop token. Greedy identity with ``generate`` is checked on the same prompts.
* scoring: rows/s of DailyDilemmas Yes/No rows, grouped prefix-cached scorer against a fair baseline (batched HF
  forward, left padding, ``logits_to_keep=1``); GFLOP/s on the tokens each actually computes; max |Δ| in nats.
* training: LoRA examples/s and tokens/s per optimiser step (batch 4) on archived persona-contrast rows.
* calibration: seconds per iso-KL measurement, ``generate`` with per-step logits (before) against the cached decoder
  (after), with the largest per-position difference in nats; KL measurements per calibrated sign, read from the
  committed comparison archive.
* main job (``--main-job``): wall seconds and peak RSS of ``wsteer run`` in a fresh output root, once per sampler.
* comparison (``--compare``): wall seconds of ``wsteer compare --behavior sycophancy --seed 0`` in a fresh output
  root, main job stages included (the current code only: the old code path is not kept to time).

Run it on an idle machine: a second heavy process on 2 cores halves every number (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from weight_steering.artifacts import read_jsonl, write_json
from weight_steering.core.behavior_files import load_behavior
from weight_steering.evaluation.calibrate import kl_from_base
from weight_steering.core.chat import default_system_prompt, render_chat, stop_token_ids
from weight_steering.comparison.run import CompareConfig
from weight_steering.core.decoding import Sampling, decode
from weight_steering.core.diff import load_dw
from weight_steering.evaluation.datasets import load_neutral, neutral_split
from weight_steering.evaluation.rows import dilemma_rows
from weight_steering.evaluation.scoring import answer_token_ids, score_answer_sets
from weight_steering.core.methods import persona_method, weight_method
from weight_steering.core.models import load_model
from weight_steering.core.train import train_adapter
from weight_steering.core.adapters import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "docs" / "compare" / "archive" / "smollm2-135m-instruct"


def flops_per_token(model) -> dict[str, float]:
    """Forward FLOPs per token (2 per multiply-add) of each linear shape, LM head included; attention scores excluded."""
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    shapes = {  # (in, out): count per token
        (c.hidden_size, c.hidden_size): 2 * c.num_hidden_layers,         # q, o
        (c.hidden_size, kv): 2 * c.num_hidden_layers,                     # k, v
        (c.hidden_size, c.intermediate_size): 2 * c.num_hidden_layers,   # gate, up
        (c.intermediate_size, c.hidden_size): c.num_hidden_layers,       # down
        (c.hidden_size, c.vocab_size): 1,                                 # LM head
    }
    return {f"{i}x{o}": 2.0 * i * o * n for (i, o), n in shapes.items()}


def gemm_roofline(model, rows: int = 200, repeats: int = 20) -> float:
    """FLOP-weighted fp32 GEMM throughput (GFLOP/s) at the model's shapes with ``rows`` rows: the time of one
    token-batch's linear layers, each shape timed alone, against their FLOPs."""
    flops, seconds = 0.0, 0.0
    for name, per_token in flops_per_token(model).items():
        i, o = map(int, name.split("x"))
        x, w = torch.randn(rows, i), torch.randn(o, i)
        torch.nn.functional.linear(x, w)
        start = time.perf_counter()
        for _ in range(repeats):
            torch.nn.functional.linear(x, w)
        per_call = (time.perf_counter() - start) / repeats
        seconds += per_call * per_token / (2.0 * i * o)   # calls of this shape per token
        flops += per_token * rows
    return flops / seconds / 1e9


def persona_prompts(tokenizer, n: int) -> list[list[int]]:
    """``n`` rendered persona-contrast prompts as the data stage makes them: each (prompt, persona, sign) twice."""
    behavior = load_behavior("sycophancy")
    texts = []
    for prompt in behavior.train_prompts:
        for q in range(behavior.n_personas):
            for system in (behavior.positive_system_prompts[q], behavior.negative_system_prompts[q]):
                texts.append(render_chat(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": prompt}]))
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[: (n + 1) // 2]]
    return [p for p in ids for _ in range(2)][:n]


def _left_padded(prompts, pad_id):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    return ids, mask


def bench_generation(model, tokenizer, n: int) -> dict:
    stops = stop_token_ids(tokenizer)
    prompts = persona_prompts(tokenizer, n)
    settings = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50, "max_new_tokens": 64, "min_new_tokens": 4}
    torch.manual_seed(0)
    start, before_tokens, before_stops = time.perf_counter(), 0, 0
    for i in range(0, n, 50):
        ids, mask = _left_padded(prompts[i:i + 50], tokenizer.pad_token_id)
        out = model.generate(input_ids=ids, attention_mask=mask, eos_token_id=sorted(stops), pad_token_id=tokenizer.pad_token_id, **settings)
        for row in out[:, ids.shape[1]:].tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), None)
            before_tokens += len(row) if cut is None else cut + 1
            before_stops += cut is not None
    before_s = time.perf_counter() - start
    torch.manual_seed(0)
    start = time.perf_counter()
    after = []
    for i in range(0, n, 200):
        after += decode(model, prompts[i:i + 200], 64, stops, tokenizer.pad_token_id, min_new_tokens=4, sampling=Sampling(0.7, 50, 0.9),
                        share_prefix=False)   # as the data stage samples (whole-prompt prefill)
    after_s = time.perf_counter() - start
    after_tokens = sum(len(d.tokens) + d.hit_stop for d in after)
    check = prompts[:16:2]
    ids, mask = _left_padded(check, tokenizer.pad_token_id)
    reference = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=32, eos_token_id=sorted(stops),
                               pad_token_id=tokenizer.pad_token_id)[:, ids.shape[1]:].tolist()
    greedy = decode(model, check, 32, stops, tokenizer.pad_token_id)
    same = sum(d.tokens == [t for t in r[: next((j for j, t in enumerate(r) if t in stops), len(r))]] for d, r in zip(greedy, reference))
    return {"generation_tok_s_before": before_tokens / before_s, "generation_tok_s": after_tokens / after_s,
            "generation_tokens_before": before_tokens, "generation_tokens": after_tokens, "generation_rows": n,
            "generation_stopped_rows_before": before_stops, "generation_stopped_rows": sum(d.hit_stop for d in after),
            "greedy_identical_rows": f"{same}/{len(check)}"}


def _common(seqs):
    n = min(map(len, seqs))
    return next((i for i in range(n) if any(s[i] != seqs[0][i] for s in seqs)), n)


def grouped_tokens(encoded: list[list[int]], groups: list[str]) -> int:
    """Tokens the grouped scorer runs through the model: the prefix common to all rows once, each group's own
    prefix once, and each row's tail (as :func:`weight_steering.evaluation.scoring.score_answer_sets` plans them)."""
    shared = min(_common(encoded), min(map(len, encoded)) - 1)
    total, by_group = shared, {}
    for row, group in zip(encoded, groups):
        by_group.setdefault(group, []).append(row)
    for rows in by_group.values():
        own = max(shared, min(_common(rows), min(map(len, rows)) - 1))
        total += own - shared + sum(len(r) - own for r in rows)
    return total


def bench_scoring(model, tokenizer, n_dilemmas: int, flops: float) -> dict:
    rows = dilemma_rows(tokenizer, limit=n_dilemmas)
    texts, groups = [r["text"] for r in rows], [r["group"] for r in rows]
    sets = list(answer_token_ids(tokenizer).values())
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    start = time.perf_counter()
    grouped = score_answer_sets(model, tokenizer, texts, sets, groups, batch_size=32)
    grouped_s = time.perf_counter() - start
    start = time.perf_counter()
    fair = []
    with torch.inference_mode():
        for i in range(0, len(encoded), 32):
            ids, mask = _left_padded(encoded[i:i + 32], tokenizer.pad_token_id)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1).logits[:, -1].float()
            logp = torch.log_softmax(logits, -1)
            fair.append(torch.stack([torch.logsumexp(logp[:, s], -1) for s in sets], -1))
    fair_s = time.perf_counter() - start
    fair = torch.cat(fair)
    body = flops - 2.0 * model.config.hidden_size * model.config.vocab_size   # per token without the LM head
    padded = sum(max(map(len, encoded[i:i + 32])) * len(encoded[i:i + 32]) for i in range(0, len(encoded), 32))
    computed = grouped_tokens(encoded, groups)
    return {"scoring_gflop_s": computed * body / grouped_s / 1e9, "scoring_tokens_computed_per_row": computed / len(rows),
            "scoring_rows_s": len(rows) / grouped_s, "scoring_rows_s_before": len(rows) / grouped_s,
            "scoring_rows_s_fair_baseline": len(rows) / fair_s, "scoring_rows": len(rows),
            "scoring_mean_tokens_per_row": sum(map(len, encoded)) / len(encoded),
            "scoring_fair_baseline_gflop_s": padded * body / fair_s / 1e9,
            "scoring_max_abs_diff_nats": float((fair - grouped.log_probs).abs().max())}


def bench_training(model, tokenizer, steps: int) -> dict:
    data = sorted(ARCHIVE.glob("sycophancy/job/data-*/pairs.jsonl"))[0]
    rows = read_jsonl(data)
    n = int(steps * 4 / 0.9) + 2   # enough rows for `steps` optimiser steps of 4 after the 10% validation split
    config = TrainConfig(epochs=1.0, batch_size=4, seed=0)
    delta, log = train_adapter(model, tokenizer, rows[:n], "positive", config)
    examples = log["n_train"]
    from weight_steering.core.train import tokenize_example
    tokens = sum(len(tokenize_example(tokenizer, r["prompt"], r["response_positive"], config.max_length)["input_ids"]) for r in rows[:n])
    return {"training_examples_s": examples / log["wall_seconds"], "training_examples_s_before": examples / log["wall_seconds"],
            "training_tokens_s": tokens * examples / n / log["wall_seconds"], "training_steps": log["steps"]}


def _kl_with_generate(model, tokenizer, method, alpha, prompts, n_tokens, batch_size=64) -> np.ndarray:
    """The KL measurement as the archived calibrations made it: ``generate(output_logits=True)`` for the steered
    distributions, the base teacher-forced on the bare prompt; per kept position (up to and with the stop),
    prompt-major, in nats."""
    stops = sorted(stop_token_ids(tokenizer))
    values = []
    system = method.system_prompt(alpha)
    bare = [render_chat(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    texts = bare if system is None else [render_chat(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": p}])
                                         for p in prompts]
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        width = batch["input_ids"].shape[1]
        with torch.inference_mode(), method.apply(model, alpha):
            out = model.generate(**batch, do_sample=False, max_new_tokens=n_tokens, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id,
                                 return_dict_in_generate=True, output_logits=True)
        with torch.inference_mode():
            steered = torch.log_softmax(torch.stack(out.logits, 1).float(), -1)                       # [B, S, V]
            generated = out.sequences[:, width:]
            base_batch = tokenizer(bare[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            ids = torch.cat([base_batch["input_ids"], generated], 1)
            mask = torch.cat([base_batch["attention_mask"], torch.ones_like(generated)], 1)
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            n = generated.shape[1]
            base = torch.log_softmax(model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                           logits_to_keep=n + 1).logits[:, :-1].float(), -1)          # [B, S, V]
            kl = (steered.exp() * (steered - base)).sum(-1)                                             # [B, S]
        is_stop = torch.isin(out.sequences[:, width:], torch.tensor(stops))
        after = (is_stop.cumsum(1) - is_stop.long()) > 0
        values += [row[~drop].numpy() for row, drop in zip(kl, after)]
    return np.clip(np.concatenate(values), 0.0, None)


def bench_kl_measurement(model, tokenizer, dw_path: str | None, alpha: float) -> dict:
    """Seconds per iso-KL measurement on the comparison's calibration prompts and tokens per prompt, ``generate`` path
    against :func:`weight_steering.evaluation.calibrate.kl_from_base`, and how far their per-position KL values and p95 differ.
    The steer is α·dW of ``dw_path``, or without one the sycophancy persona prompt (one of the comparison's methods)."""
    if dw_path:
        steer_name, method = f"{alpha:+g}·dW ({dw_path})", weight_method(load_dw(dw_path, model))
    else:
        steer_name, method, alpha = "sycophancy persona prompt", persona_method(load_behavior("sycophancy"), base_system=default_system_prompt(tokenizer)), 1.0
    prompts = [p["instruction"] for p in neutral_split(load_neutral())[0]]
    n_tokens = CompareConfig(behavior="sycophancy").n_tokens
    start = time.perf_counter()
    before = _kl_with_generate(model, tokenizer, method, alpha, prompts, n_tokens)
    before_s = time.perf_counter() - start
    start = time.perf_counter()
    after = kl_from_base(model, tokenizer, method, alpha, prompts, n_tokens)
    after_s = time.perf_counter() - start
    same_shape = before.shape == after.per_position.shape
    return {"kl_steer": steer_name, "kl_seconds_per_measurement_before": before_s, "kl_seconds_per_measurement": after_s,
            "kl_positions": int(after.n_positions), "kl_positions_before": int(before.size), "kl_p95": after.p95,
            "kl_max_abs_diff_nats": float(np.abs(before - after.per_position).max()) if same_shape else None,
            "kl_p95_abs_diff_nats": abs(float(np.percentile(before, 95)) - after.p95)}


def calibration_counts() -> dict:
    """Mean iso-KL measurements (``iterations``) and seconds per measurement over every calibrated sign in the archive."""
    records = [json.loads(p.read_text()) for p in ARCHIVE.glob("*/compare/calibrate-*/calibration.json")]
    iterations = [r["iterations"] for r in records]
    seconds = [r["seconds"] / r["iterations"] for r in records if r.get("iterations")]
    mean = sum(iterations) / len(iterations)
    return {"kl_measurements_per_sign": mean, "kl_measurements_per_sign_before": mean, "calibrated_signs": len(records),
            "kl_seconds_per_measurement_archived": sum(seconds) / len(seconds)}


# Runs in a small intermediate interpreter: a process forked from this one would inherit this one's peak RSS (Linux
# keeps the larger of the pre-exec and post-exec high-water marks), so the job is the intermediate's child instead.
_TIME_CHILD = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
status = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps({"seconds": time.perf_counter() - start, "status": status,
                  "peak_rss_gib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}))
"""


def _timed_cli(*args: str) -> tuple[float, float]:
    """Wall seconds and peak resident memory (GiB, of that process alone) of ``wsteer <args> --out <fresh folder>``.

    Raises:
        SystemExit: the command failed (its exit status is named).
    """
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "weight_steering.cli", *args, "--out", out]
        report = json.loads(subprocess.run([sys.executable, "-c", _TIME_CHILD, *command], check=True, capture_output=True, text=True).stdout)
    if report["status"] != 0:
        raise SystemExit(f"wsteer {' '.join(args)} failed with exit status {report['status']}")
    return report["seconds"], report["peak_rss_gib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "perf.json"))
    parser.add_argument("--generations", type=int, default=400, help="sampled continuations per path")
    parser.add_argument("--dilemmas", type=int, default=32, help="DailyDilemmas dilemmas scored (two rows each)")
    parser.add_argument("--train-steps", type=int, default=12, help="LoRA optimiser steps timed")
    parser.add_argument("--main-job", action="store_true", help="also time the main job once per sampler (about 25 min)")
    parser.add_argument("--kl-dw", help="a dW.safetensors to steer with in the KL timing (default: the sycophancy persona prompt)")
    parser.add_argument("--kl-alpha", type=float, default=3.3, help="α of --kl-dw (3.3: about the sycophancy dW's calibrated α₊)")
    parser.add_argument("--compare", action="store_true", help="also time one comparison, sycophancy seed 0, from scratch (99 min in the last run)")
    args = parser.parse_args()
    out = Path(args.out)
    result = {"load_average_at_start": os.getloadavg()[0], "threads": torch.get_num_threads(), "torch": torch.__version__}
    for key in ("main_job_s", "main_job_s_before", "compare_s_per_behaviour_seed", "compare_s_per_behaviour_seed_before", "peak_rss_gib"):
        result[key] = None
    model, tokenizer = load_model("smollm2-135m-instruct")
    flops = sum(flops_per_token(model).values())
    result["gflop_per_token"] = flops / 1e9
    result["gemm_gflops"] = gemm_roofline(model)
    result.update(bench_generation(model, tokenizer, args.generations))
    result["generation_roofline_fraction"] = result["generation_tok_s"] * flops / 1e9 / result["gemm_gflops"]
    write_json(out, result)   # after every stage, so that a stopped run keeps what it measured
    result.update(bench_scoring(model, tokenizer, args.dilemmas, flops))
    result["scoring_roofline_fraction"] = result["scoring_gflop_s"] / result["gemm_gflops"]
    result["scoring_fair_baseline_roofline_fraction"] = result["scoring_fair_baseline_gflop_s"] / result["gemm_gflops"]
    result.update(bench_training(model, tokenizer, args.train_steps))
    result.update(bench_kl_measurement(model, tokenizer, args.kl_dw, args.kl_alpha))
    result.update(calibration_counts())
    write_json(out, result)
    del model
    if args.main_job:
        result["main_job_s_before"], _ = _timed_cli("run", "--behavior", "sycophancy", "--sampler", "transformers")
        write_json(out, result)
        result["main_job_s"], result["peak_rss_gib"] = _timed_cli("run", "--behavior", "sycophancy", "--sampler", "cached")
        write_json(out, result)
    if args.compare:
        result["compare_s_per_behaviour_seed"], _ = _timed_cli("compare", "--behavior", "sycophancy", "--seed", "0")
        write_json(out, result)
    print("| measure | before | after | ratio |\n|---|---:|---:|---:|")
    for name in ("generation_tok_s", "scoring_rows_s", "training_examples_s", "kl_seconds_per_measurement", "kl_measurements_per_sign",
                 "main_job_s", "compare_s_per_behaviour_seed"):
        before, after = result.get(f"{name}_before"), result.get(name)
        ratio = f"{after / before:.2f}×" if before and after else "—"
        print(f"| {name} | {before if before is None else f'{before:.2f}'} | {after if after is None else f'{after:.2f}'} | {ratio} |")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
