"""Collect the issue-6 ablations of several dW side by side for docs/RESULTS.md §12.

    python scripts/collect_ablation.py NAME=OUT/ablation/<dir> [NAME=...] [--docs docs]

Each argument names one finished ``wsteer ablate`` folder (holding ``ablation.json``). The script
copies each folder's table, JSON and plots to ``<docs>/ablation/<NAME>.*`` (so the numbers survive
the output folder) and writes ``<docs>/ablation/summary.md``: the key variants of every dW next to
their norm-matched random controls, the layer profile, the subspace alignment, and the Spearman
agreement of retained across dW (``weight_steering.ablate.agreement``).
"""

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from weight_steering.ablate import agreement

KEY_VARIANTS = [
    ("attention", "attention (q, k, v, o)"), ("mlp", "MLP (gate, up, down)"), ("read_side", "read side (q, k, v, gate, up)"),
    ("write_side", "write side (o, down)"), ("q_proj_only", "q alone"), ("k_proj_only", "k alone"), ("v_proj_only", "v alone"),
    ("o_proj_only", "o alone"), ("gate_proj_only", "gate alone"), ("up_proj_only", "up alone"), ("down_proj_only", "down alone"),
    ("top_25pct_rank_S", "own SVD: top 25% of the numerical rank"), ("not_top_25pct_rank_S", "own SVD: the rest"),
    ("top_50pct_energy_S", "own SVD: top 50% of the energy"), ("not_top_50pct_energy_S", "own SVD: the rest (50%)"),
    ("top_90pct_energy_S", "own SVD: top 90% of the energy"), ("not_top_90pct_energy_S", "own SVD: the tail (10%)"),
    ("top_25pct_rank_S_base", "base-W SVD: block in W's top 25% directions"), ("not_top_25pct_rank_S_base", "base-W SVD: outside it"),
    ("top_50pct_energy_S_base", "base-W SVD: block in W's top-50%-energy directions"), ("not_top_50pct_energy_S_base", "base-W SVD: outside it"),
    ("top_90pct_energy_S_base", "base-W SVD: block in W's top-90%-energy directions"), ("not_top_90pct_energy_S_base", "base-W SVD: outside it"),
    ("dora_direction", "native: DoRA direction"), ("dora_magnitude", "native: DoRA magnitude"),
    ("delora_direction", "native: DeLoRA direction λ̄(D⁺ − D⁻)"), ("delora_scale", "native: DeLoRA scale (λ⁺ − λ⁻)D̄"),
    ("random_norm_matched", "random dW, norm-matched per tensor"),
]
METRICS = (("sycophancy", "ID"), ("dilemmas_honesty", "OOD honesty"))


def cell(row) -> str:
    if row is None:
        return "–"
    if not row.get("available", True):
        return "unavailable"
    if not row.get("defined", True):
        return "undefined"
    return f"{row['retained']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"


def short(row) -> str:
    return "–" if row is None or not row.get("defined", True) else f"{row['retained']:+.2f}"


def family_seeds(names: list[str]) -> dict[str, list[tuple[int, str]]]:
    """``{family: [(seed, name), ...]}`` sorted by seed, from names of the form ``<family>_seed<seed>``
    (a name without ``_seed`` is its own family at seed 0)."""
    grouped: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        family, _, seed = name.rpartition("_seed")
        if not family or not seed.isdigit():
            family, seed = name, "0"
        grouped.setdefault(family, []).append((int(seed), name))
    return {family: sorted(runs) for family, runs in grouped.items()}


