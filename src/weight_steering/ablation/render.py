"""The ablation's rendering: retained effect per variant against its nulls, per layer, and over seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..rendering import METRIC_LABELS, save_figure, seed_text

ABLATION_METRIC_LABELS = {"id_controlled": "framing-controlled agreement (ID)", "id": "opinion framing (ID)",
                          "id_neutral": "neutral framing, the Yes shift (ID)", "dilemmas_honesty": "OOD honesty, action-stratified"}


def render_ablation(result: dict) -> str:
    """Markdown of :func:`weight_steering.ablation.run.run_ablation`: retained (95% CI) and energy per variant and metric."""
    lines = [f"# Ablation of `{result['dw']}` at α = {result['alpha']:+g}", "",
             "retained = Δ(variant) / Δ(full dW) on identical rows (Δ against α = 0); energy = ‖dW′‖² / ‖dW‖². "
             "`_random` rows are norm-matched random controls of the variant named before them.", "",
             "| variant | group | metric | retained | 95% CI | Δ variant | energy |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if not r["available"]:
            why = ("no additive adapter-native split for this family, or its adapters are not next to the dW" if r["group"] == "native"
                   else "selects no tensor of this dW")
            lines.append(f"| {r['variant']} | {r['group']} | – | unavailable ({why}) | | | |")
        elif not r["defined"]:
            lines.append(f"| {r['variant']} | {r['group']} | {r['metric']} | undefined: the full effect's CI contains 0 | | "
                         f"{r['delta_variant']:+.4f} | {r['energy_fraction']:.3f} |")
        else:
            lines.append(f"| {r['variant']} | {r['group']} | {r['metric']} | {r['retained']:+.2f} | [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}] "
                         f"| {r['delta_variant']:+.4f} | {r['energy_fraction']:.3f} |")
    if result.get("alignment"):
        frame = pd.DataFrame(result["alignment"])
        lines += ["", "## Concentration of dW in the top 10% singular subspaces of the pretrained W", "",
                  "ratio = energy share / (k/r)² null; z against 50 random subspace pairs. Mean over layers.", "",
                  "| projection | tensors | energy share | ratio to null | z |", "|---|---|---|---|---|"]
        for proj, part in frame.groupby("projection"):
            lines.append(f"| {proj} | {len(part)} | {part['energy_top'].mean():.3f} | {part['ratio'].mean():.2f} | {part['z'].mean():+.1f} |")
    if "activation_alignment_note" in result:
        lines += ["", "## Concentration of dW in the persona-contrast activation subspace", "", result["activation_alignment_note"] + "."]
        frame = pd.DataFrame([r for r in result["activation_alignment"] if r["available"]])
        if len(frame):
            k, hidden = int(frame["k"].iloc[0]), int(frame["hidden"].iloc[0])
            lines += ["", f"Top-{k} PCA subspace of the contrast differences (uncentred) of the stream each tensor touches: "
                      "output side for o/down (block output), input side for q/k/v (normalised block input). "
                      f"ratio = energy share / ({k}/{hidden}) null; z against 200 random {k}-dim subspaces. Mean over layers.", "",
                      "| projection | side | tensors | energy share | ratio to null | z |", "|---|---|---|---|---|---|"]
            for (proj, side), part in frame.groupby(["projection", "side"]):
                lines.append(f"| {proj} | {side} | {len(part)} | {part['energy'].mean():.3f} | {part['ratio'].mean():.2f} | {part['z'].mean():+.1f} |")
        skipped = sorted({r["projection"] for r in result["activation_alignment"] if not r["available"]})
        if skipped:
            lines.append(f"\nNot measured ({', '.join(skipped)}): they read the mid-layer stream, which the contrast does not read.")
    return "\n".join(lines) + "\n"


def plot_retained(rows: list[dict], path: str | Path) -> Path:
    """Scatter of retained against energy fraction per metric (controls hollow), atomically written."""
    metrics = sorted({r["metric"] for r in rows if r.get("available") and r.get("defined")})
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(4.2 * max(1, len(metrics)), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for r in (r for r in rows if r.get("metric") == metric and r.get("defined")):
            control = r["control_of"] is not None
            ax.scatter(r["energy_fraction"], r["retained"], facecolors="none" if control else "C0", edgecolors="C1" if control else "C0", s=18)
        ax.axhline(0, color="grey", lw=0.5)
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        ax.set(title=METRIC_LABELS.get(metric, metric), xlabel="energy fraction ‖dW′‖²/‖dW‖²", ylabel="retained")
        ax.title.set_fontsize(9)
    return save_figure(fig, path)


def plot_layer_retained(rows: list[dict], path: str | Path) -> Path | None:
    """Per-layer bars of retained (95% CI) for ``layer_L_only``, its norm-matched random control and
    ``without_layer_L``, one panel per metric; atomically written. None when the layer group did not run."""
    import re

    pattern = re.compile(r"^(?:layer_|without_layer_)(\d+)(?:_only(?:_random)?)?$")
    scored = [r for r in rows if r.get("available") and r.get("defined") and pattern.match(r["variant"])]
    metrics = sorted({r["metric"] for r in scored})
    if not metrics:
        return None
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 2.8 * len(metrics)), squeeze=False)
    kinds = (("layer_{}_only", "layer alone", "C0"), ("layer_{}_only_random", "its random control", "C7"),
             ("without_layer_{}", "all but this layer", "C1"))
    for ax, metric in zip(axes[:, 0], metrics):
        by = {r["variant"]: r for r in scored if r["metric"] == metric}
        layers = sorted({int(pattern.match(name).group(1)) for name in by})
        for offset, (names, label, color) in enumerate(kinds):
            values = [by.get(names.format(layer)) for layer in layers]
            x = [i + (offset - 1) * 0.27 for i in range(len(layers))]
            mean = [v["retained"] if v else np.nan for v in values]
            err = np.array([[v["retained"] - v["ci_low"], v["ci_high"] - v["retained"]] if v else [np.nan, np.nan] for v in values]).T
            ax.bar(x, mean, width=0.27, color=color, label=label, yerr=err, capsize=1.5, error_kw={"lw": 0.6})
        ax.axhline(0, color="grey", lw=0.5)
        ax.axhline(1, color="grey", lw=0.5, ls=":")
        ax.set_xticks(range(len(layers)), [str(layer) for layer in layers])
        ax.set(ylabel="retained", title=METRIC_LABELS.get(metric, metric))
        ax.title.set_fontsize(9)
    axes[0, 0].legend(fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("decoder layer")
    return save_figure(fig, path)


def render_ablation_seeds(summary: list[dict]) -> str:
    """Markdown of :func:`weight_steering.ablation.seeds.summarize_ablation_seeds`: per family and metric, each variant's
    retained per seed (with its norm-matched random control and within-dW null, mean ± sd over draws) and the
    t-interval over seeds; then the seeds' rank agreement over the projections taken alone."""

    def null(pair) -> str:
        mean, sd = pair
        return "" if mean is None else f"{mean:+.2f} ± {sd:.2f}"

    lines = []
    for group in summary:
        seeds = group["seeds"]
        lines += [f"### {group['family']}: dW seeds {', '.join(map(str, seeds))}", "",
                  "retained = Δ(variant)/Δ(full) at α = +1 per seed (`*`: its 95% CI over claims or dilemmas excludes 0); "
                  "random: norm-matched random draws, within dW: energy-matched subsets of dW's own singular directions "
                  "(mean ± sd over draws, per seed); across seeds: mean with a Student-t 95% interval over the seeds.", ""]
        for metric in dict.fromkeys(r["metric"] for r in group["rows"]):
            lines += [f"#### {ABLATION_METRIC_LABELS.get(metric, metric)}", "",
                      "| variant | energy | " + " | ".join(f"seed {s}" for s in seeds) + " | across seeds [t 95%] | random (per seed) | within dW (per seed) |",
                      "|---|---|" + "---|" * len(seeds) + "---|---|---|"]
            for row in (r for r in group["rows"] if r["metric"] == metric):
                cells = ["–" if not np.isfinite(v) else f"{v:+.2f}{'*' if lo > 0 or hi < 0 else ''}" for v, (lo, hi) in zip(row["per_seed"], row["row_ci"])]
                energy = [e for e in row["energy"] if e is not None]
                across = seed_text(row, 2) if row["n"] else "–"
                energy_text = f"{np.mean(energy):.2f}" if energy else "–"
                lines.append(f"| {row['variant']} | {energy_text} | " + " | ".join(cells) + f" | {across} | "
                             + " / ".join(null(p) for p in row["random"]) + " | " + " / ".join(filter(None, (null(p) for p in row["within"]))) + " |")
            lines.append("")
        if group["agreement"]:
            lines += ["Do the seeds put the effect in the same projections? Spearman ρ of retained over the seven projections "
                      "taken alone (no shared tensor, so nothing built in), permutation p (2,000 shuffles).", "",
                      "| metric | seeds | ρ | p | n |", "|---|---|---|---|---|"]
            for metric, pairs in group["agreement"].items():
                for pair in pairs:
                    rho = "–" if not np.isfinite(pair["spearman"]) else f"{pair['spearman']:+.2f}"
                    p_value = "–" if not np.isfinite(pair["p_value"]) else f"{pair['p_value']:.3f}"
                    lines.append(f"| {ABLATION_METRIC_LABELS.get(metric, metric)} | {pair['a']} vs {pair['b']} | {rho} | {p_value} | {pair['n_variants']} |")
            lines.append("")
    return "\n".join(lines)
