"""Serve a dW in llama.cpp: export it as a GGUF LoRA adapter and compare llama.cpp's held-out Yes/No logratio with
the fp32 steered model's at α ∈ {−1, 0, 1}.

    pip install llama-cpp-python          # optional: builds llama.cpp from source (minutes on 2 cores)
    python benchmarks/bench_gguf_export.py --dw out/sycophancy/smollm2-135m-instruct/dw-lora-seed0-… \
        [--behavior sycophancy] [--json docs/gguf_export.json]

llama.cpp runs the embedded model's own GGUF (Q4_1 weights, quantised matmuls) with ``adapter.gguf`` at
``lora_scale = α``; the fp32 side is the same weights dequantised, steered by ``α·dW``
(:func:`weight_steering.steer.steer`). Both score the same token ids (the rendered held-out rows, both framings)
as log P(Yes set) − log P(No set) at the last position. The base differs by quantised arithmetic, so the result is
an agreement (Spearman ρ over rows, mean |Δ logratio|) and the direction of the effect at α = ±1 (mean logratio
minus α = 0's), not an equality.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from weight_steering.behaviors import load_behavior
from weight_steering.diff import load_dw
from weight_steering.evaluate import YES_NO, answer_sets, evaluate
from weight_steering.eval_rows import held_out_rows
from weight_steering.export import GGUF_FILE, export_dw
from weight_steering.models import DEFAULT_MODEL, EMBEDDED_MODELS, load_model, locate_embedded_gguf

ALPHAS = (-1.0, 0.0, 1.0)


def llama_cpp_logratios(gguf_model: Path, adapter: Path, alpha: float, token_ids: list[list[int]], sets: list[list[int]],
                        threads: int) -> np.ndarray:
    """log P(Yes set) − log P(No set) after each row's tokens, from llama.cpp with the adapter at scale α. ``[N]``."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf_model), lora_path=str(adapter), lora_scale=alpha, n_ctx=1024, n_threads=threads,
                n_batch=512, verbose=False)
    out = []
    for ids in token_ids:
        llm.reset()
        llm.eval(ids)
        logits = torch.tensor(np.asarray(llm.scores[llm.n_tokens - 1]), dtype=torch.float64)  # [vocab]
        log_p = torch.log_softmax(logits, -1)
        out.append(float(torch.logsumexp(log_p[sets[0]], 0) - torch.logsumexp(log_p[sets[1]], 0)))
    llm.close()
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dw", required=True, help="a dW folder (or dW.safetensors) for the embedded model")
    parser.add_argument("--behavior", default="sycophancy")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="an embedded model (its GGUF is what llama.cpp serves)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the numbers here (e.g. docs/gguf_export.json)")
    args = parser.parse_args()
    if args.model not in EMBEDDED_MODELS:
        parser.error(f"--model must be an embedded model with a GGUF ({', '.join(EMBEDDED_MODELS)}); got {args.model}")

    model, tokenizer = load_model(args.model)
    dw = load_dw(args.dw, model)
    rows = held_out_rows(tokenizer, load_behavior(args.behavior))
    rows = [r for r in rows if r["eval"] != "held_out_pair"]
    if not rows:
        parser.error(f"{args.behavior} has no Yes/No held-out rows to compare")
    sets = answer_sets(tokenizer, YES_NO)
    token_ids = [tokenizer(r["text"], add_special_tokens=False)["input_ids"] for r in rows]

    start = time.perf_counter()
    records = evaluate(model, tokenizer, dw, rows, alphas=ALPHAS)
    fp32 = {a: np.array([r["logratio"] for r in records if r["alpha"] == a]) for a in ALPHAS}
    fp32_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        adapter = export_dw(dw, model, Path(tmp) / "adapter", fmt="gguf") / GGUF_FILE
        export_s = time.perf_counter() - start
        size_mb = adapter.stat().st_size / 2**20
        gguf_model = locate_embedded_gguf(args.model)
        start = time.perf_counter()
        served = {a: llama_cpp_logratios(gguf_model, adapter, a, token_ids, sets, args.threads) for a in ALPHAS}
        llama_s = time.perf_counter() - start

    result = {"dw": str(args.dw), "behavior": args.behavior, "model": args.model, "gguf_model": gguf_model.name,
              "n_rows": len(rows), "adapter_mb": round(size_mb, 2), "export_s": round(export_s, 2),
              "fp32_eval_s": round(fp32_s, 2), "llama_cpp_eval_s": round(llama_s, 2), "per_alpha": {}}
    for a in ALPHAS:
        rho = spearmanr(fp32[a], served[a]).statistic
        result["per_alpha"][f"{a:+g}"] = {
            "spearman_rho": float(rho), "mean_abs_diff": float(np.abs(fp32[a] - served[a]).mean()),
            "mean_logratio_fp32": float(fp32[a].mean()), "mean_logratio_llama_cpp": float(served[a].mean()),
        }
    for a in (-1.0, 1.0):
        effect_fp32, effect_served = float((fp32[a] - fp32[0.0]).mean()), float((served[a] - served[0.0]).mean())
        result["per_alpha"][f"{a:+g}"].update({
            "effect_fp32": effect_fp32, "effect_llama_cpp": effect_served, "same_direction": bool(np.sign(effect_fp32) == np.sign(effect_served)),
            "row_sign_agreement": float(np.mean(np.sign(fp32[a] - fp32[0.0]) == np.sign(served[a] - served[0.0]))),
        })
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
