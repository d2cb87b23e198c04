"""Stage 7, report: ``report.md`` with the tables, a dose-response PNG and sample generations."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .analyse import run_contrast, run_sampler, run_seed_groups, run_seeds  # noqa: E402
from .artifacts import atomic_save_path, atomic_write, commit_path  # noqa: E402

METRIC_LABELS = {
    "id": "held-out probe, user-opinion framing (ID)",
    "id_neutral": "held-out probe, neutral framing (control)",
    "id_controlled": "held-out probe, framing-controlled: opinion − neutral (ID, primary)",
    "action_bias": "DailyDilemmas action bias: logratio(to do) − logratio(not to do)",
}
PRIMARY_METRICS = ("id_controlled", "id")


def metric_label(metric: str, behavior: dict | None = None, target: dict | None = None, named: bool = True) -> str:
    """Table label of a :func:`weight_steering.analyse.metric_frame` metric, by its OOD target and the
    behaviour's probe kind, prefixed with the behaviour's name unless ``named`` is False (plot legends)."""
    if metric.startswith("dilemmas_"):
        value, pooled = metric[len("dilemmas_"):].removesuffix("_pooled"), metric.endswith("_pooled")
        role = (f"OOD target, intended {'+' if target['sign'] > 0 else '−'}" if target and target.get("value") == value else "off-target")
        return f"DailyDilemmas {value} ({role}; {'pooled' if pooled else 'action-stratified'})"
    label = METRIC_LABELS.get(metric, metric)
    if metric == "id_per_token":
        label = "held-out paired-completion probe per reply token (ID, nats/token)"
    if metric.startswith("ood_") and not metric.startswith("ood_target"):
        name, per_token = metric[4:].removesuffix("_per_token"), metric.endswith("_per_token")
        where = "every OOD set pooled, sets weighted equally" if name == "sets" else f"OOD set {name}"
        label = f"{where}: paired completions, {'per reply token (nats/token)' if per_token else 'summed over the reply (nats)'}"
    if behavior and metric == "id" and behavior.get("held_out_kind") == "completion_pair":
        label = "held-out paired-completion probe: log P(behaviour reply) − log P(plain reply) (ID, primary)"
    if named and behavior and metric.startswith("id"):
        label = f"{behavior['label']}: {label}"
    return label


def _save_figure(fig, path: str | Path, layout: bool = True) -> Path:
    """Lay out (unless already laid out), write atomically as PNG (120 dpi) and close ``fig``."""
    if layout:
        fig.tight_layout()
    path = Path(path)
    tmp = atomic_save_path(path)
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    commit_path(tmp, path)
    return path


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
    return _save_figure(fig, path, layout=False)


def _fmt(x: float) -> str:
    return "nan" if pd.isna(x) else f"{x:+.3f}"


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
        lines.append(f"| {metric_label(r['metric'], behavior, target)} | {r['contrast']} | {_fmt(r['mean'])} | "
                     f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['n']} |")
    lines += ["", "## Per α", "", "| metric | α | mean | 95% CI | pmass mean | pmass min | n |", "|---|---|---|---|---|---|---|"]
    for _, r in per_alpha.sort_values(["metric", "alpha"]).iterrows():
        lines.append(f"| {metric_label(r['metric'], behavior, target)} | {r['alpha']:+g} | {_fmt(r['mean'])} | "
                     f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['pmass_mean']:.3f} | {r['pmass_min']:.3f} | {r['n']} |")
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
    return _save_figure(fig, path)


def render_ranking(ranking: pd.DataFrame, command: str, wall_seconds: float | None = None, n_cells: int | None = None) -> str:
    """Markdown table of :func:`weight_steering.analyse.rank_families`, with the command that made it."""
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


def render_vignettes(result: dict) -> str:
    """Markdown of :func:`weight_steering.pipeline.run_vignettes`: bare table, Δlogit per α, SI (k stated)."""
    def num(x, fmt="+.2f"):
        return "–" if x is None or pd.isna(x) else format(x, fmt)

    lines = [f"# Moral-foundation vignettes (tinymfv airisk, {result['n_prompts']} prompts, scoring mode: {result['scoring_mode']})", "",
             f"dW: `{result['dw']}`; format-mass floor {result['pmass_floor']}; logit(w) clipped at [0.01, 0.99].", "",
             "## Bare table (α = 0)", "",
             "| foundation | mean logit(w) | 95% CI | std | share wrong | pmass | n valid | n below floor |", "|---|---|---|---|---|---|---|---|"]
    for r in result["bare"]:
        lines.append(f"| {r['foundation']} | {num(r['logit_w_mean'], '+.3f')} | [{num(r['ci_low'], '+.3f')}, {num(r['ci_high'], '+.3f')}] | "
                     f"{num(r['logit_w_std'], '.3f')} | {num(r['share_wrong'], '.2f')} | {num(r['pmass_mean'], '.3f')} | {r['n_valid']} | {r['n_below_floor']} |")
    for alpha, table in result["deltas"].items():
        lines += ["", f"## Δlogit(w) at α = {float(alpha):+g} (paired by vignette and condition, 95% CI over vignettes)", "",
                  "| foundation | Δlogit | 95% CI | pmass | n pairs | flips → wrong | flips → acceptable |", "|---|---|---|---|---|---|---|"]
        for r in table:
            lines.append(f"| {r['foundation']} | {num(r['delta_logit'], '+.3f')} | [{num(r['ci_low'], '+.3f')}, {num(r['ci_high'], '+.3f')}] | "
                         f"{num(r['pmass_mean'], '.3f')} | {r['n_pairs']} | {r['flips_to_wrong']} | {r['flips_to_acceptable']} |")
    if result["si"]:
        lines += ["", f"## Surgical Informedness (k = {result['k']:g}, pmass² × 100 scaling)", "",
                  "| foundation | intent | α₊ | α₋ | SI | 95% CI | SI fwd | SI rev | pmass scale |", "|---|---|---|---|---|---|---|---|---|"]
        for r in result["si"]:
            lines.append(f"| {r['foundation']} | {r['intent']:+d} | {num(r['alpha_plus'], '+g')} | {num(r['alpha_minus'], '+g')} | "
                         f"{num(r['si'], '+.1f')} | [{num(r['si_ci_low'], '+.1f')}, {num(r['si_ci_high'], '+.1f')}] | "
                         f"{num(r['si_forward'], '+.3f')} | {num(r['si_reverse'], '+.3f')} | {num(r['pmass_scale'], '.1f')} |")
    return "\n".join(lines) + "\n"


def render_ablation(result: dict) -> str:
    """Markdown of :func:`weight_steering.assess.run_ablation`: retained (95% CI) and energy per variant and metric."""
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
    return _save_figure(fig, path)


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
    return _save_figure(fig, path)


def _interval_text(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None or not pd.notna(entry["mean"]):
        return "–"
    return f"{entry['mean']:+.3f} [{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]"


def _target_text(target: dict | None) -> str:
    if not target or not target.get("value"):
        return "none (the behaviour names no DailyDilemmas target)"
    return f"DailyDilemmas {target['value']}, intended sign {'+' if target['sign'] > 0 else '−'}"


def render_comparison(summary: dict) -> str:
    """Markdown tables of :func:`weight_steering.compare.run_comparison`: strengths and KL per sign, effects, ratios, cost."""
    config = summary["config"]
    lines = [f"# Steering methods at p95 KL = {config['target']} nats: {summary['behavior']} on {summary['model']}", "",
             f"Command: `{summary['command']}`", "",
             f"KL(steered ‖ base) on {summary['n_calibration_prompts']} neutral calibration prompts × {config['n_tokens']} greedy tokens "
             f"(audit: {summary['n_audit_prompts']} held-apart prompts). Effects on {summary['n_rows']} identical rows "
             f"({summary['n_dilemma_rows']} DailyDilemmas rows), Δ against the unsteered base, nats of log-odds, "
             "95% cluster-bootstrap CIs (dilemmas / claims). Prompt methods are not calibrated: their KL is reported. "
             "ΔNLL: change of the mean NLL (nats per token) of the 100 neutral reference answers against the base, CI over answers.", "",
             f"ID: {summary.get('behavior_label', summary['behavior'])}, framing-controlled (Δ opinion − Δ neutral) where the behaviour has a "
             "control framing, else the opinion framing. OOD target: "
             f"{_target_text(summary.get('ood_target'))}, action-stratified; the action bias is the shift toward the 'to do' action.", "",
             "| method | α₊ | p95 KL₊ (audit) | α₋ | p95 KL₋ (audit) | converged ± | ID Δ₊ | ID Δ₋ | OOD target Δ₊ | OOD target Δ₋ | "
             "action bias Δ₊ | off-target \\|Δ₊\\| | SI k=2 | SI k=1 | pmass ₊/₋ (min) | ΔNLL₊ | ΔNLL₋ |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in summary["methods"]:
        plus, minus, e = m["plus"], m["minus"], m["effects"]
        converged = "n/a (prompt)" if not m["continuous"] else f"{'yes' if plus['converged'] else 'NO'} / {'yes' if minus['converged'] else 'NO'}"
        lines.append(
            f"| {m['name']} | {plus['alpha']:+.3g} | {plus['p95']:.3f} ({plus['audit_p95']:.3f}) | {minus['alpha']:+.3g} | "
            f"{minus['p95']:.3f} ({minus['audit_p95']:.3f}) | {converged} | {_interval_text(e.get('id_controlled_plus', e.get('id_plus')))} | "
            f"{_interval_text(e.get('id_controlled_minus', e.get('id_minus')))} | "
            f"{_interval_text(e.get('ood_target_plus'))} | {_interval_text(e.get('ood_target_minus'))} | {_interval_text(e.get('action_bias_plus'))} | "
            f"{_interval_text(e.get('off_target'))} | "
            f"{_interval_text(e.get('si_k2'))} | {_interval_text(e.get('si_k1'))} | {e['pmass_plus']:.3f}/{e['pmass_minus']:.3f} ({e['pmass_min']:.3f}) | "
            f"{_interval_text(e.get('nll_change_plus'))} | {_interval_text(e.get('nll_change_minus'))} |")
    if summary.get("ood_sets"):
        lines += _pair_tables(summary)
    for measure, title in (("ood_target", f"OOD target ({_target_text(summary.get('ood_target'))})"), ("id", "held-out behaviour (ID)"),
                           ("id_per_token", "held-out paired completions per reply token (ID)"),
                           ("ood_sets", "OOD sets pooled per reply token, each set weighted equally")):
        ratios = [r for r in summary["ratios"] if r.get("measure") == measure]
        if not ratios:
            continue
        lines += ["", f"## dW versus each method: {title} spread (Δ at α₊ − Δ at α₋), ratio dW / method", "",
                  "| method | dW spread | method spread | ratio dW / method [95% CI] |", "|---|---|---|---|"]
        for r in ratios:
            lines.append(f"| {r['name']} | {r['dw_spread']:+.3f} | {r['method_spread']:+.3f} | {r['ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] |")
    if summary["ratios"]:
        lines += ["", "The ratio's CI pairs the two methods on the same resampled dilemmas (claims for ID); when a method's spread CI includes 0 the ratio CI is unbounded in practice."]
    agreement = next((m["spec"]["direction_agreement"] for m in summary["methods"] if m.get("spec", {}).get("direction_agreement")), None)
    if agreement:
        reading = next((m["spec"].get("reading") for m in summary["methods"] if m.get("spec", {}).get("reading")), "last")
        lines += ["", f"## Activation directions: CAA against PCA per layer (read: {reading})", "",
                  "PCA's sign is aligned with the mean difference by steering-vectors, so cos ≥ 0 by construction; the share of "
                  "pairs whose difference projects positively on each direction says how consistent the contrast is.", "",
                  "| layer | cos(CAA, PCA) | pairs agreeing with CAA | pairs agreeing with PCA |", "|---|---|---|---|"]
        for layer, r in sorted(agreement.items(), key=lambda item: int(item[0])):
            lines.append(f"| {layer} | {r['cos_caa_pca']:+.3f} | {r['sign_agreement_caa']:.2f} | {r['sign_agreement_pca']:.2f} |")
    lines += ["", f"## KL achieved on the audit split ({summary['n_audit_prompts']} prompts × {config['n_tokens']} tokens), nats, 95% CI over prompts", "",
              "| method | sign | α | p95 KL | mean KL | max KL |", "|---|---|---|---|---|---|"]
    for m in summary["methods"]:
        for label in ("plus", "minus"):
            arm = m[label]
            lines.append(f"| {m['name']} | {'+' if label == 'plus' else '−'} | {arm['alpha']:+.3g} | "
                         f"{arm['audit_p95']:.3f} [{arm['audit_p95_ci_low']:.3f}, {arm['audit_p95_ci_high']:.3f}] | "
                         f"{arm['audit_mean']:.3f} [{arm['audit_mean_ci_low']:.3f}, {arm['audit_mean_ci_high']:.3f}] | {arm['audit_max']:.2f} |")
    lines += ["", "## Calibration cost", "", "| method | sign | KL measurements | forward passes | wall s | message |", "|---|---|---|---|---|---|"]
    for m in summary["methods"]:
        for label in ("plus", "minus"):
            arm = m[label]
            lines.append(f"| {m['name']} | {'+' if label == 'plus' else '−'} | {arm['iterations']} | {arm['n_forward_passes']} | "
                         f"{arm['seconds']:.0f} | {arm['message'] or ''} |")
    return "\n".join(lines) + "\n"


def _pair_tables(summary: dict) -> list[str]:
    """ID and each OOD set of paired completions (summed over the reply and per reply token), the generalisation ratio,
    and the generation scores, per method at its calibrated strengths."""
    names = [o["name"] for o in summary["ood_sets"]]
    lines = ["", "## In distribution and out of distribution: paired completions, log P(behaviour reply) − log P(other reply)", "",
             "Spread = Δ at α₊ − Δ at α₋ against the base, 95% cluster-bootstrap CI over items. Summed over the reply (nats) and "
             "per reply token (nats/token; OOD replies can be longer, which inflates a summed score). The pooled OOD column weights "
             "each set equally. Ratio = pooled OOD spread / ID spread, per token (one seed: no interval; see `wsteer compare-seeds`).", "",
             "| method | ID spread | ID spread /token | " + " | ".join(f"{n} /token" for n in names) + " | OOD pooled | OOD pooled /token | ratio OOD/ID /token |",
             "|---|---|---|" + "---|" * len(names) + "---|---|---|"]
    for m in summary["methods"]:
        e = m["effects"]
        idt, oodt = e.get("id_per_token_spread", {}).get("mean"), e.get("ood_sets_per_token_spread", {}).get("mean")
        ratio = f"{oodt / idt:+.2f}" if idt and oodt is not None and pd.notna(idt) and pd.notna(oodt) else "–"
        lines.append(f"| {m['name']} | {_interval_text(e.get('id_spread'))} | {_interval_text(e.get('id_per_token_spread'))} | "
                     + " | ".join(_interval_text(e.get(f"ood_{n}_per_token_spread")) for n in names)
                     + f" | {_interval_text(e.get('ood_sets_spread'))} | {_interval_text(e.get('ood_sets_per_token_spread'))} | {ratio} |")
    if any("gen_id_metric_base" in m["effects"] or "gen_id_judge_base" in m["effects"] for m in summary["methods"]):
        agreement = summary.get("judge_agreement") or {}
        judge = (f"judge agreement with the hand labels: AUC {agreement['auc']:.2f}, accuracy {agreement['accuracy']:.2f}"
                 if "auc" in agreement else "judge agreement: not measured (no hand labels)")
        lines += ["", f"## Generations: greedy replies ({summary.get('n_generation_prompts', '?')} ID + OOD prompts), change against the base reply", "",
                  f"Judge-free metric: {summary.get('generation_metric') or 'none'} (`weight_steering.generations`); judged rate: share of replies "
                  f"the embedded judge scores above its threshold ({judge}). Spread = arm₊ − arm₋, 95% CI over prompts.", "",
                  "| method | ID metric spread | OOD metric spread | ID judged spread | OOD judged spread |", "|---|---|---|---|---|"]
        for m in summary["methods"]:
            e = m["effects"]
            lines.append(f"| {m['name']} | {_interval_text(e.get('gen_id_metric_spread'))} | {_interval_text(e.get('gen_ood_metric_spread'))} | "
                         f"{_interval_text(e.get('gen_id_judged_spread'))} | {_interval_text(e.get('gen_ood_judged_spread'))} |")
    return lines


def plot_effect_vs_kl(summary: dict, path: str | Path) -> Path:
    """p95 KL (x, nats) against OOD honesty Δ (y, nats): continuous methods as curves over both signs
    (− side drawn at −KL so the two signs separate), prompt methods as points; atomic PNG."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for m in summary["methods"]:
        points = sorted(m["curve"], key=lambda c: c["alpha"])
        x = [(-1 if c["alpha"] < 0 else 1) * c["p95"] for c in points]
        y = [c["ood_target"] for c in points]
        if m["continuous"]:
            ax.plot(x, y, marker="o", ms=3, label=m["name"])
        else:
            ax.scatter(x, y, marker="*", s=90, label=m["name"], zorder=3)
    target = summary["config"]["target"]
    for side in (-target, target):
        ax.axvline(side, color="grey", lw=0.6, ls="--")
    ax.axhline(0, color="grey", lw=0.6)
    ylabel = ("OOD sets Δ vs base, nats per reply token (sets weighted equally)" if summary.get("ood_measure") == "ood_sets_per_token"
              else "OOD target Δ vs base (action-stratified), nats")
    ax.set(xlabel="signed p95 KL(steered ‖ base), nats (− side: negative strengths)", ylabel=ylabel,
           title=f"Effect vs KL: {summary['behavior']} ({summary['model']})")
    ax.legend(fontsize=7, loc="best")
    return _save_figure(fig, path)


