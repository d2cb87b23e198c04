"""Hypotheses over seeds: the candidates' scores per seed, t-intervals and a permutation test of the ranking's agreement."""

from __future__ import annotations

import numpy as np

from ..artifacts import read_dw_results
from ..evaluation.statistics import mean_rank_agreement, seed_interval
from .candidates import HypothesisError

RANKED_SIDES = ("write", "mixed")  # the candidates ranked on dW's write side (the ceiling and read side are not)


def load_hypotheses(paths: list) -> list[dict]:
    """The ``hypotheses.json`` of each ``wsteer hypotheses`` folder (or the file itself), with ``family`` and ``dw_seed`` read
    from the dW folder it scored (:func:`weight_steering.artifacts.read_dw_results`).

    Raises:
        HypothesisError: a missing or non-JSON file, a result that names no family and seed or holds no summary, two
            results for the same (family, seed), or results made with different k.
    """

    results = read_dw_results(paths, "hypotheses.json", "wsteer hypotheses", HypothesisError)
    for result in results:
        if "summary" not in result or "k" not in result:
            raise HypothesisError(f"{result['path']} is not a `wsteer hypotheses` result (no summary or k); run it again")
    if len({r["k"] for r in results}) > 1:
        raise HypothesisError(f"the results use different k ({sorted({r['k'] for r in results})}); compare results of one k")
    return results


def summarize_hypotheses(results: list[dict], n_permutations: int = 2000, seed: int = 0) -> dict:
    """Across dWs (families × seeds): the write-side ranking with seed-level intervals, and whether dWs rank alike.

    Args:
        results: :func:`load_hypotheses` output (each a :func:`score_candidates` result with ``family`` and ``dw_seed``).
        n_permutations: draws of the rank-agreement null (:func:`weight_steering.evaluation.statistics.mean_rank_agreement`).

    Returns:
        ``{"k", "dws": ["family seed s", …], "ranking": [...], "agreement": {...}}``. ``ranking`` has one entry per
        write-side or mixed candidate scored on every dW, sorted by the mean R_w over dWs: per family the per-seed R_w,
        % of the ceiling and R_act, and a Student-t interval over that family's seeds (the seed is the unit); the ceiling's
        R_w is given alongside. ``agreement``: the mean Spearman ρ of R_w over those candidates for pairs of seeds of one
        family (``within_family``) and for pairs of dWs of different families (``across_families``), each against a null
        that permutes every dW's values independently.

    Raises:
        HypothesisError: no results, or no candidate scored on every dW.
    """

    if not results:
        raise HypothesisError("no hypotheses results to summarise; give the folders `wsteer hypotheses` wrote")
    results = sorted(results, key=lambda r: (r["family"], r["dw_seed"]))
    tables = [{e["candidate"]: e for e in r["summary"]} for r in results]
    names = [n for n in tables[0] if tables[0][n]["side"] in RANKED_SIDES and all("r_w" in t.get(n, {}) for t in tables)]
    if not names:
        raise HypothesisError("no write-side candidate is scored on every dW; score them with the same candidates")
    families = list(dict.fromkeys(r["family"] for r in results))
    ranking = []
    for name in names:
        entry = {"candidate": name, "side": tables[0][name]["side"], "mean_r_w": float(np.mean([t[name]["r_w"] for t in tables])), "families": {}}
        for family in families:
            mine = [(r, t) for r, t in zip(results, tables) if r["family"] == family]
            values = {field: [t[name].get(field, float("nan")) for _, t in mine] for field in ("r_w", "pct_ceiling", "r_act")}
            entry["families"][family] = {"seeds": [r["dw_seed"] for r, _ in mine], **values, "r_w_interval": seed_interval(values["r_w"])}
        ranking.append(entry)
    ranking.sort(key=lambda e: -e["mean_r_w"])
    def ceiling_r_w(table: dict) -> float:
        return next((e["r_w"] for e in table.values() if e["side"] == "ceiling" and "r_w" in e), float("nan"))

    ceiling = {f: [ceiling_r_w(t) for r, t in zip(results, tables) if r["family"] == f] for f in families}
    scores = np.array([[t[n]["r_w"] for n in names] for t in tables])  # [n_dws, n_candidates]
    within = [(i, j) for i in range(len(results)) for j in range(i + 1, len(results)) if results[i]["family"] == results[j]["family"]]
    across = [(i, j) for i in range(len(results)) for j in range(i + 1, len(results)) if results[i]["family"] != results[j]["family"]]
    agreement = {"within_family": mean_rank_agreement(scores, within, n_permutations, seed),
                 "across_families": mean_rank_agreement(scores, across, n_permutations, seed), "n_candidates": len(names)}
    return {"k": results[0]["k"], "dws": [f"{r['family']} seed {r['dw_seed']}" for r in results], "ranking": ranking,
            "ceiling_r_w": ceiling, "agreement": agreement}
