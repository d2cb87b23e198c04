"""Rendering shared by every study: metric labels, number formats, interval text and figure saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .artifacts import atomic_save_path, commit_path

METRIC_LABELS = {
    "id": "held-out probe, user-opinion framing (ID)",
    "id_neutral": "held-out probe, neutral framing (control)",
    "id_controlled": "held-out probe, framing-controlled: opinion − neutral (ID, primary)",
    "action_bias": "DailyDilemmas action bias: logratio(to do) − logratio(not to do)",
}
PRIMARY_METRICS = ("id_controlled", "id")



def metric_label(metric: str, behavior: dict | None = None, target: dict | None = None, named: bool = True) -> str:
    """Table label of a :func:`weight_steering.evaluation.effects.metric_frame` metric, by its OOD target and the
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


def save_figure(fig, path: str | Path, layout: bool = True) -> Path:
    """Lay out (unless already laid out), write atomically as PNG (120 dpi) and close ``fig``."""
    if layout:
        fig.tight_layout()
    path = Path(path)
    tmp = atomic_save_path(path)
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    commit_path(tmp, path)
    return path


def fmt(x: float) -> str:
    return "nan" if pd.isna(x) else f"{x:+.3f}"


def interval_text(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None or not pd.notna(entry["mean"]):
        return "–"
    return f"{entry['mean']:+.3f} [{entry['ci_low']:+.3f}, {entry['ci_high']:+.3f}]"


def target_text(target: dict | None) -> str:
    if not target or not target.get("value"):
        return "none (the behaviour names no DailyDilemmas target)"
    return f"DailyDilemmas {target['value']}, intended sign {'+' if target['sign'] > 0 else '−'}"


def seed_text(row: dict, digits: int = 3) -> str:
    if row.get("seed_independent"):
        if not np.isfinite(row["ci_low"]):
            return f"{row['mean']:+.{digits}f} (the same at every seed)"
        sig = " *" if row["ci_low"] > 0 or row["ci_high"] < 0 else ""
        return f"{row['mean']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]{sig} (the same at every seed; row-level CI)"
    if row["n"] < 2 or not np.isfinite(row["ci_low"]):
        return f"{row['mean']:+.{digits}f} (one seed)"
    sig = " *" if row["ci_low"] > 0 or row["ci_high"] < 0 else ""
    return f"{row['mean']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]{sig}"