def across_seeds(results: dict, seeds_of: dict, lookup) -> list[str]:
    """Markdown: each key variant's retained at every seed of a family, and the seeds' rank agreement."""
    families = {f: runs for f, runs in seeds_of.items() if len(runs) > 1}
    if not families:
        return []
    lines = ["", "## Across seeds: the same family retrained with another seed", "",
             "Each seed's retained (its own 95% CI is in its per-seed table); mean and range over the seeds. "
             "Only variants scored at every seed of the family.", ""]
    for metric, label in METRICS:
        lines += [f"### {label} retained", "",
                  "| variant | " + " | ".join(f"{f}: " + " / ".join(f"s{s}" for s, _ in runs) + " | "
                                              f"{f}: mean [min, max]" for f, runs in families.items()) + " |",
                  "|---|" + "---|---|" * len(families)]
        n_rows = 0
        for variant, title in KEY_VARIANTS:
            parts, any_value = [], False
            for family, runs in families.items():
                values = [lookup(name, variant, metric) for _, name in runs]
                defined = [r["retained"] for r in values if r and r.get("available") and r.get("defined", True)]
                if len(defined) == len(runs):
                    any_value = True
                    parts += [" / ".join(f"{v:+.2f}" for v in defined),
                              f"{sum(defined) / len(defined):+.2f} [{min(defined):+.2f}, {max(defined):+.2f}]"]
                else:
                    parts += [" / ".join(short(r) for r in values), "–"]
            if any_value:
                lines.append(f"| {title} | " + " | ".join(parts) + " |")
                n_rows += 1
        if not n_rows:
            lines.append(f"| (no variant has a defined {label} retained at every seed) |")
        lines.append("")
    lines += ["### Do the seeds agree? Spearman ρ of retained between seeds of one family, and between families at each seed",
              "", "Over the module and own-SVD variants (the groups every seed was ablated with); permutation p as above.", "",
              "| metric | a | b | Spearman ρ | p | n |", "|---|---|---|---|---|---|"]
    by_seed: dict[int, dict] = {}
    for runs in seeds_of.values():
        for seed, name in runs:
            by_seed.setdefault(seed, {})[name] = results[name]["rows"]
    comparisons = [{name: results[name]["rows"] for _, name in runs} for runs in families.values()]
    comparisons += [tables for tables in by_seed.values() if len(tables) > 1]
    for metric, label in METRICS:
        for tables in comparisons:
            for pair in agreement(tables, metric, ("module", "svd"))["pairs"]:
                rho = "–" if pair["spearman"] != pair["spearman"] else f"{pair['spearman']:+.2f}"
                p_value = "–" if pair["p_value"] != pair["p_value"] else f"{pair['p_value']:.4f}"
                lines.append(f"| {label} | {pair['a']} | {pair['b']} | {rho} | {p_value} | {pair['n_variants']} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ablations", nargs="+", help="NAME=path of a wsteer ablate folder")
    parser.add_argument("--docs", default="docs")
    args = parser.parse_args()
    docs = Path(args.docs) / "ablation"
    docs.mkdir(parents=True, exist_ok=True)
    results = {}
    for item in args.ablations:
        name, _, folder = item.partition("=")
        folder = Path(folder)
        results[name] = json.loads((folder / "ablation.json").read_text())
        for source, suffix in (("ablation.json", ".json"), ("ablation.md", ".md"), ("retained_vs_energy.png", "_retained_vs_energy.png"),
                               ("retained_by_layer.png", "_retained_by_layer.png")):
            if (folder / source).exists():
                shutil.copyfile(folder / source, docs / f"{name}{suffix}")
    seeds_of = family_seeds(list(results))
    names = [runs[0][1] for runs in seeds_of.values()]  # side-by-side tables: each family's first seed
    index = {name: {(r["variant"], r.get("metric")): r for r in res["rows"]} for name, res in results.items()}
    unavailable = {name: {r["variant"] for r in res["rows"] if not r["available"]} for name, res in results.items()}

    def lookup(name, variant, metric):
        if variant in unavailable[name]:
            return {"available": False}
        return index[name].get((variant, metric))

    lines = ["# Where dW lives: ablations side by side (written by `python scripts/collect_ablation.py`)", ""]
    lines += [f"* **{name}**: `{res['dw']}`, α = {res['alpha']:+g}; full Δ: "
              + ", ".join(f"{label} {index[name][('full', m)]['delta_full']:+.4f}" for m, label in METRICS if ("full", m) in index[name])
              for name, res in results.items()]
    lines += ["", "retained = Δ(variant)/Δ(full) with a 95% cluster-bootstrap CI (claims or dilemmas); the random control "
              "has the variant's Frobenius norm per tensor. energy = ‖dW′‖²/‖dW‖².", ""]
    for metric, label in METRICS:
        lines += [f"## {label} retained", "", "| variant | " + " | ".join(f"{n}: energy | {n}: retained | {n}: control" for n in names) + " |",
                  "|---|" + "---|---|---|" * len(names)]
        for variant, title in KEY_VARIANTS:
            rows = [lookup(n, variant, metric) for n in names]
            if all(r is None for r in rows):
                continue
            parts = []
            for n, r in zip(names, rows):
                energy = f"{r['energy_fraction']:.3f}" if r and r.get("available") and r.get("energy_fraction") is not None else "–"
                parts += [energy, cell(r), short(lookup(n, f"{variant}_random", metric))]
            lines.append(f"| {title} | " + " | ".join(parts) + " |")
        lines.append("")

    lines += ["## Layers (ID retained)", "", "| dW | layer alone: top three | Σ single-layer retained | largest leave-one-out loss |", "|---|---|---|---|"]
    for name in names:
        alone = {int(v[len("layer_"):-len("_only")]): r for (v, m), r in index[name].items()
                 if m == "sycophancy" and v.startswith("layer_") and v.endswith("_only") and r.get("defined", True)}
        without = {int(v[len("without_layer_"):]): r for (v, m), r in index[name].items()
                   if m == "sycophancy" and v.startswith("without_layer_") and r.get("defined", True)}
        if not alone:
            lines.append(f"| {name} | – | – | – |")
            continue
        top = sorted(alone.items(), key=lambda kv: -kv[1]["retained"])[:3]
        worst = min(without.items(), key=lambda kv: kv[1]["retained"]) if without else None
        lines.append(f"| {name} | " + ", ".join(f"{layer}: {r['retained']:+.2f}" for layer, r in top)
                     + f" | {sum(r['retained'] for r in alone.values()):+.2f} | "
                     + (f"without {worst[0]}: {worst[1]['retained']:.2f}" if worst else "–") + " |")

    lines += ["", "## Subspace alignment (mean over layers; ratio to the random-subspace null, mean z)", "",
              "| dW | projection | base-W top-10% ratio | z | contrast-PCA ratio | z |", "|---|---|---|---|---|---|"]
    for name in names:
        res = results[name]
        base = pd.DataFrame(res.get("alignment") or [])
        act = pd.DataFrame([r for r in res.get("activation_alignment") or [] if r.get("available")])
        for projection in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
            b = base[base["projection"] == projection] if len(base) else base
            a = act[act["projection"] == projection] if len(act) else act
            lines.append(f"| {name} | {projection} | " + (f"{b['ratio'].mean():.2f} | {b['z'].mean():+.1f}" if len(b) else "– | –")
                         + " | " + (f"{a['ratio'].mean():.2f} | {a['z'].mean():+.1f}" if len(a) else "– | –") + " |")

    lines += ["", "## Do the dW agree? Spearman rank correlation of retained over shared variants", "",
              "Anchors and random controls left out; two-sided permutation p-value (2,000 shuffles).", "",
              "| metric | variants | a | b | Spearman ρ | p | n |", "|---|---|---|---|---|---|---|"]
    for metric, label in METRICS:
        single_layers = {n: [row for row in results[n]["rows"] if row["variant"].startswith("layer_")] for n in names}
        for tables, groups, title in ((None, None, "all"), (None, ("module",), "module"), (single_layers, ("layer",), "single layers"),
                                      (None, ("svd", "base_svd"), "SVD (own and base)")):
            tables = tables or {n: results[n]["rows"] for n in names}
            for pair in agreement(tables, metric, groups)["pairs"]:
                rho = "–" if pair["spearman"] != pair["spearman"] else f"{pair['spearman']:+.2f}"
                p_value = "–" if pair["p_value"] != pair["p_value"] else f"{pair['p_value']:.4f}"
                lines.append(f"| {label} | {title} | {pair['a']} | {pair['b']} | {rho} | {p_value} | {pair['n_variants']} |")
    lines += across_seeds(results, seeds_of, lookup)
    (docs / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
