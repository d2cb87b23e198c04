"""The comparison's rendering: the iso-KL table, paired tables, the effect-vs-KL plot and the seed-level table."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..rendering import interval_text, save_figure, seed_text, target_text
from .result import ComparisonResult

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


def render_comparison(result: ComparisonResult) -> str:
    """Markdown tables of :func:`weight_steering.comparison.run.run_comparison`: strengths and KL per sign, effects, ratios, cost."""
    config = result.config
    lines = [f"# Steering methods at p95 KL = {config['target']} nats: {result.behavior} on {result.model}", "",
             f"Command: `{result.command}`", "",
             f"KL(steered ‖ base) on {result.n_calibration_prompts} neutral calibration prompts × {config['n_tokens']} greedy tokens "
             f"(audit: {result.n_audit_prompts} held-apart prompts). Effects on {result.n_rows} identical rows "
             f"({result.n_dilemma_rows} DailyDilemmas rows), Δ against the unsteered base, nats of log-odds, "
             "95% cluster-bootstrap CIs (dilemmas / claims). Prompt methods are not calibrated: their KL is reported. "
             "ΔNLL: change of the mean NLL (nats per token) of the 100 neutral reference answers against the base, CI over answers.", "",
             f"ID: {result.behavior_label or result.behavior}, framing-controlled (Δ opinion − Δ neutral) where the behaviour has a "
             "control framing, else the opinion framing. OOD target: "
             f"{target_text(result.ood_target)}, action-stratified; the action bias is the shift toward the 'to do' action.", "",
             "| method | α₊ | p95 KL₊ (audit) | α₋ | p95 KL₋ (audit) | converged ± | ID Δ₊ | ID Δ₋ | OOD target Δ₊ | OOD target Δ₋ | "
             "action bias Δ₊ | off-target \\|Δ₊\\| | SI k=2 | SI k=1 | pmass ₊/₋ (min) | ΔNLL₊ | ΔNLL₋ |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in result.methods:
        plus, minus, e = m.plus, m.minus, m.effects
        converged = "n/a (prompt)" if not m.continuous else f"{'yes' if plus.converged else 'NO'} / {'yes' if minus.converged else 'NO'}"
        id_metric = "id_controlled" if ("id_controlled", "plus") in e else "id"
        lines.append(
            f"| {m.name} | {plus.alpha:+.3g} | {plus.p95:.3f} ({plus.audit_p95:.3f}) | {minus.alpha:+.3g} | "
            f"{minus.p95:.3f} ({minus.audit_p95:.3f}) | {converged} | {interval_text(e.interval(id_metric, 'plus'))} | "
            f"{interval_text(e.interval(id_metric, 'minus'))} | "
            f"{interval_text(e.interval('ood_target', 'plus'))} | {interval_text(e.interval('ood_target', 'minus'))} | "
            f"{interval_text(e.interval('action_bias', 'plus'))} | {interval_text(e.interval('off_target'))} | "
            f"{interval_text(e.interval('si_k2'))} | {interval_text(e.interval('si_k1'))} | "
            f"{e.mean('pmass', 'plus'):.3f}/{e.mean('pmass', 'minus'):.3f} ({e.mean('pmass_min'):.3f}) | "
            f"{interval_text(e.interval('nll_change', 'plus'))} | {interval_text(e.interval('nll_change', 'minus'))} |")
    if result.ood_sets:
        lines += _pair_tables(result)
    for measure, title in (("ood_target", f"OOD target ({target_text(result.ood_target)})"), ("id", "held-out behaviour (ID)"),
                           ("id_per_token", "held-out paired completions per reply token (ID)"),
                           ("ood_sets", "OOD sets pooled per reply token, each set weighted equally")):
        ratios = [r for r in result.ratios if r.get("measure") == measure]
        if not ratios:
            continue
        lines += ["", f"## dW versus each method: {title} spread (Δ at α₊ − Δ at α₋), ratio dW / method", "",
                  "| method | dW spread | method spread | ratio dW / method [95% CI] |", "|---|---|---|---|"]
        for r in ratios:
            lines.append(f"| {r['name']} | {r['dw_spread']:+.3f} | {r['method_spread']:+.3f} | {r['ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}] |")
    if result.ratios:
        lines += ["", "The ratio's CI pairs the two methods on the same resampled dilemmas (claims for ID); when a method's spread CI includes 0 the ratio CI is unbounded in practice."]
    agreement = next((m.spec["direction_agreement"] for m in result.methods if m.spec.get("direction_agreement")), None)
    if agreement:
        reading = next((m.spec["reading"] for m in result.methods if m.spec.get("reading")), "last")
        lines += ["", f"## Activation directions: CAA against PCA per layer (read: {reading})", "",
                  "PCA's sign is aligned with the mean difference by steering-vectors, so cos ≥ 0 by construction; the share of "
                  "pairs whose difference projects positively on each direction says how consistent the contrast is.", "",
                  "| layer | cos(CAA, PCA) | pairs agreeing with CAA | pairs agreeing with PCA |", "|---|---|---|---|"]
        for layer, r in sorted(agreement.items(), key=lambda item: int(item[0])):
            lines.append(f"| {layer} | {r['cos_caa_pca']:+.3f} | {r['sign_agreement_caa']:.2f} | {r['sign_agreement_pca']:.2f} |")
    lines += ["", f"## KL achieved on the audit split ({result.n_audit_prompts} prompts × {config['n_tokens']} tokens), nats, 95% CI over prompts", "",
              "| method | sign | α | p95 KL | mean KL | max KL |", "|---|---|---|---|---|---|"]
    for m in result.methods:
        for label in ("plus", "minus"):
            arm = m.arm(label)
            lines.append(f"| {m.name} | {'+' if label == 'plus' else '−'} | {arm.alpha:+.3g} | "
                         f"{arm.audit_p95:.3f} [{arm.audit_p95_ci_low:.3f}, {arm.audit_p95_ci_high:.3f}] | "
                         f"{arm.audit_mean:.3f} [{arm.audit_mean_ci_low:.3f}, {arm.audit_mean_ci_high:.3f}] | {arm.audit_max:.2f} |")
    lines += ["", "## Calibration cost", "", "| method | sign | KL measurements | forward passes | wall s | message |", "|---|---|---|---|---|---|"]
    for m in result.methods:
        for label in ("plus", "minus"):
            arm = m.arm(label)
            lines.append(f"| {m.name} | {'+' if label == 'plus' else '−'} | {arm.iterations} | {arm.n_forward_passes} | "
                         f"{arm.seconds:.0f} | {arm.message or ''} |")
    return "\n".join(lines) + "\n"


def _pair_tables(result: ComparisonResult) -> list[str]:
    """ID and each OOD set of paired completions (summed over the reply and per reply token), the generalisation ratio,
    and the generation scores, per method at its calibrated strengths."""
    names = [o["name"] for o in result.ood_sets]
    lines = ["", "## In distribution and out of distribution: paired completions, log P(behaviour reply) − log P(other reply)", "",
             "Spread = Δ at α₊ − Δ at α₋ against the base, 95% cluster-bootstrap CI over items. Summed over the reply (nats) and "
             "per reply token (nats/token; OOD replies can be longer, which inflates a summed score). The pooled OOD column weights "
             "each set equally. Ratio = pooled OOD spread / ID spread, per token (one seed: no interval; see `wsteer compare-seeds`).", "",
             "| method | ID spread | ID spread /token | " + " | ".join(f"{n} /token" for n in names) + " | OOD pooled | OOD pooled /token | ratio OOD/ID /token |",
             "|---|---|---|" + "---|" * len(names) + "---|---|---|"]
    for m in result.methods:
        e = m.effects
        idt, oodt = e.mean("id_per_token", "spread"), e.mean("ood_sets_per_token", "spread")
        ratio = f"{oodt / idt:+.2f}" if idt and pd.notna(idt) and pd.notna(oodt) else "–"
        lines.append(f"| {m.name} | {interval_text(e.interval('id', 'spread'))} | {interval_text(e.interval('id_per_token', 'spread'))} | "
                     + " | ".join(interval_text(e.interval(f"ood_{n}_per_token", "spread")) for n in names)
                     + f" | {interval_text(e.interval('ood_sets', 'spread'))} | {interval_text(e.interval('ood_sets_per_token', 'spread'))} | {ratio} |")
    if any(("gen_id_metric", "base") in m.effects or ("gen_id_judge", "base") in m.effects for m in result.methods):
        agreement = result.judge_agreement or {}
        judge = (f"judge agreement with the hand labels: AUC {agreement['auc']:.2f}, accuracy {agreement['accuracy']:.2f}"
                 if "auc" in agreement else "judge agreement: not measured (no hand labels)")
        lines += ["", f"## Generations: greedy replies ({result.n_generation_prompts} ID + OOD prompts), change against the base reply", "",
                  f"Judge-free metric: {result.generation_metric or 'none'} (`weight_steering.evaluation.generations`); judged rate: share of replies "
                  f"the embedded judge scores above its threshold ({judge}). Spread = arm₊ − arm₋, 95% CI over prompts.", "",
                  "| method | ID metric spread | OOD metric spread | ID judged spread | OOD judged spread |", "|---|---|---|---|---|"]
        for m in result.methods:
            e = m.effects
            lines.append(f"| {m.name} | {interval_text(e.interval('gen_id_metric', 'spread'))} | {interval_text(e.interval('gen_ood_metric', 'spread'))} | "
                         f"{interval_text(e.interval('gen_id_judged', 'spread'))} | {interval_text(e.interval('gen_ood_judged', 'spread'))} |")
    return lines


def plot_effect_vs_kl(result: ComparisonResult, path: str | Path) -> Path:
    """p95 KL (x, nats) against OOD honesty Δ (y, nats): continuous methods as curves over both signs
    (− side drawn at −KL so the two signs separate), prompt methods as points; atomic PNG."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for m in result.methods:
        points = sorted(m.curve, key=lambda c: c["alpha"])
        x = [(-1 if c["alpha"] < 0 else 1) * c["p95"] for c in points]
        y = [c["ood_target"] for c in points]
        if m.continuous:
            ax.plot(x, y, marker="o", ms=3, label=m.name)
        else:
            ax.scatter(x, y, marker="*", s=90, label=m.name, zorder=3)
    target = result.target
    for side in (-target, target):
        ax.axvline(side, color="grey", lw=0.6, ls="--")
    ax.axhline(0, color="grey", lw=0.6)
    ylabel = ("OOD sets Δ vs base, nats per reply token (sets weighted equally)" if result.ood_measure == "ood_sets_per_token"
              else "OOD target Δ vs base (action-stratified), nats")
    ax.set(xlabel="signed p95 KL(steered ‖ base), nats (− side: negative strengths)", ylabel=ylabel,
           title=f"Effect vs KL: {result.behavior} ({result.model})")
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def render_seed_comparison(groups: list[dict]) -> str:
    """Markdown of :func:`weight_steering.comparison.seeds.summarize_seeds`: per behaviour, every method and measure with its
    per-seed values (``*``: that seed's row-level 95% CI excludes 0) and the t-interval over seeds; the ratios of
    dW's spread to each method's; cos(CAA, PCA) and per-pair sign agreement per seed."""
    lines = []
    for group in groups:
        seeds = group["seeds"]
        methods = f"; methods {', '.join(group['methods'])}" if group.get("methods") else ""
        if group.get("size_control"):
            methods += f"; random pairs, as many as the {group['filter_pairs']} judge keeps (the filter's size control)"
        elif group.get("filter_pairs"):
            methods += f"; pairs filtered by the {group['filter_pairs']} judge"
        lines += [f"### {group['behavior']}: seeds {', '.join(map(str, seeds))} (p95 KL target {group['target']:g} nat per sign; "
                  f"{', '.join(group.get('devices', []))}{methods})", "",
                  "Per-seed values; `*` where that seed's 95% CI over rows excludes 0. Across seeds: mean with a Student-t 95% interval "
                  f"over the {len(seeds)} seed means (the seed is the unit). Log-odds in nats.", "",
                  "| method | measure | " + " | ".join(f"seed {s}" for s in seeds) + " | across seeds [t 95%] |",
                  "|---|---|" + "---|" * len(seeds) + "---|"]
        for row in group["rows"]:
            cells = [f"{v:+.3f}{'*' if sig else ''}" for v, sig in zip(row["per_seed"], row["row_significant"])]
            lines.append(f"| {row['name']} | {SEED_MEASURE_LABELS.get(row['measure'], row['measure'])} | " + " | ".join(cells)
                         + f" | {seed_text(row)} |")
        if group["ratios"]:
            lines += ["", "dW's spread over each method's spread (paired on identical rows), per seed and across seeds:", "",
                      "| measure | method | " + " | ".join(f"seed {s}" for s in seeds) + " | across seeds [t 95%] |",
                      "|---|---|" + "---|" * len(seeds) + "---|"]
            for row in group["ratios"]:
                lines.append(f"| {row['measure']} | {row['method']} | " + " | ".join(f"{v:+.2f}" for v in row["per_seed"])
                             + f" | {seed_text(row, 2)} |")
        for reference in dict.fromkeys(row["reference"] for row in group.get("advantages", [])):
            rows = [row for row in group["advantages"] if row["reference"] == reference]
            label = "dW" if reference == "dW" else rows[0]["reference_name"]
            lines += ["", f"{label} minus each method, paired by seed (the seed is the unit; a prompt method is the same at every seed, so its "
                      f"interval holds {label}'s seed-to-seed spread only):", "",
                      f"| measure | {label} − method | " + " | ".join(f"seed {s}" for s in seeds) + " | across seeds [t 95%] |",
                      "|---|---|" + "---|" * len(seeds) + "---|"]
            for row in rows:
                lines.append(f"| {ADVANTAGE_LABELS.get(row['measure'], row['measure'])} | {row['name']} | "
                             + " | ".join(f"{v:+.3f}" for v in row["per_seed"]) + f" | {seed_text(row)} |")
        if group["agreement"]:
            lines += ["", "Activation directions on the dW slice, mean over its layers: cos(CAA, PCA) (≥ 0 by construction: "
                      "the library orients PC1 with the mean difference) and the share of pairs whose difference projects positively.", "",
                      "| seed | cos(CAA, PCA) | pairs agreeing with CAA | pairs agreeing with PCA |", "|---|---|---|---|"]
            lines += [f"| {a['seed']} | {a['cos_caa_pca']:.3f} | {a['sign_agreement_caa']:.2f} | {a['sign_agreement_pca']:.2f} |"
                      for a in group["agreement"]]
        lines.append("")
    return "\n".join(lines)


