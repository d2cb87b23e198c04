"""The vignettes' rendering: SI and foundation shifts per α."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import pandas as pd


def render_vignettes(result: dict) -> str:
    """Markdown of :func:`weight_steering.vignettes.run.run_vignettes`: bare table, Δlogit per α, SI (k stated)."""
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
