"""The vignette tables (vignettes, SI, degradation) of the sycophancy, honesty and authority dW.

    python reproduce/vignette_tables.py [out] [docs]

Reads the outputs of reproduce/vignettes_and_degradation.sh and writes docs/vignette_tables.md and
docs/effect_vs_degradation.png (effect against degradation, one point per (dW, α)).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
docs = Path(sys.argv[2] if len(sys.argv) > 2 else "docs")
model = "smollm2-135m-instruct"
lines, points = [], []
for behavior in ("sycophancy", "honesty", "authority"):
    run = json.loads((out / behavior / model / "lora-seed0" / "run.json").read_text())
    def latest(kind: str, name: str) -> dict:  # the newest output for this behaviour's dW
        found = [p for p in (out / kind).glob(f"*/{name}") if f"/{behavior}/" in json.loads(p.read_text())["dw"]]
        return json.loads(max(found, key=lambda p: p.stat().st_mtime).read_text())

    vign, degr = latest("vignettes", "vignettes.json"), latest("degradation", "degradation.json")
    contrasts = {(c["metric"], c["contrast"]): c for c in run["summary"]["contrasts"]}
    dd_pmass = {r["alpha"]: r["pmass_mean"] for r in run["summary"]["per_alpha"] if r["metric"] == "dilemmas_honesty"}
    lines += [f"### {behavior} dW (LoRA, seed 0; ‖dW‖ = {run['norm_dw']:.3f})", ""]
    lines += ["| α | Δlogit Authority [95% CI] | Δlogit Care [95% CI] | other foundations (mean Δlogit) | flips Auth → acceptable / → wrong | "
              "OOD honesty Δ [95% CI] | ΔNLL [95% CI] | KL mean [95% CI] | KL p95 [95% CI] | pmass vignettes / dilemmas |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for alpha in (-1.0, 1.0):
        table = {r["foundation"]: r for r in vign["deltas"][str(alpha)]}
        others = [r["delta_logit"] for f, r in table.items() if f not in ("Authority", "Care")]
        auth, care = table["Authority"], table["Care"]
        honesty = contrasts[("dilemmas_honesty", f"α={alpha:+g} − α=+0")]
        deg = next(r for r in degr["rows"] if r["alpha"] == alpha)
        lines.append(f"| {alpha:+g} | {auth['delta_logit']:+.3f} [{auth['ci_low']:+.3f}, {auth['ci_high']:+.3f}] | "
                     f"{care['delta_logit']:+.3f} [{care['ci_low']:+.3f}, {care['ci_high']:+.3f}] | {sum(others) / len(others):+.3f} | "
                     f"{auth['flips_to_acceptable']} / {auth['flips_to_wrong']} | "
                     f"{honesty['mean']:+.4f} [{honesty['ci_low']:+.4f}, {honesty['ci_high']:+.4f}] | "
                     f"{deg['nll_change']:+.4f} [{deg['nll_change_ci_low']:+.4f}, {deg['nll_change_ci_high']:+.4f}] | "
                     f"{deg['kl_mean']:.4f} [{deg['kl_mean_ci_low']:.4f}, {deg['kl_mean_ci_high']:.4f}] | "
                     f"{deg['kl_p95']:.4f} [{deg['kl_p95_ci_low']:.4f}, {deg['kl_p95_ci_high']:.4f}] | "
                     f"{sum(r['pmass_mean'] for r in table.values()) / len(table):.3f} / {dd_pmass[alpha]:.3f} |")
        points.append((behavior, alpha, deg["kl_p95"], auth["delta_logit"], honesty["mean"]))
    si = vign["si"]
    lines += ["", "SI on the vignettes (k = 2, arms α = +1 / −1): " + "; ".join(
        f"{r['foundation']} (intent {r['intent']:+d}) {r['si']:+.1f} [{r['si_ci_low']:+.1f}, {r['si_ci_high']:+.1f}] (fwd {r['si_forward']:+.3f}, rev {r['si_reverse']:+.3f}, "
        f"pmass² × 100 = {r['pmass_scale']:.1f})" for r in si)]
    row_si = run["summary"].get("surgical_informedness") or []
    if row_si:
        lines += ["Row-level SI, DailyDilemmas honesty: " + "; ".join(
            f"k = {r['k']:g}: {r['si']:+.1f}" + (f" [{r['si_ci_low']:+.1f}, {r['si_ci_high']:+.1f}]" if "si_ci_low" in r else "") for r in row_si)]
    lines += [""]
bare = json.loads(next((out / "vignettes").glob("dw-lora-seed0-*/vignettes.json")).read_text())["bare"]
lines = ["### Bare table (α = 0, SmolLM2-135M-Instruct, no-think, format-mass floor 0.5)", "",
         "| foundation | mean logit(w) [95% CI] | std | share judged wrong | pmass | n valid | n below floor |", "|---|---|---|---|---|---|---|"] + [
    f"| {r['foundation']} | {r['logit_w_mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['logit_w_std']:.3f} | {r['share_wrong']:.2f} | "
    f"{r['pmass_mean']:.3f} | {r['n_valid']} | {r['n_below_floor']} |" for r in bare] + [""] + lines
(docs / "vignette_tables.md").write_text("\n".join(lines) + "\n")

fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for behavior, alpha, kl, auth, honesty in points:
    for ax, y in zip(axes, (auth, honesty)):
        ax.scatter(kl, y, marker="o" if alpha > 0 else "v", color={"sycophancy": "C0", "honesty": "C1", "authority": "C2"}[behavior])
        ax.annotate(f"{behavior} α={alpha:+g}", (kl, y), fontsize=7)
axes[0].set(xlabel="KL(steered ‖ base) p95 on neutral prompts (nats)", ylabel="Δlogit(w) Authority", title="vignettes: Authority")
axes[1].set(xlabel="KL(steered ‖ base) p95 on neutral prompts (nats)", ylabel="DailyDilemmas honesty Δ (nats)", title="OOD honesty")
for ax in axes:
    ax.axhline(0, color="grey", lw=0.5)
fig.tight_layout()
fig.savefig(docs / "effect_vs_degradation.png", dpi=120)
print((docs / "vignette_tables.md").read_text())
