"""Stage 7, report: ``report.md`` with the tables, a dose-response PNG and sample generations."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..artifacts import atomic_write
from ..rendering import PRIMARY_METRICS, fmt, metric_label, save_figure
from .summary import run_contrast, run_sampler, run_seed_groups, run_seeds


def plot_dose_response(per_alpha: pd.DataFrame, path: str | Path, behavior: dict | None = None, target: dict | None = None) -> Path:
    """α against mean score with 95% CI bands (left) and against pmass (right), labelled by the behaviour and
    its OOD target; written atomically."""
    fig, (ax_score, ax_mass) = plt.subplots(1, 2, figsize=(11, 4.2))
    for metric, part in per_alpha.groupby("metric"):
        part = part.sort_values("alpha")
        if metric.endswith("_pooled"):
            continue
        style = "-" if metric in PRIMARY_METRICS or metric == "action_bias" else ":"
        label = metric_label(metric, behavior, target, named=False)
        ax_score.plot(part["alpha"], part["mean"], style, marker="o", label=label)
        ax_score.fill_between(part["alpha"], part["ci_low"], part["ci_high"], alpha=0.2)
        ax_mass.plot(part["alpha"], part["pmass_mean"], style, marker="o", label=label)
    ax_score.axhline(0, color="grey", lw=0.5)
    ax_score.set(xlabel="α (steering strength)", ylabel="mean logratio (nats; × label for dilemmas)", title="dose-response, 95% CI")
    ax_mass.set(xlabel="α", ylabel="pmass = P(Yes) + P(No)", ylim=(0, 1.02), title="answer-format mass")
    handles, labels = ax_score.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * ((len(labels) + 1) // 2), 1, 1))
    return save_figure(fig, path, layout=False)


def _judge_lines(judge: dict, filtered: bool) -> list[str]:
    """Markdown of the judge stage: behaviour rate per sign, persona and answer word; agreement with hand labels."""
    rates = judge["rates"]
    lines = ["## Training data: behaviour rate by the judge", "",
             f"Judge: `{judge['judge_model']}`, threshold {judge['threshold']:+.3f} nats ({judge['threshold_rule']}). "
             f"Pairs kept by the filter (positive shows the behaviour, negative does not): {rates['kept']} of {rates['n_pairs']}"
             f"{' — training used only these' if filtered else ' (not applied: trained on all pairs)'}.", "",
             "| responses | behaviour rate | n |", "|---|---|---|",
             f"| positive persona | {rates['positive']:.2f} | {rates['n_pairs']} |", f"| negative persona | {rates['negative']:.2f} | {rates['n_pairs']} |"]
    for r in rates["by_persona"]:
        lines.append(f"| persona pair {r['persona_index']}: positive / negative | {r['positive']:.2f} / {r['negative']:.2f} | {r['n']} |")
    for answer, r in rates.get("by_answer", {}).items():
        lines.append(f"| prompts whose behaviour answer is '{answer}': positive / negative | {r['positive']:.2f} / {r['negative']:.2f} | {r['n']} |")
    for sign, r in judge.get("hand_label_rates", {}).items():
        lines.append(f"| hand-labelled {sign} responses (no judge; Wilson 95%) | {r['rate']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {r['n']} |")
    if judge.get("agreement"):
        a = judge["agreement"]
        lines += ["", f"Judge against {a['n']} hand-labelled responses: AUC {a['auc']:.2f} (threshold-free); at its threshold accuracy "
                  f"{a['accuracy']:.2f} [{a['accuracy_ci_low']:.2f}, {a['accuracy_ci_high']:.2f}] (Wilson 95%; in-sample when the threshold "
                  f"was calibrated on these labels), Cohen's κ {a['kappa']:+.2f}."]
    return lines + [""]


def _report_order(metric: str, target: dict | None) -> int:
    """Row order of the report's contrasts: primary scores first (ID controlled, opinion, neutral; the OOD
    target, then the other values, stratified), then the pooled scores, then the action bias."""
    if metric in ("id_controlled", "id", "id_neutral", "id_per_token"):
        return ("id_controlled", "id", "id_neutral", "id_per_token").index(metric)
    if metric.startswith("ood_") and not metric.startswith("ood_target"):
        return 3 if metric.startswith("ood_sets") else 4
    if metric == "action_bias":
        return 9
    is_target = bool(target) and metric.removesuffix("_pooled") == f"dilemmas_{target['value']}"
    return (7 if metric.endswith("_pooled") else 5) + (0 if is_target else 1)


def render_report(run: dict, summary: dict, generations: list[dict], plot_name: str) -> str:
    """Markdown text of one run's report."""
    per_alpha = pd.DataFrame(summary["per_alpha"])
    contrasts = pd.DataFrame(summary["contrasts"])
    behavior, target = summary.get("behavior"), summary.get("ood_target")
    contrasts = contrasts.iloc[sorted(range(len(contrasts)), key=lambda i: (_report_order(contrasts["metric"].iloc[i], target), i))]
    lines = [f"# weight-steering run: {behavior['label'] if behavior else run['behavior']} on {run['model']}", ""]
    lines += [f"- adapter family: {run['family']}, seed {run['seed']}; ‖dW‖_F = {run['norm_dw']:.4f}; "
              f"cos(Δ⁺, −Δ⁻) = {run['cos_delta']:+.3f}; {run['n_tensors']} tensors",
              f"- pairs: {run['n_pairs']}; α grid: {run['alphas']}; truncated eval rows: {summary['n_truncated']}",
              f"- command: `{run['command']}`", ""]
    if run.get("judge"):
        lines += _judge_lines(run["judge"], run.get("filtered", False))
    lines += ["## Contrasts (paired, 95% bootstrap CI)", "",
              "Primary scores first: the framing-controlled held-out score (Δ opinion − Δ neutral, which cancels a general "
              "Yes shift) and the action-stratified OOD target (equal weight to dilemmas whose value-carrying action is "
              "'to do' and 'not to do', which cancels a take-the-action bias). Pooled scores and the action bias follow.", "",
              "| metric | contrast | mean | 95% CI | n rows |", "|---|---|---|---|---|"]
    for _, r in contrasts.iterrows():
        lines.append(f"| {metric_label(r['metric'], behavior, target)} | {r['contrast']} | {fmt(r['mean'])} | "
                     f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | {r['n']} |")
    lines += ["", "## Per α", "", "| metric | α | mean | 95% CI | pmass mean | pmass min | n |", "|---|---|---|---|---|---|---|"]
    for _, r in per_alpha.sort_values(["metric", "alpha"]).iterrows():
        lines.append(f"| {metric_label(r['metric'], behavior, target)} | {r['alpha']:+g} | {fmt(r['mean'])} | "
                     f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | {r['pmass_mean']:.3f} | {r['pmass_min']:.3f} | {r['n']} |")
    if summary.get("surgical_informedness"):
        lines += ["", f"## Surgical Informedness (row-level, DailyDilemmas {target['value']}, intent {target['sign']:+d}, arms α = +1 / −1)", "",
                  "| k | SI [95% CI] | SI fwd | SI rev | pmass² × 100 | rows chosen / rejected at α = 0 |", "|---|---|---|---|---|---|"]
        for r in summary["surgical_informedness"]:
            lines.append(f"| {r['k']:g} | {r['si']:+.1f} [{r['si_ci_low']:+.1f}, {r['si_ci_high']:+.1f}] | {r['si_forward']:+.3f} | {r['si_reverse']:+.3f} | {r['pmass_scale']:.1f} "
                         f"| {r['n_chosen']} / {r['n_rejected']} |")
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
    plot_dose_response(pd.DataFrame(summary["per_alpha"]), directory / "dose_response.png", summary.get("behavior"), summary.get("ood_target"))
    path = directory / "report.md"
    with atomic_write(path) as handle:
        handle.write(render_report(run, summary, generations, "dose_response.png"))
    return path




HEADLINE = (  # (metric, contrast, column title) of render_run_summary
    ("id_controlled", "α=+1 − α=+0", "ID controlled Δ(+1 − 0)"), ("id_controlled", "α=-1 − α=+0", "ID controlled Δ(−1 − 0)"),
    ("id", "α=+1 − α=+0", "ID opinion Δ(+1 − 0)"), ("id_neutral", "α=+1 − α=+0", "ID neutral Δ(+1 − 0)"),
    ("ood_target", "α=+1 − α=+0", "OOD target Δ(+1 − 0), stratified"), ("ood_target_pooled", "α=+1 − α=+0", "OOD target Δ(+1 − 0), pooled"),
    ("action_bias", "α=+1 − α=+0", "action bias Δ(+1 − 0)"),
)


def render_run_summary(runs: list[dict]) -> str:
    """One markdown row per finished main-job run (its ``run.json``): the primary scores with 95% CIs, the
    secondary ones beside them, the judge's behaviour rate per sign and ‖dW‖. Rows keep the order given. Runs that
    differ only in their seeds (:func:`weight_steering.main_job.summary.run_seed_groups`) get one more row each group: the
    per-seed means and a Student-t 95% interval over the seeds."""
    lines = ["| run | pairs | judge rate ₊ / ₋ | ‖dW‖ | " + " | ".join(title for *_, title in HEADLINE) + " |", "|---|---|---|---|" + "---|" * len(HEADLINE)]
    for run in runs:
        cells = []
        for metric, label, _ in HEADLINE:
            c = run_contrast(run, metric, label)
            cells.append("–" if c is None else f"{c['mean']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]")
        rates = (run.get("judge") or {}).get("rates")
        judge = f"{rates['positive']:.2f} / {rates['negative']:.2f}" if rates else "–"
        seed, data_seed = run_seeds(run)
        label = (f"{run['behavior']}{' (filtered)' if run.get('filtered') else ''}, {run['family']} seed {seed}"
                 + ("" if data_seed == seed else f", data seed {data_seed}") + f", {run_sampler(run)} sampler")
        lines.append(f"| {label} | {run['n_pairs']} | {judge} | {run['norm_dw']:.3g} | " + " | ".join(cells) + " |")
    for group in run_seed_groups(runs, [(metric, label) for metric, label, _ in HEADLINE]):
        seeds = ", ".join(f"{s}" if s == d else f"{s}/{d}" for s, d in group["seeds"])
        cells = ["–" if m is None else " / ".join(f"{v:+.3f}" for v in m["per_seed"]) + f" → **{m['mean']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]**"
                 for m in group["measures"]]
        label = (f"{group['behavior']}{' (filtered)' if group['filtered'] else ''}, {group['family']}, {group['sampler']} sampler, "
                 f"seeds {seeds}: per seed → t over seeds")
        lines.append(f"| {label} | | | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"






