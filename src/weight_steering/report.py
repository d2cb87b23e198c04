"""Stage 7, report: ``report.md`` with the tables, a dose-response PNG and sample generations."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .artifacts import atomic_save_path, atomic_write, commit_path  # noqa: E402

METRIC_LABELS = {
    "sycophancy": "held-out sycophancy logratio (ID)",
    "dilemmas_honesty": "DailyDilemmas honesty (OOD)",
    "dilemmas_justice": "justice (off-target)",
    "dilemmas_courage": "courage (off-target)",
    "dilemmas_temperance": "temperance (off-target)",
}


def plot_dose_response(per_alpha: pd.DataFrame, path: str | Path) -> Path:
    """α against mean score with 95% CI bands (left) and against pmass (right); written atomically."""
    fig, (ax_score, ax_mass) = plt.subplots(1, 2, figsize=(11, 4.2))
    for metric, part in per_alpha.groupby("metric"):
        part = part.sort_values("alpha")
        style = "-" if metric in ("sycophancy", "dilemmas_honesty") else ":"
        ax_score.plot(part["alpha"], part["mean"], style, marker="o", label=METRIC_LABELS.get(metric, metric))
        ax_score.fill_between(part["alpha"], part["ci_low"], part["ci_high"], alpha=0.2)
        ax_mass.plot(part["alpha"], part["pmass_mean"], style, marker="o", label=METRIC_LABELS.get(metric, metric))
    ax_score.axhline(0, color="grey", lw=0.5)
    ax_score.set(xlabel="α (steering strength)", ylabel="mean logratio (nats; × label for dilemmas)", title="dose-response, 95% CI")
    ax_mass.set(xlabel="α", ylabel="pmass = P(Yes) + P(No)", ylim=(0, 1.02), title="answer-format mass")
    ax_score.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    tmp = atomic_save_path(path)
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    commit_path(tmp, path)
    return path


def _fmt(x: float) -> str:
    return "nan" if pd.isna(x) else f"{x:+.3f}"


def render_report(run: dict, summary: dict, generations: list[dict], plot_name: str) -> str:
    """Markdown text of one run's report."""
    per_alpha = pd.DataFrame(summary["per_alpha"])
    contrasts = pd.DataFrame(summary["contrasts"])
    lines = [f"# weight-steering run: {run['behavior']} on {run['model']}", ""]
    lines += [f"- adapter family: {run['family']}, seed {run['seed']}; ‖dW‖_F = {run['norm_dw']:.4f}; "
              f"cos(Δ⁺, −Δ⁻) = {run['cos_delta']:+.3f}; {run['n_tensors']} tensors",
              f"- pairs: {run['n_pairs']}; α grid: {run['alphas']}; truncated eval rows: {summary['n_truncated']}",
              f"- command: `{run['command']}`", ""]
    lines += ["## Contrasts (paired, 95% bootstrap CI)", "", "| metric | contrast | mean | 95% CI | n rows |", "|---|---|---|---|---|"]
    for _, r in contrasts.iterrows():
        lines.append(f"| {METRIC_LABELS.get(r['metric'], r['metric'])} | {r['contrast']} | {_fmt(r['mean'])} | "
                     f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['n']} |")
    lines += ["", "## Per α", "", "| metric | α | mean | 95% CI | pmass mean | pmass min | n |", "|---|---|---|---|---|---|---|"]
    for _, r in per_alpha.sort_values(["metric", "alpha"]).iterrows():
        lines.append(f"| {METRIC_LABELS.get(r['metric'], r['metric'])} | {r['alpha']:+g} | {_fmt(r['mean'])} | "
                     f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['pmass_mean']:.3f} | {r['pmass_min']:.3f} | {r['n']} |")
    lines += ["", f"![dose-response]({plot_name})", "", "## Generations (greedy)", ""]
    for g in generations:
        lines += [f"**α = {g['alpha']:+g}**, prompt: _{g['prompt']}_", "", "> " + g["text"].replace("\n", "\n> "), ""]
    lines += ["## Stage timings (s)", "", "| stage | seconds | reused |", "|---|---|---|"]
    for stage, info in run["timings"].items():
        lines.append(f"| {stage} | {info['seconds']:.1f} | {info['reused']} |")
    return "\n".join(lines) + "\n"


def write_report(directory: str | Path, run: dict, summary: dict, generations: list[dict]) -> Path:
    """Write ``report.md`` and ``dose_response.png`` into ``directory``; returns the report path."""
    directory = Path(directory)
    plot_dose_response(pd.DataFrame(summary["per_alpha"]), directory / "dose_response.png")
    path = directory / "report.md"
    with atomic_write(path) as handle:
        handle.write(render_report(run, summary, generations, "dose_response.png"))
    return path
