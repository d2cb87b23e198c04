"""What steering in bf16 costs: α·dW added to bf16 weights against the same steer in fp32, on the embedded model.

    python benchmarks/bench_bf16_steering.py --dw out/tone/smollm2-135m-instruct/dw-lora-seed0-<key>

:func:`weight_steering.core.steer.steer` forms W + α·dW in fp32 and rounds the sum to the parameter's dtype, so in bf16 the
steered weight carries bf16 rounding (8 bits of mantissa) of the sum. This compares, at each α and on the neutral
calibration prompts rendered with the chat template, the next-token log-probabilities of every position under

* fp32 weights steered in fp32 (the reference), and
* bf16 weights steered by the same code (the CUDA default),

and reports the largest and mean |Δ log p| over the vocabulary, the mean KL(fp32 ‖ bf16) per position, and beside them
the same at α = 0 (what bf16 costs without steering) and the steer's own effect in fp32 (KL(steered ‖ base)), so the
rounding can be read against the signal. Also checks that the bf16 weights come back bit-exactly. Writes
``docs/bf16_steering.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@torch.inference_mode()
def log_probs(model, batch) -> torch.Tensor:
    """``[N, T, V]`` fp32 log-probabilities at every real position (pads masked to 0 later)."""
    return torch.log_softmax(model(**batch).logits.float(), dim=-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dw", required=True)
    parser.add_argument("--alphas", default="-2,-1,1,2")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "docs" / "bf16_steering.json"))
    args = parser.parse_args()
    from weight_steering.core.chat import render_chat
    from weight_steering.core.diff import load_dw
    from weight_steering.evaluation.datasets import load_neutral, neutral_split
    from weight_steering.core.models import load_model
    from weight_steering.core.steer import steer

    fp32, tokenizer = load_model(device="cpu", dtype="float32")
    bf16, _ = load_model(device="cpu", dtype="bfloat16")
    dw = load_dw(args.dw, fp32)
    prompts = [p["instruction"] for p in neutral_split(load_neutral())[0]][: args.prompts]
    texts = [render_chat(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    mask = batch["attention_mask"].bool()  # [N, T]
    before = {k: v.clone() for k, v in bf16.state_dict().items()}

    def compare(reference: torch.Tensor, other: torch.Tensor) -> dict:
        diff = (reference - other).abs()[mask]  # [positions, V]
        kl = (reference.exp() * (reference - other)).sum(-1)[mask]
        return {"max_abs_logp_diff": float(diff.max()), "mean_abs_logp_diff": float(diff.mean()), "mean_kl": float(kl.mean()),
                "max_kl": float(kl.max())}

    base32 = log_probs(fp32, batch)
    rows = [{"alpha": 0.0, "bf16_vs_fp32": compare(base32, log_probs(bf16, batch)), "steer_kl_fp32": 0.0}]
    for alpha in (float(a) for a in args.alphas.split(",")):
        with steer(fp32, dw, alpha):
            ref = log_probs(fp32, batch)
        with steer(bf16, dw, alpha):
            got = log_probs(bf16, batch)
        steer_kl = (ref.exp() * (ref - base32)).sum(-1)[mask].mean()
        rows.append({"alpha": alpha, "bf16_vs_fp32": compare(ref, got), "steer_kl_fp32": float(steer_kl)})
        print(json.dumps(rows[-1]), flush=True)
    restored = all(torch.equal(before[k], v) for k, v in bf16.state_dict().items())
    result = {"dw": str(args.dw), "n_prompts": len(prompts), "n_positions": int(mask.sum()), "bf16_restored_bit_exactly": restored,
              "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
