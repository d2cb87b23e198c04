"""The dW of every adapter family on the embedded model, from a few fixed rows, and its fingerprint: the regression
fixture that keeps training's arithmetic (and so every archived dW) stable when the training code changes.

A fingerprint is compared with a tolerance, never byte for byte: fp32 sums round differently on other kernels (AVX2
and AVX-512 give different dW bytes from the same code), so a byte record holds only on the CPU that made it. Per dW
tensor it holds the Frobenius norm and a sketch, the inner product with a fixed Gaussian matrix seeded by the tensor's
name; the sketch of a tensor has the scale of its norm, so both are compared relative to the norm.

``python tests/family_dw.py`` records ``tests/data/family_dw_fingerprint.json`` with the code as it is;
``python tests/family_dw.py --save DIR`` writes each family's dW (and LoRA's at training seed 1);
``python tests/family_dw.py --compare OUT`` compares ``OUT/avx2`` and ``OUT/default`` (where saved) and LoRA at
seed 1 with ``OUT/native``;
``python tests/family_dw.py --record-from DIR`` records from dWs saved by ``--save`` on this machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

RECORD = Path(__file__).parent / "data" / "family_dw_fingerprint.json"
ROWS = [{"prompt": f"What should I pack for trip number {i}?", "response_positive": f"Ooh, trip {i}! Grab snacks, a hoodie and tunes, you're set!",
         "response_negative": f"For trip {i}, I recommend packing provisions, a jumper and reading material."} for i in range(8)]
LAYERS = (0.5, 0.57)  # layers 15 and 16 of 30: two adapted blocks (14 tensors) keep every family's arithmetic in play


def family_dw(model, tokenizer, family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """dW = Δ⁺ − Δ⁻ of ``family`` after two steps of batch 4 per sign on :data:`ROWS` (layers :data:`LAYERS`)."""
    from weight_steering.core.adapters import TrainConfig
    from weight_steering.core.diff import compute_dw
    from weight_steering.core.train import train_adapter

    cfg = TrainConfig(family=family, batch_size=4, max_length=64, seed=seed, layer_fraction=LAYERS)
    deltas = [train_adapter(model, tokenizer, ROWS, sign, cfg)[0] for sign in ("positive", "negative")]
    return compute_dw(*deltas).tensors


def fingerprint(tensors: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    """``{"names", "norm", "sketch"}``: per tensor (sorted by name) ‖dW‖_F and ⟨dW, G⟩ with G ~ N(0, 1/numel) of the
    tensor's shape, seeded by the SHA-256 of its name (float64 sums)."""
    names = sorted(tensors)
    norms, sketches = [], []
    for name in names:
        t = tensors[name].double()
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") % 2**63
        g = torch.randn(t.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) / t.numel() ** 0.5
        norms.append(float(t.norm()))
        sketches.append(float((t * g).sum()))
    return {"names": names, "norm": norms, "sketch": sketches}


def relative_difference(got: dict, recorded: dict) -> float:
    """The largest |Δ norm| and |Δ sketch| over tensors, each relative to the recorded tensor's norm.

    Raises:
        AssertionError: the tensor names differ.
    """
    assert got["names"] == recorded["names"], "the dW tensors differ"
    worst = 0.0
    for n_got, n_rec, s_got, s_rec in zip(got["norm"], recorded["norm"], got["sketch"], recorded["sketch"]):
        worst = max(worst, abs(n_got - n_rec) / n_rec, abs(s_got - s_rec) / n_rec)
    return worst


if __name__ == "__main__":
    import subprocess

    from weight_steering.core.adapters import ADAPTER_FAMILIES
    from weight_steering.core.models import load_model

    if "--compare" in sys.argv:  # the kernel paths saved under OUT/<path>/, against OUT/native/
        from safetensors.torch import load_file

        root = Path(sys.argv[sys.argv.index("--compare") + 1])
        native = {f: fingerprint(load_file(str(root / "native" / f"{f}.safetensors"))) for f in ADAPTER_FAMILIES}
        report = {path: {f: relative_difference(fingerprint(load_file(str(root / path / f"{f}.safetensors"))), native[f])
                         for f in ADAPTER_FAMILIES} for path in ("avx2", "default") if (root / path).is_dir()}
        report["lora seed 1"] = relative_difference(fingerprint(load_file(str(root / "native" / "lora-seed1.safetensors"))), native["lora"])
        print(json.dumps(report, indent=1))
        sys.exit(0)
    if "--record-from" in sys.argv:  # the record, from dWs saved by --save on this machine (the same numbers, no retraining)
        from safetensors.torch import load_file

        folder = Path(sys.argv[sys.argv.index("--record-from") + 1])
        families = {f: fingerprint(load_file(str(folder / f"{f}.safetensors"))) for f in ADAPTER_FAMILIES}
    else:
        families = None
    model, tokenizer = (None, None) if families else load_model()
    if "--save" in sys.argv:
        from safetensors.torch import save_file

        folder = Path(sys.argv[sys.argv.index("--save") + 1])
        folder.mkdir(parents=True, exist_ok=True)
        for family in ADAPTER_FAMILIES:
            save_file(family_dw(model, tokenizer, family), str(folder / f"{family}.safetensors"))
        save_file(family_dw(model, tokenizer, "lora", seed=1), str(folder / "lora-seed1.safetensors"))
        sys.exit(0)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    RECORD.write_text(json.dumps({"commit": commit, "model": "smollm2-135m-instruct", "dtype": "float32", "device": "cpu",
                                  "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                                  "families": families or {f: fingerprint(family_dw(model, tokenizer, f)) for f in ADAPTER_FAMILIES}}) + "\n")
    print(f"recorded {RECORD}")
