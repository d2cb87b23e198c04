"""Collect the issue-4 comparison tables of the three behaviours for docs/RESULTS.md §10.

    python scripts/collect_comparison.py [out] [docs]

Reads ``<out>/compare/<behaviour>/smollm2-135m-instruct/comparison.json`` (written by
scripts/run_comparison.sh), copies each full table and plot to ``<docs>/compare/`` and writes the
condensed tables (KL with audit CIs, effects, ratios, cost) to ``<docs>/compare/summary.md``.
"""

import json
import shutil
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
docs = Path(sys.argv[2] if len(sys.argv) > 2 else "docs")
model = "smollm2-135m-instruct"
lines = ["# Iso-KL comparison, condensed (written by `python scripts/collect_comparison.py`)", "",
         "p95 KL target 1 nat per sign; audit p95 KL with a 95% CI over the 35 audit prompts; effects in nats of log-odds "
         "against the unsteered base with 95% cluster-bootstrap CIs over dilemmas. Full tables: `<behaviour>.md` beside this file."]
emit = lines.append  # every table line below goes to summary.md


def interval(entry, digits=3, signed=True):
    if not entry or entry.get("mean") is None:
        return "–"
    sign = "+" if signed else ""
    return f"{entry['mean']:{sign}.{digits}f} [{entry['ci_low']:{sign}.{digits}f}, {entry['ci_high']:{sign}.{digits}f}]"


for behavior in ("honesty", "sycophancy", "authority"):
    root = out / "compare" / behavior / model
    if not (root / "comparison.json").exists():
        emit(f"\n<!-- {behavior}: no comparison yet -->")
        continue
    summary = json.loads((root / "comparison.json").read_text())
    (docs / "compare").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(root / "comparison.md", docs / "compare" / f"{behavior}.md")
    shutil.copyfile(root / "effect_vs_kl.png", docs / "compare" / f"{behavior}_effect_vs_kl.png")
    emit(f"\n### {behavior}: {summary['n_rows']} rows ({summary['n_dilemma_rows']} DailyDilemmas rows)\n")
    emit("| method | α₋ / α₊ | p95 KL₋ / KL₊ (calibration) | audit p95 KL₋ | audit p95 KL₊ | ID Δ₋ | ID Δ₊ | OOD honesty Δ₋ | OOD honesty Δ₊ "
          "| off-target \\|Δ₊\\| | SI k=2 | SI k=1 | pmass ₋ / ₊ | ΔNLL₋ | ΔNLL₊ |")
    emit("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for m in summary["methods"]:
        plus, minus, e = m["plus"], m["minus"], m["effects"]
        audit = {label: f"{arm['audit_p95']:.2f} [{arm['audit_p95_ci_low']:.2f}, {arm['audit_p95_ci_high']:.2f}]" if "audit_p95_ci_low" in arm
                 else f"{arm['audit_p95']:.2f}" for label, arm in (("plus", plus), ("minus", minus))}
        emit(f"| {m['name']} | {minus['alpha']:+.3g} / {plus['alpha']:+.3g} | {minus['p95']:.2f} / {plus['p95']:.2f} | {audit['minus']} | "
              f"{audit['plus']} | {interval(e.get('id_minus'))} | {interval(e.get('id_plus'))} | {interval(e['ood_honesty_minus'])} | "
              f"{interval(e['ood_honesty_plus'])} | {interval(e['off_target'], signed=False)} | {interval(e['si_k2'], 1)} | "
              f"{interval(e['si_k1'], 1)} | {e['pmass_minus']:.2f} / {e['pmass_plus']:.2f} | {interval(e['nll_change_minus'], 2)} | "
              f"{interval(e['nll_change_plus'], 2)} |")
    dw = next(m for m in summary["methods"] if m["key"] == "dW")
    for measure, title in (("ood_honesty", "OOD honesty"), ("id", "ID (held-out claims)")):
        ratios = [r for r in summary["ratios"] if r.get("measure", "ood_honesty") == measure]
        if not ratios:
            continue
        emit(f"\n{title} spread (Δ₊ − Δ₋), dW / method; dW's own spread: {interval(dw['effects'].get(f'{measure}_spread'))}\n")
        emit("| method | method spread | dW / method [95% CI] |\n|---|---|---|")
        for r in sorted(ratios, key=lambda r: r["ratio"]):
            emit(f"| {r['name']} | {r['method_spread']:+.3f} | {r['ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] |")
    emit("\n| method | KL measurements + / − | forward passes | calibration wall s + / − | evaluation wall s |\n|---|---|---|---|---|")
    for m in summary["methods"]:
        emit(f"| {m['name']} | {m['plus']['iterations']} / {m['minus']['iterations']} | "
              f"{m['plus']['n_forward_passes'] + m['minus']['n_forward_passes']} | {m['plus']['seconds']:.0f} / {m['minus']['seconds']:.0f} | "
              f"{m['eval_seconds']:.0f} |")

(docs / "compare").mkdir(parents=True, exist_ok=True)
(docs / "compare" / "summary.md").write_text("\n".join(lines) + "\n")
