"""The sweep's rendering: the family ranking table and its forest plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..rendering import save_figure

RANKING_COLUMNS = {
    "id_controlled_spread": "ID framing-controlled spread (α=+1 − α=−1)",
    "id_spread": "ID opinion-framing spread",
    "id_neutral_spread": "ID neutral-framing spread",
    "ood_target_plus": "OOD target Δ(+1 − 0), stratified",
    "ood_target_minus": "OOD target Δ(−1 − 0), stratified",
    "ood_target_pooled_plus": "OOD target Δ(+1 − 0), pooled",
    "action_bias_plus": "action bias Δ(+1 − 0)",
    "off_target": "off-target |Δ(+1 − 0)|, stratified",
}


def plot_forest(ranking: pd.DataFrame, path: str | Path) -> Path:
    """Forest plot: one panel per ranking metric, one row per (behaviour, family), mean with 95% CI; atomic."""
    metrics = [m for m in RANKING_COLUMNS if m in ranking and ranking[m].notna().any()]
    labels = [f"{r.family} ({r.behavior}, n={r.n_seeds})" for r in ranking.itertuples()]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 0.32 * len(ranking) + 1.6), sharey=True)
    for ax, metric in zip(list(axes) if len(metrics) > 1 else [axes], metrics):
        y = range(len(ranking))[::-1]
        mean = ranking[metric].to_numpy()
        err = [mean - ranking[f"{metric}_ci_low"].to_numpy(), ranking[f"{metric}_ci_high"].to_numpy() - mean]
        ax.errorbar(mean, list(y), xerr=err, fmt="o", ms=4, capsize=2)
        ax.axvline(0, color="grey", lw=0.6)
        ax.set(title=RANKING_COLUMNS[metric], xlabel="nats (log-odds)")
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.title.set_fontsize(9)
    first = list(axes)[0] if len(metrics) > 1 else axes
    first.set_yticks(list(range(len(ranking)))[::-1], labels, fontsize=8)
    return save_figure(fig, path)


def render_ranking(ranking: pd.DataFrame, command: str, wall_seconds: float | None = None, n_cells: int | None = None) -> str:
    """Markdown table of :func:`weight_steering.sweep.ranking.rank_families`, with the command that made it."""
    def ci(row, name):
        return f"{row[name]:+.3f} [{row[f'{name}_ci_low']:+.3f}, {row[f'{name}_ci_high']:+.3f}]" if name in row and pd.notna(row[name]) else "–"

    lines = [f"Command: `{command}`", ""]
    if wall_seconds is not None and n_cells:
        lines += [f"Cells computed in this invocation: {n_cells}, wall {wall_seconds / 60:.1f} min "
                  f"({n_cells / (wall_seconds / 3600):.2f} cells/hour).", ""]
    columns = {m: label for m, label in RANKING_COLUMNS.items() if m in ranking and ranking[m].notna().any()}
    lines += ["| behaviour | family | seeds | OOD target | " + " | ".join(columns.values()) + " | min pmass | ‖dW‖ | sign agreement |",
              "|---|---|---|---|" + "---|" * len(columns) + "---|---|---|"]
    for _, row in ranking.iterrows():
        target = f"{row['ood_target']} ({'+' if row['ood_sign'] > 0 else '−'})" if isinstance(row.get("ood_target"), str) else "–"
        lines.append(f"| {row['behavior']} | {row['family']} | {','.join(map(str, row['seeds']))} | {target} | "
                     + " | ".join(ci(row, m) for m in columns)
                     + f" | {row['min_pmass']:.3f} | {row['norm_dw']:.3g} | {row['sign_agreement']} |")
    lead = next(iter(columns), None)
    if lead:
        lines += ["", f"Per seed ({columns[lead]}, seeds in order):", ""]
        for _, row in ranking.iterrows():
            values = row.get(f"{lead}_per_seed")
            if isinstance(values, list):
                lines.append(f"* {row['behavior']} / {row['family']}: " + ", ".join(f"{v:+.3f}" for v in values))
    lines += ["", "Means over seeds. With two or more seeds the 95% CI is a Student-t interval over the seed means (the seed is the "
              "unit of replication; with 3 seeds its half-width is 2.5 standard deviations). With one seed it is a bootstrap over "
              "dilemmas / claims only, which says nothing about retraining. OOD scores are action-stratified (pooled: the earlier "
              "estimator). Scores in nats (log-odds). α is raw, not KL-matched: families with larger ‖dW‖ move more per unit α."]
    return "\n".join(lines) + "\n"