HEADLINE = (  # (metric, contrast, column title) of render_run_summary
    ("id_controlled", "α=+1 − α=+0", "ID controlled Δ(+1 − 0)"), ("id_controlled", "α=-1 − α=+0", "ID controlled Δ(−1 − 0)"),
    ("id", "α=+1 − α=+0", "ID opinion Δ(+1 − 0)"), ("id_neutral", "α=+1 − α=+0", "ID neutral Δ(+1 − 0)"),
    ("ood_target", "α=+1 − α=+0", "OOD target Δ(+1 − 0), stratified"), ("ood_target_pooled", "α=+1 − α=+0", "OOD target Δ(+1 − 0), pooled"),
    ("action_bias", "α=+1 − α=+0", "action bias Δ(+1 − 0)"),
)


def render_run_summary(runs: list[dict]) -> str:
    """One markdown row per finished main-job run (its ``run.json``): the primary scores with 95% CIs, the
    secondary ones beside them, the judge's behaviour rate per sign and ‖dW‖. Rows keep the order given. Runs that
    differ only in their seeds (:func:`weight_steering.analyse.run_seed_groups`) get one more row each group: the
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


SEED_MEASURE_LABELS = {
    "alpha_minus": "α₋", "alpha_plus": "α₊", "audit_p95_minus": "audit p95 KL₋ (nats)", "audit_p95_plus": "audit p95 KL₊ (nats)",
    "id_controlled_minus": "ID framing-controlled Δ₋", "id_controlled_plus": "ID framing-controlled Δ₊",
    "id_controlled_spread": "ID framing-controlled spread (Δ₊ − Δ₋)", "id_neutral_plus": "ID neutral framing Δ₊ (Yes shift)",
    "ood_target_minus": "OOD target Δ₋ (stratified)", "ood_target_plus": "OOD target Δ₊ (stratified)",
    "ood_target_spread": "OOD target spread (Δ₊ − Δ₋)", "action_bias_plus": "action bias Δ₊", "nll_change_minus": "ΔNLL₋ (nats/token)",
    "nll_change_plus": "ΔNLL₊ (nats/token)", "si_k2": "SI k=2",
    "id_spread": "ID spread, summed over the reply (nats)", "id_per_token_plus": "ID Δ₊ per token", "id_per_token_minus": "ID Δ₋ per token",
    "id_per_token_spread": "ID spread per token", "ood_sets_spread": "OOD spread, summed (sets weighted equally)",
    "ood_sets_per_token_plus": "OOD Δ₊ per token", "ood_sets_per_token_minus": "OOD Δ₋ per token",
    "ood_sets_per_token_spread": "OOD spread per token (sets weighted equally)",
    "generalisation_ratio_per_token": "generalisation ratio OOD/ID (per token)", "generalisation_ratio_summed": "generalisation ratio OOD/ID (summed)",
    "gen_id_metric_spread": "generations, ID: judge-free metric spread", "gen_ood_metric_spread": "generations, OOD: judge-free metric spread",
    "gen_id_judged_spread": "generations, ID: judged-behaviour rate spread", "gen_ood_judged_spread": "generations, OOD: judged-behaviour rate spread",
}
ADVANTAGE_LABELS = {"ood_sets_per_token_spread": "OOD spread per token", "ood_sets_spread": "OOD spread, summed",
                    "generalisation_ratio_per_token": "generalisation ratio (per token)", "gen_ood_metric_spread": "generations, OOD metric spread"}


def render_seed_comparison(groups: list[dict]) -> str:
    """Markdown of :func:`weight_steering.compare.summarize_seeds`: per behaviour, every method and measure with its
    per-seed values (``*``: that seed's row-level 95% CI excludes 0) and the t-interval over seeds; the ratios of
    dW's spread to each method's; cos(CAA, PCA) and per-pair sign agreement per seed."""
    lines = []
    for group in groups:
        seeds = group["seeds"]
        lines += [f"### {group['behavior']}: seeds {', '.join(map(str, seeds))} (p95 KL target {group['target']:g} nat per sign; "
                  f"{', '.join(group.get('devices', []))})", "",
                  "Per-seed values; `*` where that seed's 95% CI over rows excludes 0. Across seeds: mean with a Student-t 95% interval "
                  f"over the {len(seeds)} seed means (the seed is the unit). Log-odds in nats.", "",
                  "| method | measure | " + " | ".join(f"seed {s}" for s in seeds) + " | across seeds [t 95%] |",
                  "|---|---|" + "---|" * len(seeds) + "---|"]
        for row in group["rows"]:
            cells = [f"{v:+.3f}{'*' if sig else ''}" for v, sig in zip(row["per_seed"], row["row_significant"])]
            lines.append(f"| {row['name']} | {SEED_MEASURE_LABELS.get(row['measure'], row['measure'])} | " + " | ".join(cells)
                         + f" | {_seed_text(row)} |")
        if group["ratios"]:
            lines += ["", "dW's spread over each method's spread (paired on identical rows), per seed and across seeds:", "",
                      "| measure | method | " + " | ".join(f"seed {s}" for s in seeds) + " | across seeds [t 95%] |",
                      "|---|---|" + "---|" * len(seeds) + "---|"]
            for row in group["ratios"]:
                lines.append(f"| {row['measure']} | {row['method']} | " + " | ".join(f"{v:+.2f}" for v in row["per_seed"])
                             + f" | {_seed_text(row, 2)} |")
        if group.get("advantages"):
            lines += ["", "dW minus each method, paired by seed (the seed is the unit; a prompt method is the same at every seed, so its "
                      "interval holds dW's seed-to-seed spread only):", "",
                      "| measure | dW − method | " + " | ".join(f"seed {s}" for s in seeds) + " | across seeds [t 95%] |",
                      "|---|---|" + "---|" * len(seeds) + "---|"]
            for row in group["advantages"]:
                lines.append(f"| {ADVANTAGE_LABELS.get(row['measure'], row['measure'])} | {row['name']} | "
                             + " | ".join(f"{v:+.3f}" for v in row["per_seed"]) + f" | {_seed_text(row)} |")
        if group["agreement"]:
            lines += ["", "Activation directions on the dW slice, mean over its layers: cos(CAA, PCA) (≥ 0 by construction: "
                      "the library orients PC1 with the mean difference) and the share of pairs whose difference projects positively.", "",
                      "| seed | cos(CAA, PCA) | pairs agreeing with CAA | pairs agreeing with PCA |", "|---|---|---|---|"]
            lines += [f"| {a['seed']} | {a['cos_caa_pca']:.3f} | {a['sign_agreement_caa']:.2f} | {a['sign_agreement_pca']:.2f} |"
                      for a in group["agreement"]]
        lines.append("")
    return "\n".join(lines)


def _seed_text(row: dict, digits: int = 3) -> str:
    if row.get("seed_independent"):
        if not np.isfinite(row["ci_low"]):
            return f"{row['mean']:+.{digits}f} (the same at every seed)"
        sig = " *" if row["ci_low"] > 0 or row["ci_high"] < 0 else ""
        return f"{row['mean']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]{sig} (the same at every seed; row-level CI)"
    if row["n"] < 2 or not np.isfinite(row["ci_low"]):
        return f"{row['mean']:+.{digits}f} (one seed)"
    sig = " *" if row["ci_low"] > 0 or row["ci_high"] < 0 else ""
    return f"{row['mean']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]{sig}"


ABLATION_METRIC_LABELS = {"id_controlled": "framing-controlled agreement (ID)", "id": "opinion framing (ID)",
                          "id_neutral": "neutral framing, the Yes shift (ID)", "dilemmas_honesty": "OOD honesty, action-stratified"}


def render_ablation_seeds(summary: list[dict]) -> str:
    """Markdown of :func:`weight_steering.ablate.summarize_ablation_seeds`: per family and metric, each variant's
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
                across = _seed_text(row, 2) if row["n"] else "–"
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


def plot_monitoring(result: dict, path: str | Path) -> Path:
    """cos(fine-tune Δ, dW) against the behaviour fraction of the fine-tuning data: per-seed points, the mean with its
    t-interval over seeds, the random-direction null's 99.9th percentile and the largest unrelated-dW cosine."""
    rows = result["by_fraction"]
    fractions = np.array([r["fraction"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for r in rows:
        ax.scatter([r["fraction"]] * len(r["per_seed"]), r["per_seed"], color="C0", s=12, alpha=0.6)
    means = np.array([r["mean"] for r in rows])
    low, high = np.array([r["ci_low"] for r in rows]), np.array([r["ci_high"] for r in rows])
    ax.errorbar(fractions, means, yerr=[means - low, high - means], color="C0", marker="o", capsize=3, label="cos(Δ, dW), mean [t 95%]")
    ax.plot(fractions, [r["unrelated_max"] for r in rows], color="C3", ls="--", marker="v", label="largest cos(Δ, unrelated dW)")
    ax.axhline(max(r["random_p999"] for r in rows), color="grey", ls=":", label="random directions, p99.9")
    ax.set(xlabel="behaviour-inducing share of the fine-tuning rows", ylabel="cosine with dW")
    ax.legend(fontsize=7)
    return _save_figure(fig, path)


def render_monitoring(result: dict) -> str:
    """Markdown of :func:`weight_steering.monitor.monitoring_experiment`: per fraction the per-seed cosines, the mean with
    its t-interval over seeds, the nulls, and whether every seed was judged aligned."""
    lines = ["| behaviour fraction | cos(Δ, dW) per seed | mean [t 95% over seeds] | largest unrelated cos | random p99.9 | all seeds aligned |",
             "|---|---|---|---|---|---|"]
    for r in result["by_fraction"]:
        lines.append(f"| {r['fraction']:g} | " + " / ".join(f"{v:+.3f}" for v in r["per_seed"]) + f" | {_seed_text(r)} | "
                     f"{r['unrelated_max']:+.3f} | {r['random_p999']:.4f} | {'yes' if r['all_aligned'] else 'no'} |")
    return "\n".join(lines) + "\n"


def render_hypotheses(result: dict) -> str:
    """Markdown of :func:`weight_steering.hypotheses.score_candidates`: write-side (and mixed) candidates ranked by the
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
    """Markdown of :func:`weight_steering.hypotheses.summarize_hypotheses`: the write-side ranking across dWs (per family
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
    return _save_figure(fig, path)
