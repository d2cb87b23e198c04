"""Evaluations of a saved dW beyond the main job: moral-foundation vignettes, degradation, ablation.

Both take any ``dW.safetensors`` (from the main job, a sweep cell or elsewhere), cache their scored
records as a resumable stage (see :func:`weight_steering.stage_cache.run_stage`) and write JSON plus a
Markdown table atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..artifacts import atomic_write, stable_hash, write_json, write_jsonl
from ..core.behavior_files import load_behavior
from ..core.behaviors import BehaviorError
from ..core.diff import dw_identity, load_dw
from ..core.models import DEFAULT_MODEL, base_weights_hash, load_model
from ..core.steer import check_alpha_grid
from ..evaluation.rows import VIGNETTE_SCORING_MODE, vignette_rows
from ..evaluation.scoring import evaluate, read_records
from ..evaluation.si import SI_K
from ..stage_cache import run_stage
from .render import render_vignettes
from .tables import PMASS_FLOOR, si_vignettes, vignette_bare_table, vignette_cells, vignette_delta_table

log = logging.getLogger(__name__)


def vignette_intents(behavior_name: str | None) -> dict[str, int]:
    """``{foundation: sign}`` from the behaviour's ``vignettes`` OOD targets ({} when the behaviour is unknown or names none)."""
    if not behavior_name:
        return {}
    try:
        behavior = load_behavior(behavior_name)
    except BehaviorError:
        log.warning("the dW's behaviour %r is not a shipped behaviour; no SI intent (pass --intent)", behavior_name)
        return {}
    return {t.value: t.sign for t in behavior.ood_targets if t.eval == "vignettes"}


def run_vignettes(
    dw_path: str | Path, model: str = DEFAULT_MODEL, alphas: tuple[float, ...] = (-1.0, 0.0, 1.0),
    intents: dict[str, int] | None = None, k: float = SI_K, pmass_floor: float = PMASS_FLOOR, out: str = "out",
    limit: int | None = None, loaded=None, device: str | None = None, dtype: str | None = None,
) -> dict:
    """Moral-foundation vignette tables for one dW: bare table (α = 0), Δlogit per foundation and SI.

    Args:
        dw_path: a ``dW.safetensors`` or its directory.
        alphas: α grid; must include 0 and at least one α of each sign for the two SI arms (the arms
            are the largest |α| of each sign, paired by sign).
        intents: foundation -> +1 / −1, the intended direction of wrongness under the positive arm.
            Default: the ``vignettes`` OOD target of the behaviour the dW was trained on (its
            ``ood_targets`` in the behaviour file, e.g. authority: ``{"Authority": -1}``); none (no SI
            rows) when that behaviour names no vignette target.
        k, pmass_floor: SI penalty weight and format-mass floor (printed in the output).
        loaded: ``(model, tokenizer)`` already in memory (tests); else ``model`` is loaded on ``device`` in ``dtype``
            (:func:`weight_steering.core.models.load_model`; None: CUDA + bf16 when present, else CPU + fp32).

    Returns:
        ``{"bare", "deltas", "si", "seconds_per_pass", "path"}``; ``vignettes.json`` and ``vignettes.md``
        are written atomically under ``<out>/vignettes/<dW dir name>/``, the records are a resumable stage.

    Raises:
        ValueError: α grid without 0; DeltaWeightsError: the dW does not fit the model.
    """
    alphas = check_alpha_grid(alphas, "the bare table and the reference of every Δ")
    model_obj, tokenizer = loaded or load_model(model, device, dtype)
    base_hash = base_weights_hash(model_obj)
    dw = load_dw(dw_path, model_obj, base_hash=base_hash)
    if intents is None:
        intents = vignette_intents(dw.metadata.get("behavior"))
    dw_file = Path(dw_path) / "dW.safetensors" if Path(dw_path).is_dir() else Path(dw_path)
    rows = vignette_rows(tokenizer, limit)
    key = stable_hash({"dw": dw_identity(dw), "alphas": alphas, "rows": [r["text"] for r in rows]})
    directory = Path(out) / "vignettes" / f"{dw_file.parent.name}-{key}"
    timings: dict = {}

    def compute(target: Path) -> None:
        write_jsonl(target / "records.jsonl", evaluate(model_obj, tokenizer, dw, rows, alphas))

    run_stage("vignettes", directory, key, compute, timings=timings)
    records = read_records(directory / "records.jsonl")
    cells = vignette_cells(records, pmass_floor)
    plus = [a for a in alphas if a > 0]
    minus = [a for a in alphas if a < 0]
    result = {
        "dw": str(dw_file), "alphas": list(alphas), "k": k, "pmass_floor": pmass_floor, "scoring_mode": VIGNETTE_SCORING_MODE,
        "seconds_per_pass": timings["vignettes"]["seconds"] / len(alphas) if not timings["vignettes"]["reused"] else None,
        "n_prompts": len(rows),
        "bare": vignette_bare_table(cells).to_dict(orient="records"),
        "deltas": {str(a): vignette_delta_table(cells, a).to_dict(orient="records") for a in alphas if a != 0.0},
        "si": [si_vignettes(cells, f, sign, max(plus) if plus else None, min(minus) if minus else None, k)
               for f, sign in intents.items() if plus],
    }
    write_json(directory / "vignettes.json", result)
    with atomic_write(directory / "vignettes.md") as handle:
        handle.write(render_vignettes(result))
    return {**result, "path": directory}


