"""Stage 6, analyse: per-α summaries and α contrasts with bootstrap 95% confidence intervals.

Metrics (all in log-odds, nats):

* ``sycophancy``: mean logratio on the held-out claims (higher = more agreement with the user).
* ``dilemmas_<value>``: mean logratio × label_value over the DailyDilemmas rows the value labels
  (higher = the model picks the value-carrying action more). ``honesty`` is the target;
  justice, courage and temperance are off-target.

Confidence intervals are percentile bootstraps (2,000 resamples, seed 0). DailyDilemmas rows are
resampled by dilemma (the two actions of a dilemma are one cluster); contrasts between two α are
paired (the same resampled rows at both α).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .eval_data import TARGET_VALUE, VALUES

N_BOOTSTRAP = 2000


def metric_frame(records: list[dict]) -> pd.DataFrame:
    """Long table ``alpha, metric, row_id, cluster, score, pmass`` from evaluation records."""
    frames = []
    df = pd.DataFrame(records)
    if df.empty:
        return pd.DataFrame(columns=["alpha", "metric", "row_id", "cluster", "score", "pmass"])
    syc = df[df["eval"] == "sycophancy"]
    if len(syc):
        frames.append(pd.DataFrame({"alpha": syc["alpha"], "metric": "sycophancy", "row_id": syc["row_id"],
                                    "cluster": syc["group"], "score": syc["logratio"], "pmass": syc["pmass"]}))
    dil = df[df["eval"] == "dilemmas"]
    for value in VALUES:
        if len(dil) == 0:
            break
        part = dil[dil[f"label_{value}"] != 0]
        frames.append(pd.DataFrame({"alpha": part["alpha"], "metric": f"dilemmas_{value}", "row_id": part["row_id"],
                                    "cluster": part["group"], "score": part["logratio"] * part[f"label_{value}"], "pmass": part["pmass"]}))
    return pd.concat(frames, ignore_index=True)


def bootstrap_ci(values: np.ndarray, clusters: np.ndarray, n_boot: int = N_BOOTSTRAP, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` ``[N]`` and its cluster-bootstrap percentile CI.

    Returns:
        ``(mean, low, high)``; NaNs when ``values`` is empty.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    _, cluster_index = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = cluster_index.max() + 1
    sums = np.bincount(cluster_index, weights=values, minlength=n_clusters)
    counts = np.bincount(cluster_index, minlength=n_clusters).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    boot = sums[draws].sum(1) / counts[draws].sum(1)
    tail = (1 - level) / 2 * 100
    return float(values.mean()), float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail))


def per_alpha_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (metric, α): mean score with 95% CI, mean and min pmass, n rows."""
    out = []
    for (metric, alpha), part in frame.groupby(["metric", "alpha"], sort=True):
        mean, low, high = bootstrap_ci(part["score"].to_numpy(), part["cluster"].to_numpy())
        out.append({"metric": metric, "alpha": alpha, "mean": mean, "ci_low": low, "ci_high": high,
                    "pmass_mean": part["pmass"].mean(), "pmass_min": part["pmass"].min(), "n": len(part)})
    return pd.DataFrame(out)


def contrast(frame: pd.DataFrame, metric: str, alpha_high: float, alpha_low: float) -> dict:
    """Paired difference mean(score at α_high) − mean(score at α_low) over identical rows, with 95% CI."""
    part = frame[frame["metric"] == metric]
    high = part[part["alpha"] == alpha_high].set_index("row_id")
    low = part[part["alpha"] == alpha_low].set_index("row_id")
    if high.empty or low.empty:
        return {"metric": metric, "contrast": f"α={alpha_high:+g} − α={alpha_low:+g}", "mean": float("nan"),
                "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    low = low.loc[high.index]
    diff = high["score"].to_numpy() - low["score"].to_numpy()
    mean, lo, hi = bootstrap_ci(diff, high["cluster"].to_numpy())
    return {"metric": metric, "contrast": f"α={alpha_high:+g} − α={alpha_low:+g}", "mean": mean, "ci_low": lo, "ci_high": hi, "n": len(diff)}


def headline_contrasts(frame: pd.DataFrame) -> pd.DataFrame:
    """The contrasts the main job reports: for every metric, (+1 − 0), (−1 − 0) and the spread (max α − min α)."""
    alphas = sorted(frame["alpha"].unique())
    rows = []
    for metric in frame["metric"].unique():
        if 1.0 in alphas and 0.0 in alphas:
            rows.append(contrast(frame, metric, 1.0, 0.0))
        if -1.0 in alphas and 0.0 in alphas:
            rows.append(contrast(frame, metric, -1.0, 0.0))
        if len(alphas) > 1:
            rows.append(contrast(frame, metric, alphas[-1], alphas[0]))
    return pd.DataFrame(rows)


def summarise(records: list[dict]) -> dict:
    """Per-α table, headline contrasts and row counts, as JSON-ready dicts."""
    frame = metric_frame(records)
    return {
        "per_alpha": per_alpha_summary(frame).to_dict(orient="records"),
        "contrasts": headline_contrasts(frame).to_dict(orient="records"),
        "n_truncated": int(sum(r["truncated"] for r in records)),
        "target_value": TARGET_VALUE,
    }
