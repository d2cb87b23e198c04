"""The condensed tables of docs/RESULTS.md §1 from the archived comparisons of `tone` and `upbeat`
(`reproduce/comparison_followable.sh`), through the same `summarize_seeds` as `wsteer compare-seeds`:

    python reproduce/followable_tables.py > docs/compare/followable_summary.md
    python reproduce/followable_tables.py --runs recipes > docs/compare/recipes_summary.md   (comparison_recipes.sh)
    python reproduce/followable_tables.py --runs filtered upbeat > docs/compare/upbeat_filtered_summary.md   (comparison_upbeat_filtered.sh)
    python reproduce/followable_tables.py --model gemma-3-270m tone > docs/compare/gemma_tone_summary.md   (comparison_gemma.sh)

Per behaviour and method: the ID and pooled OOD spreads per reply token (Δ at α₊ − Δ at α₋, the sets weighted
equally) per seed and across seeds, the generalisation ratio OOD / ID per seed and across, dW's paired advantage
(dW − method per seed; also dW (paper recipe) − method where the run has it) on the OOD spread and on the ratio, the change of the neutral reference answers' NLL at each
calibrated strength, and the generation scores (judge-free metric and judged rate, OOD prompts). Intervals are
Student-t over the seeds; a prompt method is the same at every seed, so its interval is its row-level CI (marked
"rows").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from weight_steering.comparison.seeds import load_comparisons, summarize_seeds

ARCHIVES = Path(__file__).resolve().parents[1] / "docs" / "compare" / "archive"


def cell(row: dict | None, digits: int = 2) -> str:
    if row is None:
        return "–"
    seeds = " / ".join(f"{v:+.{digits}f}" for v in row["per_seed"])
    if row.get("seed_independent"):
        ci = f"[{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}] rows" if np.isfinite(row["ci_low"]) else "(same every seed)"
        return f"{row['mean']:+.{digits}f} {ci}"
    if row["n"] < 2 or not np.isfinite(row["ci_low"]):
        return f"{seeds} (one seed)"
    star = "*" if row["ci_low"] > 0 or row["ci_high"] < 0 else ""
    return f"{seeds} → **{row['mean']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]**{star}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="lora", help="result name prefix: lora (the four-method results at 1 nat, lora-seed<s>), "
                        "filtered (lora-seed<s>-filtered-metric) or any other, e.g. recipes (recipes-seed<s>-kl<t>: one table per budget)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="the model's folder in docs/compare/archive")
    parser.add_argument("behaviors", nargs="*", default=["tone", "upbeat"])
    opts = parser.parse_args()
    runs, archive, behaviors = opts.runs, ARCHIVES / opts.model, opts.behaviors
    if not archive.is_dir():
        known = ", ".join(sorted(p.name for p in ARCHIVES.iterdir() if p.is_dir()))
        parser.error(f"--model {opts.model}: no archive folder {archive}; archived models: {known}")
    if runs == "lora":
        results = [archive / b / "compare" / f"lora-seed{s}" for b in behaviors for s in (0, 1, 2)]
    elif runs == "filtered":  # the same comparison on pairs the metric judge kept, then on its size control (comparison_upbeat_filtered.sh)
        results = [archive / b / "compare" / f"lora-seed{s}-filtered-metric{control}" for b in behaviors for control in ("", "-sizecontrol")
                   for s in (0, 1, 2)]
    else:
        results = [r for b in behaviors for r in sorted((archive / b / "compare").glob(f"{runs}-seed*"))]
    results = [r for r in results if r.exists()]
    if not results:
        wanted = {"lora": "lora-seed<s>", "filtered": "lora-seed<s>-filtered-metric"}.get(runs, f"{runs}-seed*")
        raise SystemExit(f"no {wanted} results for {', '.join(behaviors)} under {archive}; run the recipe that makes them first")
    groups = summarize_seeds(load_comparisons(results))
    for group in groups:
        rows = {(r["method"], r["measure"]): r for r in group["rows"]}
        adv = {(a["method"], a["measure"]): a for a in group["advantages"] if a["reference"] == "dW"}
        paper = {(a["method"], a["measure"]): a for a in group["advantages"] if a["reference"] == "dW_paper"}
        methods = list(dict.fromkeys(r["method"] for r in group["rows"]))
        names = {r["method"]: r["name"] for r in group["rows"]}
        budget = {"lora": "", "filtered": " on a random subset of as many pairs (size control)" if group.get("size_control") else
                  " on pairs filtered by VADER"}.get(runs, f" at p95 KL = {group['target']:g} nats per sign")
        print(f"### {group['behavior']}{budget}: seeds {', '.join(map(str, group['seeds']))} ({', '.join(group['devices'])})\n")
        # with the paper-recipe dW in the run, its paired advantage over each method too
        extra = ((" | dW (paper) − method, OOD /token | dW (paper) − method, ratio", "---|---|"),) if paper else ()
        print("| method | ID spread /token | OOD spread /token (sets pooled) | ratio OOD / ID (/token) | dW − method, OOD /token | dW − method, ratio"
              + "".join(e[0] for e in extra) + " |")
        print("|---|---|---|---|---|---|" + "".join(e[1] for e in extra))
        for m in methods:
            paper_cells = f" {cell(paper.get((m, 'ood_sets_per_token_spread')))} | {cell(paper.get((m, 'generalisation_ratio_per_token')))} |" if paper else ""
            print(f"| {names[m]} | {cell(rows.get((m, 'id_per_token_spread')))} | {cell(rows.get((m, 'ood_sets_per_token_spread')))} | "
                  f"{cell(rows.get((m, 'generalisation_ratio_per_token')))} | {cell(adv.get((m, 'ood_sets_per_token_spread')))} | "
                  f"{cell(adv.get((m, 'generalisation_ratio_per_token')))} |" + paper_cells)
        if runs not in ("lora", "filtered"):  # the recipe runs: the answer table only (strengths and costs: wsteer compare-seeds)
            print()
            continue
        print("\n| method | α₋ / α₊ (across seeds) | audit p95 KL₋ / ₊ | OOD per set /token: " + " / ".join(group["ood_sets"])
              + " | ID / OOD spread summed | ratio summed | ΔNLL₋ / ₊ (nats/token) | generations, OOD: metric spread | judged-rate spread |")
        print("|---|---|---|---|---|---|---|---|---|")
        for m in methods:
            get = lambda measure: rows.get((m, measure))  # noqa: E731
            mean = lambda measure: f"{get(measure)['mean']:+.2f}" if get(measure) else "–"  # noqa: E731
            sets = " / ".join(mean(f"ood_{s}_per_token_spread") for s in group["ood_sets"])
            print(f"| {names[m]} | {mean('alpha_minus')} / {mean('alpha_plus')} | {mean('audit_p95_minus')} / {mean('audit_p95_plus')} | {sets} | "
                  f"{mean('id_spread')} / {mean('ood_sets_spread')} | {mean('generalisation_ratio_summed')} | "
                  f"{mean('nll_change_minus')} / {mean('nll_change_plus')} | "
                  f"{cell(get('gen_ood_metric_spread'), 3)} | {cell(get('gen_ood_judged_spread'), 2)} |")
        print()


if __name__ == "__main__":
    main()