def budget_curves(groups: list[dict], behavior: str, x_measure: str = "id_per_token_spread",
                  y_measure: str = "ood_sets_per_token_spread") -> dict[str, list[dict]]:
    """Per method of ``behavior``, one point per KL budget from :func:`~weight_steering.comparison.seeds.summarize_seeds`
    groups: ``{"target", "x", "y", "y_low", "y_high"}`` (seed means of ``x_measure`` and ``y_measure``, the y t-interval
    over seeds; nats per reply token by default), sorted by budget. Methods missing a measure are left out."""
    curves: dict[str, list[dict]] = {}
    for group in groups:
        if group["behavior"] != behavior:
            continue
        rows = {(r["method"], r["measure"]): r for r in group["rows"]}
        for method in dict.fromkeys(r["method"] for r in group["rows"]):
            x, y = rows.get((method, x_measure)), rows.get((method, y_measure))
            if x is None or y is None:
                continue
            curves.setdefault(method, []).append({"target": group["target"], "x": x["mean"], "y": y["mean"],
                                                  "y_low": y["ci_low"], "y_high": y["ci_high"]})
    return {method: sorted(points, key=lambda p: p["target"]) for method, points in curves.items()}


def plot_budget_curves(groups: list[dict], behavior: str, path: str | Path) -> dict[str, list[dict]]:
    """At equal in-distribution effect, who moves out of distribution more? Two panels, one line per method and a band
    over seeds (t 95%): the OOD spread per reply token against the p95 KL budget (left) and against the ID spread per
    reply token (right). Written atomically; returns the plotted :func:`budget_curves`."""
    curves = budget_curves(groups, behavior)
    fig, (by_budget, by_id) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, (method, points) in enumerate(curves.items()):
        style = {"color": f"C{index % 10}", "marker": "o", "label": method}
        targets, xs, ys = [p["target"] for p in points], [p["x"] for p in points], [p["y"] for p in points]
        lows, highs = [p["y_low"] for p in points], [p["y_high"] for p in points]
        yerr = [[y - low for y, low in zip(ys, lows)], [high - y for y, high in zip(ys, highs)]]
        for ax, x in ((by_budget, targets), (by_id, xs)):
            ax.errorbar(x, ys, yerr=yerr, capsize=3, **style)
            ax.fill_between(x, lows, highs, color=style["color"], alpha=0.15)
    by_budget.set(xlabel="p95 KL budget per sign (nats)", ylabel="OOD spread per reply token (nats)", title=f"{behavior}: by budget")
    by_id.set(xlabel="ID spread per reply token (nats)", ylabel="OOD spread per reply token (nats)", title=f"{behavior}: at equal ID effect")
    by_budget.legend(fontsize=8)
    save_figure(fig, path)
    return curves
