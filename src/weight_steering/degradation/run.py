"""Degradation of a steered model: the neutral reference answers' NLL and KL(steered ‖ base) per α (nats)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..artifacts import atomic_write, read_json, stable_hash, write_json
from ..core.diff import dw_identity, load_dw
from ..core.models import DEFAULT_MODEL, load_model
from ..core.steer import check_alpha_grid
from ..evaluation.calibrate import kl_from_base
from ..evaluation.datasets import load_neutral, neutral_split
from ..evaluation.effects import kl_summary
from ..evaluation.scoring import reference_nll
from ..evaluation.statistics import bootstrap_ci
from ..stage_cache import run_stage


def run_degradation(
    dw_path: str | Path, model: str = DEFAULT_MODEL, alphas: tuple[float, ...] = (-1.0, 0.0, 1.0), n_tokens: int = 32,
    out: str = "out", loaded=None, device: str | None = None, dtype: str | None = None, prompt_limit: int | None = None,
) -> dict:
    """Degradation of the model under α·dW: reference-answer NLL and KL from the base on neutral prompts.

    ``prompt_limit`` (smoke runs) keeps the first n reference answers and the first n calibration prompts.

    Per α: (a) mean NLL (nats per answer token) of the 100 shipped neutral reference answers, with a
    bootstrap 95% CI over pairs, and its change from α = 0; (b) KL(steered ‖ base) mean, p95 and max
    over (prompt, position) on the calibration split of the neutral prompts (``n_tokens`` greedy
    tokens each). Answer-format mass on the evals is in the main job's and the vignettes' tables.

    Returns:
        ``{"rows": [...], "path"}``; ``degradation.json`` / ``.md`` are written atomically under
        ``<out>/degradation/<dW dir>-<key>/`` (a resumable stage).

    Raises:
        ValueError: α grid without 0; DeltaWeightsError: the dW does not fit the model.
    """
    alphas = check_alpha_grid(alphas, "the reference of the NLL change")
    model_obj, tokenizer = loaded or load_model(model, device, dtype)
    dw = load_dw(dw_path, model_obj)
    dw_file = Path(dw_path) / "dW.safetensors" if Path(dw_path).is_dir() else Path(dw_path)
    pairs = load_neutral()
    calibration = neutral_split(pairs)[0][:prompt_limit]
    pairs = pairs[:prompt_limit]
    key = stable_hash({"dw": dw_identity(dw), "alphas": alphas, "pairs": pairs, "n_tokens": n_tokens, "per_position": True,
                       **({"kl_prompts": len(calibration)} if prompt_limit is not None else {})})
    directory = Path(out) / "degradation" / f"{dw_file.parent.name}-{key}"

    def compute(target: Path) -> None:
        rows = []
        for alpha in alphas:
            started = time.perf_counter()
            nll = np.array(reference_nll(model_obj, tokenizer, dw, alpha, pairs))
            kl = kl_from_base(model_obj, tokenizer, dw, alpha, [p["instruction"] for p in calibration], n_tokens)
            rows.append({"alpha": alpha, "nll": nll.tolist(), "kl": kl.per_position.tolist(), "kl_prompt": kl.prompt_index.tolist(),
                         "kl_max": kl.max, "kl_positions": kl.n_positions, "seconds": time.perf_counter() - started})
        write_json(target / "per_alpha.json", rows)

    run_stage("degradation", directory, key, compute)
    raw = read_json(directory / "per_alpha.json")
    reference = np.array(next(r["nll"] for r in raw if r["alpha"] == 0.0))
    table = []
    for r in raw:
        nll = np.array(r["nll"])
        mean, low, high = bootstrap_ci(nll, np.arange(len(nll)))
        change, change_low, change_high = bootstrap_ci(nll - reference, np.arange(len(nll)))
        kl = kl_summary(np.array(r["kl"]), np.array(r["kl_prompt"]))
        table.append({"alpha": r["alpha"], "nll": mean, "nll_ci_low": low, "nll_ci_high": high, "nll_change": change,
                      "nll_change_ci_low": change_low, "nll_change_ci_high": change_high,
                      **{f"kl_{name}": kl[name] for name in ("mean", "mean_ci_low", "mean_ci_high", "p95", "p95_ci_low", "p95_ci_high")},
                      **{k: r[k] for k in ("kl_max", "kl_positions", "seconds")}})
    result = {"dw": str(dw_file), "n_pairs": len(pairs), "n_kl_prompts": len(calibration), "n_tokens": n_tokens, "rows": table}
    write_json(directory / "degradation.json", result)
    lines = [f"# Degradation under α·dW (`{dw_file}`)", "",
             f"NLL: {len(pairs)} neutral reference answers, nats per answer token, 95% CI over pairs. "
             f"KL(steered ‖ base): {len(calibration)} neutral prompts × {n_tokens} greedy tokens, nats per position, 95% CI over prompts.", "",
             "| α | NLL | 95% CI | ΔNLL vs α=0 | 95% CI | KL mean [95% CI] | KL p95 [95% CI] | KL max | s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['alpha']:+g} | {r['nll']:.3f} | [{r['nll_ci_low']:.3f}, {r['nll_ci_high']:.3f}] | {r['nll_change']:+.3f} | "
                     f"[{r['nll_change_ci_low']:+.3f}, {r['nll_change_ci_high']:+.3f}] | {r['kl_mean']:.3f} [{r['kl_mean_ci_low']:.3f}, {r['kl_mean_ci_high']:.3f}] | "
                     f"{r['kl_p95']:.3f} [{r['kl_p95_ci_low']:.3f}, {r['kl_p95_ci_high']:.3f}] | "
                     f"{r['kl_max']:.2f} | {r['seconds']:.0f} |")
    with atomic_write(directory / "degradation.md") as handle:
        handle.write("\n".join(lines) + "\n")
    return {**result, "path": directory}
