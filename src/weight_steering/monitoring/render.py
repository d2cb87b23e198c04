"""The monitoring experiment's rendering."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..rendering import save_figure, seed_text


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
    return save_figure(fig, path)


def render_monitoring(result: dict) -> str:
    """Markdown of :func:`weight_steering.monitoring.run.monitoring_experiment`: per fraction the per-seed cosines, the mean with
    its t-interval over seeds, the nulls, and whether every seed was judged aligned."""
    lines = ["| behaviour fraction | cos(Δ, dW) per seed | mean [t 95% over seeds] | largest unrelated cos | random p99.9 | all seeds aligned |",
             "|---|---|---|---|---|---|"]
    for r in result["by_fraction"]:
        lines.append(f"| {r['fraction']:g} | " + " / ".join(f"{v:+.3f}" for v in r["per_seed"]) + f" | {seed_text(r)} | "
                     f"{r['unrelated_max']:+.3f} | {r['random_p999']:.4f} | {'yes' if r['all_aligned'] else 'no'} |")
    return "\n".join(lines) + "\n"


def render_monitor(result: dict) -> str:
    """Plain-text lines of one :func:`~weight_steering.monitoring.run.monitor` result: cos(Δ, dW) against its nulls, per
    layer and module, and the verdict."""
    null = result["random_null"]
    lines = [f"cos(Δ, dW) = {result['cos']:+.4f} over {result['n_tensors']} tensors; random directions {null['mean']:+.4f} ± "
             f"{null['sd']:.4f} (z = {result['z']:+.1f}, p99.9 {null['p999']:+.4f})"]
    lines += [f"  unrelated dW {label}: cos {value:+.4f}" for label, value in result["unrelated"].items()]
    lines.append("per layer: " + ", ".join(f"{k} {v:+.3f}" for k, v in result["per_layer"].items()))
    lines.append("per module: " + ", ".join(f"{k} {v:+.3f}" for k, v in result["per_module"].items()))
    lines.append(result["verdict"])
    return "\n".join(lines) + "\n"
