"""The hypotheses' rendering: which base-model subspace predicts where dW lives, per dW and over seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..rendering import save_figure


def render_hypotheses(result: dict) -> str:
    """Markdown of :func:`weight_steering.hypotheses.run.score_candidates`: write-side (and mixed) candidates ranked by the
    size-balanced R_w with the share of the ceiling and R_act; the read-side candidates in their own table."""
    def value(entry, name, digits=2):
        return f"{entry[name]:.{digits}f}" if name in entry else "–"

    lines = [f"k = {result['k']}, layers {result['layers'][0]}–{result['layers'][-1]}, null: {result['n_null']} random rank-k subspaces "
             "per layer (R = share / null mean share; 1 = chance).", "",
             "| write-side candidate | side | R_w (o, down equally weighted) | % of ceiling | R_act | z_act |", "|---|---|---|---|---|---|"]
    for e in (e for e in result["summary"] if e["side"] != "read"):
        lines.append(f"| {e['candidate']} | {e['side']} | {value(e, 'r_w')} | {value(e, 'pct_ceiling', 1)} | {value(e, 'r_act')} | {value(e, 'z_act', 1)} |")
    lines += ["", "| read-side candidate | R_read (dW's q, k, v, gate, up on their input side) | R_act | z_act |", "|---|---|---|---|"]
    for e in (e for e in result["summary"] if e["side"] == "read"):
        lines.append(f"| {e['candidate']} | {value(e, 'r_read')} | {value(e, 'r_act')} | {value(e, 'z_act', 1)} |")
    if result["unavailable"]:
        lines += [""] + [f"* {name}: not scored: {why}" for name, why in result["unavailable"].items()]
    return "\n".join(lines) + "\n"


def render_hypothesis_seeds(summary: dict) -> str:
    """Markdown of :func:`weight_steering.hypotheses.seeds.summarize_hypotheses`: the write-side ranking across dWs (per family
    its per-seed R_w and a t-interval over its seeds; % of the ceiling and R_act as means) and the rank agreement."""
    def fmt(values, digits=2):
        return " / ".join("–" if not np.isfinite(v) else f"{v:.{digits}f}" for v in values)

    families = list(summary["ranking"][0]["families"]) if summary["ranking"] else []
    lines = [f"k = {summary['k']}; dWs: {', '.join(summary['dws'])}. R = share / random rank-k share (1 = chance); "
             "per family: R_w at each seed, then mean [Student-t 95% over seeds].", ""]
    header = "| candidate | side | mean R_w over dWs | " + " | ".join(f"{f}: R_w per seed | {f}: mean [t 95%] | {f}: % of ceiling | {f}: R_act" for f in families) + " |"
    lines += [header, "|" + "---|" * (3 + 4 * len(families))]
    for e in summary["ranking"]:
        cells = []
        for f in families:
            fam = e["families"][f]
            interval = fam["r_w_interval"]
            ci = f"{interval['mean']:.2f} [{interval['ci_low']:.2f}, {interval['ci_high']:.2f}]" if np.isfinite(interval["ci_low"]) else f"{interval['mean']:.2f}"
            cells += [fmt(fam["r_w"]), ci, f"{np.nanmean(fam['pct_ceiling']):.1f}", f"{np.nanmean(fam['r_act']):.2f}" if np.isfinite(fam["r_act"]).any() else "–"]
        lines.append(f"| {e['candidate']} | {e['side']} | {e['mean_r_w']:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Ceiling (dW's own top-k write directions), R_w per seed: " + "; ".join(f"{f} {fmt(v, 1)}" for f, v in summary["ceiling_r_w"].items()), ""]
    agreement = summary["agreement"]
    lines += [f"Rank agreement of R_w over the {agreement['n_candidates']} ranked candidates (mean Spearman ρ over pairs of dWs; null: "
              "every dW's values permuted independently):", "", "| pairs | n pairs | mean ρ | null mean | null p95 | p (one-sided) |", "|---|---|---|---|---|---|"]
    for label, key in (("seeds of one family", "within_family"), ("different families", "across_families")):
        a = agreement[key]
        if a["n_pairs"]:
            lines.append(f"| {label} | {a['n_pairs']} | {a['mean_rho']:+.2f} | {a['null_mean']:+.2f} | {a['null_p95']:+.2f} | {a['p_value']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_hypotheses(result: dict, path: str | Path) -> Path:
    """Left: R_act against R_w per candidate (means over layers), the ceiling marked; right: R_w per layer."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for e in result["summary"]:
        if "r_w" not in e or "r_act" not in e:
            continue
        marker = "*" if e["side"] == "ceiling" else "o"
        left.scatter(e["r_w"], e["r_act"], marker=marker, s=80 if marker == "*" else 25)
        left.annotate(e["candidate"], (e["r_w"], e["r_act"]), fontsize=7)
    left.axhline(1, color="grey", lw=0.5)
    left.axvline(1, color="grey", lw=0.5)
    left.set(xlabel="R_w (dW's write-side energy in the subspace, over chance)", ylabel="R_act (held-out contrast energy, over chance)")
    for name in dict.fromkeys(r["candidate"] for r in result["rows"] if "r_w" in r):
        mine = [r for r in result["rows"] if r["candidate"] == name and "r_w" in r]
        right.plot([r["layer"] for r in mine], [r["r_w"] for r in mine], marker=".", label=name, ls="--" if name.startswith("dw_") else "-")
    right.axhline(1, color="grey", lw=0.5)
    right.set(xlabel="layer", ylabel="R_w")
    right.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)
