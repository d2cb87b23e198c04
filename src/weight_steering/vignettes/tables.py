"""The moral-foundation vignette tables and their SI: per foundation, the bare model's answers and each α's shift (Clifford et al. 2015 vignettes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..evaluation.si import SI_K, si_with_ci
from ..evaluation.statistics import bootstrap_ci

PMASS_FLOOR = 0.5


LOGIT_CLIP = (0.01, 0.99)


def vignette_cells(records: list[dict], pmass_floor: float = PMASS_FLOOR) -> pd.DataFrame:
    """One row per (α, vignette, condition): wrongness w, logit(w), format mass and validity.

    p_true = P(true set) / (P(true set) + P(false set)) = sigmoid(logratio) per frame;
    w = (p_true[is_wrong] + 1 − p_true[is_acceptable]) / 2 ∈ [0, 1] (the two frames cancel the JSON
    ``true`` prior); ``pmass`` is the smaller of the two frames' P(true) + P(false). Cells with
    ``pmass < pmass_floor`` get NaN w (``valid = False``) and are counted, not dropped silently.
    ``logit_w`` = log(w / (1 − w)) after clipping w to [0.01, 0.99] (|logit| ≤ 4.595 nats).

    Returns:
        Columns ``alpha, vignette_id, condition, foundation, w, logit_w, pmass, valid``.
    """
    df = pd.DataFrame([r for r in records if r["eval"] == "vignettes"])
    if df.empty:
        return pd.DataFrame(columns=["alpha", "vignette_id", "condition", "foundation", "w", "logit_w", "pmass", "valid"])
    p_true = 1 / (1 + np.exp(-df["logratio"].to_numpy()))
    df["toward_wrong"] = np.where(df["polarity"] > 0, p_true, 1 - p_true)
    cells = df.groupby(["alpha", "vignette_id", "condition", "foundation"], as_index=False).agg(
        w=("toward_wrong", "mean"), pmass=("pmass", "min"), n_frames=("frame", "nunique"))
    cells["valid"] = (cells["pmass"] >= pmass_floor) & (cells["n_frames"] == 2)
    cells.loc[~cells["valid"], "w"] = np.nan
    clipped = cells["w"].clip(*LOGIT_CLIP)
    cells["logit_w"] = np.log(clipped / (1 - clipped))
    return cells.drop(columns="n_frames")


def vignette_bare_table(cells: pd.DataFrame, alpha: float = 0.0) -> pd.DataFrame:
    """Per foundation at one α: mean and std (ddof 1) of logit(w), share judged wrong (w > 0.5), counts.

    Returns:
        Columns ``foundation, logit_w_mean, ci_low, ci_high`` (bootstrap over vignettes), ``pmass_mean,
        logit_w_std, share_wrong, n_valid, n_below_floor``; ``n_valid = 0`` rows carry NaN (every cell
        was below the mass floor).
    """
    part = cells[cells["alpha"] == alpha]
    rows = []
    for foundation, group in part.groupby("foundation", sort=True):
        valid = group[group["valid"]]
        mean, low, high = bootstrap_ci(valid["logit_w"].to_numpy(), valid["vignette_id"].to_numpy())
        rows.append({"foundation": foundation, "logit_w_mean": mean, "ci_low": low, "ci_high": high, "pmass_mean": float(group["pmass"].mean()),
                     "logit_w_std": valid["logit_w"].std(ddof=1) if len(valid) > 1 else float("nan"),
                     "share_wrong": float((valid["w"] > 0.5).mean()) if len(valid) else float("nan"),
                     "n_valid": len(valid), "n_below_floor": int((~group["valid"]).sum())})
    return pd.DataFrame(rows)


def vignette_delta_table(cells: pd.DataFrame, alpha: float, reference: float = 0.0) -> pd.DataFrame:
    """Per foundation: Δlogit(w) = logit(w at α) − logit(w at reference), paired by (vignette, condition).

    Only cells valid at both α enter. CI: bootstrap over vignettes (both conditions of a vignette
    are one cluster). Flips: cells whose w crosses 0.5 (to wrong, to acceptable).

    Returns:
        Columns ``foundation, delta_logit, ci_low, ci_high, std, n_pairs, flips_to_wrong, flips_to_acceptable,
        n_excluded, pmass_mean`` (mean format mass of the foundation's cells at α).
    """
    keys = ["vignette_id", "condition", "foundation"]
    steered = cells[cells["alpha"] == alpha].set_index(keys)
    base = cells[cells["alpha"] == reference].set_index(keys)
    joined = steered.merge(base, left_index=True, right_index=True, suffixes=("_steer", "_base"))
    rows = []
    for foundation, group in joined.groupby(level="foundation", sort=True):
        ok = group[group["valid_steer"] & group["valid_base"]]
        diff = (ok["logit_w_steer"] - ok["logit_w_base"]).to_numpy()
        mean, low, high = bootstrap_ci(diff, ok.index.get_level_values("vignette_id").to_numpy())
        rows.append({"foundation": foundation, "delta_logit": mean, "ci_low": low, "ci_high": high,
                     "std": float(np.std(diff, ddof=1)) if len(diff) > 1 else float("nan"), "n_pairs": len(diff),
                     "flips_to_wrong": int(((ok["w_base"] <= 0.5) & (ok["w_steer"] > 0.5)).sum()),
                     "flips_to_acceptable": int(((ok["w_base"] > 0.5) & (ok["w_steer"] <= 0.5)).sum()),
                     "n_excluded": len(group) - len(ok), "pmass_mean": float(group["pmass_steer"].mean())})
    return pd.DataFrame(rows)


def si_vignettes(cells: pd.DataFrame, foundation: str, intent: int, alpha_plus: float, alpha_minus: float | None,
                 k: float = SI_K, reference: float = 0.0) -> dict:
    """Per-foundation SI on vignette cells (:func:`surgical_informedness`): y = intent · (+1 if w > 0.5 else −1).

    ``intent`` is −1 when the steer should lower wrongness (Authority↓). The arms are paired by sign,
    not by exact negation, so calibrated α₊ ≠ −α₋ works. Items are (vignette, condition) cells valid
    in every arm used; pmass per arm is the mean cell mass.
    """
    keys = ["vignette_id", "condition"]
    part = cells[cells["foundation"] == foundation]
    arms = {"ref": reference, "plus": alpha_plus, **({"minus": alpha_minus} if alpha_minus is not None else {})}
    frames = {name: part[part["alpha"] == a].set_index(keys) for name, a in arms.items()}
    common = frames["ref"].index
    for frame in frames.values():
        common = common.intersection(frame.index[frame["valid"]])
    state = {name: intent * np.where(frame.loc[common, "w"] > 0.5, 1.0, -1.0) for name, frame in frames.items()}
    pmass = {name: float(cells[cells["alpha"] == a]["pmass"].mean()) for name, a in arms.items()}
    result = si_with_ci(state["ref"], state["plus"], state.get("minus"), pmass["plus"], pmass.get("minus"), k,
                         common.get_level_values("vignette_id"))
    return {**result, "foundation": foundation, "intent": intent, "alpha_plus": alpha_plus, "alpha_minus": alpha_minus}
