"""Peak memory of ``train_adapter`` against the model's own bytes, per adapter family, on a ≥ 1B random model.

    python benchmarks/bench_train_memory.py                     # a 1.05B Llama in fp32 on the CPU, all 13 families
    python benchmarks/bench_train_memory.py --families lora,pissa --layers 4   # a quick look

Each family runs in its own child process (a fresh heap, so one family's peak cannot hide in another's): it builds a
random Llama (hidden 2048, intermediate 5632, 16 heads / 8 KV heads, vocabulary 49,152 untied; 18 layers, the default, give
1.05B parameters, 3.92 GiB in fp32), then trains the family for two optimiser steps of batch 4 on fixed rows with the
project's defaults (layers 30–80%, q/k/v/o/gate/up/down) and writes Δ to a safetensors file a module at a time, as the
main job does (``delta_path``; returned as a dict instead, Δ would add every adapted weight's size in fp32). A thread samples the process's resident memory
every 5 ms; reported per family:

* ``model_gib``: the parameters' bytes; ``before_gib``: resident memory after the model was built;
* ``peak_gib``: the highest resident memory during ``train_adapter``; ``overhead_gib`` = peak − before;
* ``activation_gib``: the highest resident memory above ``before`` during one forward and backward pass of the same
  batch on the model with only the first adapted layer's q_proj trainable (the activations an adapter's backward
  keeps, from that layer up), measured in the same child before training;
* ``runtime_gib`` = before − model bytes (Python, torch, the tokenizer): not the model, so not counted against it;
* ``peak_over_model`` = (peak − runtime) / model bytes, and ``bound_gib`` = 1.25 × model + activations (the target),
  met when peak − runtime ≤ bound.

Writes ``docs/train_memory.json`` (``--out``) and prints a markdown table. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def _trim() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so resident memory measures what is held."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler:
    """The highest resident memory of this process while the ``with`` block runs (sampled every 5 ms)."""

    def __enter__(self):
        self.peak, self._running = _rss(), True
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while self._running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _rss())


def one_family(family: str, layers: int) -> dict:
    """Build the random model, measure activations, train ``family``: the numbers of the module docstring (bytes)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_tokenizer  # a byte-level BPE built in code (no download)
    from family_dw import ROWS

    from weight_steering.core.models import prepare
    from weight_steering.core.train import _collate, tokenize_example, train_adapter
    from weight_steering.core.adapters import TrainConfig, layer_slice

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=49152, hidden_size=2048, intermediate_size=5632, num_hidden_layers=layers, num_attention_heads=16,
                         num_key_value_heads=8, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    model, tokenizer = prepare(LlamaForCausalLM(config).eval(), tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    before = _rss()

    # activations: one forward + backward of the training batch with a single trainable weight at the top
    examples = [tokenize_example(tokenizer, r["prompt"], r["response_positive"], 192) for r in ROWS[:4]]
    batch = _collate(examples, tokenizer.pad_token_id, model.device)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    first = layer_slice(layers, TrainConfig().layer_fraction)[0]  # the backward reaches down to the first adapted layer
    for name, p in model.named_parameters():
        p.requires_grad_(name == f"model.layers.{first}.self_attn.q_proj.weight")
    _trim()
    act_start = _rss()
    with PeakSampler() as act:
        model(**batch).loss.backward()
    for name, p in model.named_parameters():
        p.grad = None
        p.requires_grad_(flags[name])
    activation = act.peak - act_start  # what the pass added on top of the model (freed again after)
    _trim()
    rows = ROWS * 2  # 16 rows: 14 train / 2 validation, two optimiser steps of batch 4
    cfg = TrainConfig(family=family, batch_size=4, epochs=8 / 14, max_length=192, seed=0)
    _trim()
    start = _rss()
    started = time.perf_counter()
    import tempfile

    with PeakSampler() as peak:
        delta, log = train_adapter(model, tokenizer, rows, "positive", cfg, delta_path=Path(tempfile.mkdtemp()) / "delta.safetensors")
    from safetensors import safe_open

    with safe_open(str(delta), framework="pt") as handle:
        n_tensors = len(list(handle.keys()))
    runtime = before - model_bytes
    bound = 1.25 * model_bytes + max(activation, 0)
    return {"family": family, "n_params": n_params, "model_gib": model_bytes / GiB, "before_gib": before / GiB, "runtime_gib": runtime / GiB,
            "start_gib": start / GiB, "peak_gib": peak.peak / GiB, "overhead_gib": (peak.peak - start) / GiB,
            "activation_gib": max(activation, 0) / GiB, "peak_over_model": (peak.peak - runtime) / model_bytes,
            "bound_gib": bound / GiB, "within_bound": peak.peak - runtime <= bound,
            "steps": log["steps"], "seconds": time.perf_counter() - started, "delta_seconds": log["delta_seconds"],
            "step_loop_seconds": log["step_loop_seconds"], "n_tensors": n_tensors, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="all")
    parser.add_argument("--layers", type=int, default=18, help="decoder layers of the random model (18: 1.05B parameters)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "train_memory.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_family(args.child, args.layers)), flush=True)
        return
    from weight_steering.core.adapters import ADAPTER_FAMILIES

    families = list(ADAPTER_FAMILIES) if args.families == "all" else args.families.split(",")
    rows = []
    for family in families:
        done = subprocess.run([sys.executable, __file__, "--child", family, "--layers", str(args.layers)], capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"family": family, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    result = {"machine": f"{os.cpu_count()} CPU cores", "dtype": "float32", "device": "cpu", "layers": args.layers,
              "load_average_at_end": os.getloadavg(), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n| family | params | model GiB | runtime GiB | peak GiB | (peak − runtime) / model | activations GiB | bound GiB (1.25 × model + act.) | within | Δ s | step loop s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['family']} | error: {r['error']} |")
            continue
        print(f"| {r['family']} | {r['n_params'] / 1e9:.2f}B | {r['model_gib']:.2f} | {r['runtime_gib']:.2f} | {r['peak_gib']:.2f} | {r['peak_over_model']:.2f} | "
              f"{r['activation_gib']:.2f} | {r['bound_gib']:.2f} | {'yes' if r['within_bound'] else 'NO'} | {r['delta_seconds']:.1f} | "
              f"{r['step_loop_seconds']:.1f} |")


if __name__ == "__main__":
    main()
