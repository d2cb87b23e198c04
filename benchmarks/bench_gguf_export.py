"""Serve a dW in llama.cpp: export it as a GGUF LoRA adapter and compare llama.cpp's held-out Yes/No logratio with
the fp32 steered model's at α ∈ {−1, 0, 1}.

    pip install llama-cpp-python          # optional: builds llama.cpp from source (minutes on 2 cores)
    python benchmarks/bench_gguf_export.py --dw out/sycophancy/smollm2-135m-instruct/dw-lora-seed0-… \
        [--behavior sycophancy] [--json docs/gguf_export.json]

llama.cpp runs the embedded model's own GGUF (Q4_1 weights, quantised matmuls) with ``adapter.gguf`` at
``lora_scale = α``; the fp32 side is the same weights dequantised, steered by ``α·dW``. Both score the same token
ids (the rendered held-out rows, both framings). See :func:`weight_steering.export.convert.check_gguf_export`.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from weight_steering.core.behavior_files import load_behavior
from weight_steering.core.diff import load_dw
from weight_steering.evaluation.rows import held_out_rows
from weight_steering.export.convert import check_gguf_export, export_dw
from weight_steering.core.models import DEFAULT_MODEL, EMBEDDED_MODELS, load_model, locate_embedded_gguf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dw", required=True, help="a dW folder (or dW.safetensors) for the embedded model")
    parser.add_argument("--behavior", default="sycophancy")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="an embedded model (its GGUF is what llama.cpp serves)")
    parser.add_argument("--alphas", default="-1,0,1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the numbers here (e.g. docs/gguf_export.json)")
    args = parser.parse_args()
    if args.model not in EMBEDDED_MODELS:
        parser.error(f"--model must be an embedded model with a GGUF ({', '.join(EMBEDDED_MODELS)}); got {args.model}")
    alphas = tuple(float(a) for a in args.alphas.split(","))

    model, tokenizer = load_model(args.model)
    dw = load_dw(args.dw, model)
    rows = [r for r in held_out_rows(tokenizer, load_behavior(args.behavior)) if r["eval"] != "held_out_pair"]
    if not rows:
        parser.error(f"{args.behavior} has no Yes/No held-out rows to compare")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        adapter = export_dw(dw, model, Path(tmp) / "adapter", fmt="gguf")
        export_s = time.perf_counter() - start
        size_mb = (adapter / "adapter.gguf").stat().st_size / 2**20
        start = time.perf_counter()
        result = check_gguf_export(model, tokenizer, dw, rows, locate_embedded_gguf(args.model), adapter, alphas, args.threads)
        check_s = time.perf_counter() - start
    result = {"dw": str(args.dw), "behavior": args.behavior, "model": args.model, "gguf_model": locate_embedded_gguf(args.model).name,
              "adapter_mb": round(size_mb, 2), "export_s": round(export_s, 2), "check_s": round(check_s, 2), **result}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
