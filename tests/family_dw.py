"""The dW of every adapter family on the embedded model, from a few fixed rows: the regression fixture that keeps
training's arithmetic (and so every archived dW and its stage key) byte-stable when the training code changes.

``python tests/family_dw.py`` records ``tests/data/family_dw_sha256.json`` with the code as it is; the ``real`` test
``test_every_family_gives_its_recorded_dw`` compares against it.
"""

from __future__ import annotations

import json
from pathlib import Path

RECORD = Path(__file__).parent / "data" / "family_dw_sha256.json"
ROWS = [{"prompt": f"What should I pack for trip number {i}?", "response_positive": f"Ooh, trip {i}! Grab snacks, a hoodie and tunes, you're set!",
         "response_negative": f"For trip {i}, I recommend packing provisions, a jumper and reading material."} for i in range(8)]


def family_dw_sha256(model, tokenizer, families=None) -> dict[str, str]:
    """``family -> SHA-256`` of dW = Δ⁺ − Δ⁻ (:func:`weight_steering.artifacts.tensors_sha256`), two steps of batch 4 per sign."""
    from weight_steering.artifacts import tensors_sha256
    from weight_steering.diff import compute_dw
    from weight_steering.train import ADAPTER_FAMILIES, TrainConfig, train_adapter

    out = {}
    for family in families or ADAPTER_FAMILIES:
        cfg = TrainConfig(family=family, batch_size=4, max_length=64, seed=0)
        deltas = [train_adapter(model, tokenizer, ROWS, sign, cfg)[0] for sign in ("positive", "negative")]
        out[family] = tensors_sha256(compute_dw(*deltas).tensors)
    return out


if __name__ == "__main__":
    import subprocess

    from weight_steering.models import load_model

    model, tokenizer = load_model()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    RECORD.write_text(json.dumps({"commit": commit, "model": "smollm2-135m-instruct", "dtype": "float32", "device": "cpu",
                                  "sha256": family_dw_sha256(model, tokenizer)}, indent=2) + "\n")
    print(RECORD.read_text())
