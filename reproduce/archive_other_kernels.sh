#!/usr/bin/env bash
# A committed comparison archive resumed on other CPU kernels (docs/engineering.md §1): the tone comparison at seed 0,
# exactly as reproduce/comparison_followable.sh ran it, in a clean clone of HEAD (a fresh output root, its own copy of
# docs/compare/archive) under ATEN_CPU_CAPABILITY=default, torch's non-vectorised kernels. The adapters are retrained
# there (dW's low bits differ); every other stage should come from the archive. It prints how many comparison stages
# were reused (marker identical to the archived one) or recomputed, whether the archive is unchanged byte for byte
# (git status of the clone), and, when this checkout has the same dW trained under its native kernels in out/, the
# largest per-tensor difference between the two dWs relative to the tensor's norm.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CLONE=${CLONE:-$REPO/out/other_kernels/clone}
rm -rf "$CLONE" && git clone -q "$REPO" "$CLONE"
cd "$CLONE"
/usr/bin/time -f "resume under ATEN_CPU_CAPABILITY=default: %e s" env ATEN_CPU_CAPABILITY=default "$REPO/.venv/bin/wsteer" compare \
  --behavior tone --seed 0 --methods dW,persona,engineered,caa_slice --curve-fractions '' --dilemma-limit 64 --archive docs/compare/archive
"$REPO/.venv/bin/python" - "$REPO" <<'EOF'
import subprocess, sys
from pathlib import Path

import torch
from safetensors.torch import load_file

repo, clone = Path(sys.argv[1]), Path.cwd()
archived = clone / "docs/compare/archive/smollm2-135m-instruct/tone/compare"
markers = sorted((clone / "out/compare/tone/smollm2-135m-instruct").glob("*/stage.json"))
same = [m for m in markers if (archived / m.parent.name / "stage.json").is_file()
        and (archived / m.parent.name / "stage.json").read_bytes() == m.read_bytes()]
print(f"comparison stages: {len(markers)}, reused from the archive: {len(same)}, recomputed: {len(markers) - len(same)}"
      f" ({sorted(m.parent.name for m in markers if m not in same)})")
changed = subprocess.run(["git", "status", "--porcelain", "docs/compare/archive"], capture_output=True, text=True, check=True).stdout
print("archive unchanged byte for byte" if not changed else f"archive changed:\n{changed}")
[here] = (clone / "out/tone/smollm2-135m-instruct").glob("dw-lora-seed0-*")
native = repo / "out/tone/smollm2-135m-instruct" / here.name / "dW.safetensors"
if native.is_file():
    a, b = load_file(str(here / "dW.safetensors")), load_file(str(native))
    worst = max(float((a[k] - b[k]).norm() / b[k].norm()) for k in b)
    print(f"dW under default kernels against native ({torch.backends.cpu.get_cpu_capability()}): same stage {here.name}, "
          f"bytes {'identical' if all(torch.equal(a[k], b[k]) for k in b) else 'differ'}, max ‖ΔdW_t‖/‖dW_t‖ = {worst:.2e}")
EOF
