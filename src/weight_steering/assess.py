"""Evaluations of a saved dW beyond the main job: moral-foundation vignettes, degradation, ablation.

Both take any ``dW.safetensors`` (from the main job, a sweep cell or elsewhere), cache their scored
records as a resumable stage (see :func:`weight_steering.stage_cache.run_stage`) and write JSON plus a
Markdown table atomically.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from .analyse import PMASS_FLOOR, SI_K, bootstrap_ci, kl_summary, si_vignettes, vignette_bare_table, vignette_cells, vignette_delta_table
from .artifacts import atomic_write, read_json, read_jsonl, stable_hash, write_json, write_jsonl
from .behaviors import BehaviorError, load_behavior
from .calibrate import kl_from_base
from .diff import dw_identity, load_dw
from .eval_data import load_neutral, neutral_split
from .evaluate import evaluate, reference_nll
from .eval_rows import VIGNETTE_SCORING_MODE, vignette_rows
from .models import DEFAULT_MODEL, base_weights_hash, load_model
from .pipeline import pairs_of, train_dirs_of
from .stage_cache import run_stage
from .report import render_ablation, render_vignettes
from .steer import check_alpha, check_alpha_grid

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
            (:func:`weight_steering.models.load_model`; None: CUDA + bf16 when present, else CPU + fp32).

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
    records = read_jsonl(directory / "records.jsonl")
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


def summarise_controls(table: list[dict]) -> None:
    """Attach to each variant's row (in place) the mean, standard deviation (ddof 1) and count of its
    controls' retained, per control kind: ``control_<kind>_mean`` / ``_sd`` / ``_n`` (kinds: random, within_dw)."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for r in table:
        if r.get("control_of") and r.get("defined") and r.get("control_kind"):
            groups.setdefault((r["control_of"], r["metric"], r["control_kind"]), []).append(r["retained"])
    for r in table:
        if r.get("control_of") or not r.get("available"):
            continue
        for kind in ("random", "within_dw"):
            values = groups.get((r["variant"], r.get("metric"), kind))
            if values:
                r[f"control_{kind}_mean"] = float(np.mean(values))
                r[f"control_{kind}_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")
                r[f"control_{kind}_n"] = len(values)


def run_ablation(
    dw_path: str | Path, model: str = DEFAULT_MODEL, alpha: float = 1.0, groups: tuple[str, ...] | None = None,
    dilemma_limit: int | None = None, seed: int = 0, out: str = "out", loaded=None, pair_rows: list[dict] | None = None,
    activation_k: int = 4, n_controls: int = 5, n_within: int = 5, candidates: tuple[str, ...] = (), k: int = 8,
    variants: tuple[str, ...] | None = None, device: str | None = None, dtype: str | None = None,
) -> dict:
    """Causal ablation of one dW (see :mod:`weight_steering.ablate`): retained and energy per variant.

    Subspace alignment: per tensor, dW's concentration in the top singular subspaces of the pretrained W
    and in the top-``activation_k`` PCA subspace of the persona contrast activations, read from
    ``pair_rows`` (default: the generated pairs the dW was trained on, found next to it; without them
    the activation alignment is reported unavailable).

    Adapter-native variants (DoRA direction / magnitude) are built from the θ⁺ and θ⁻ adapters when
    the dW sits next to its training stages (:func:`weight_steering.pipeline.train_dirs_of`).

    Scores every available variant at ``alpha`` and the base at α = 0 on identical rows: the
    behaviour's held-out rows (if the dW's behaviour has them) and the DailyDilemmas rows. Each
    variant's records are a resumable stage, so an interrupted ablation resumes where it stopped.

    ``variants`` (optional) scores only the variants of ``groups`` so named, with their controls (the anchors always).

    Controls (:func:`weight_steering.ablate.iter_variants`): ``n_controls`` norm-matched random draws per
    keep variant and ``n_within`` energy-matched subsets of dW's own singular directions per own-SVD keep
    variant; each variant's row carries the mean, standard deviation and count of each kind
    (``control_random_mean`` …, ``control_within_dw_mean`` …).

    Causal check of candidate subspaces (``candidates``, names of :data:`weight_steering.hypotheses.CANDIDATES`, rank
    ``k``): dW's write side projected onto each candidate's span and onto its complement
    (:func:`weight_steering.ablate.subspace_parts`, the ``subspace`` group), the inside part with the same controls as
    every keep variant (variants ``in_<candidate>_k<k>`` and ``outside_<candidate>_k<k>``); compare with ``write_side`` (the
    whole write side) and with the controls.

    Returns:
        ``{"rows": [...], "alignment": [...], "path"}``: per (variant, metric) ``retained`` with its 95% CI, Δ(variant),
        Δ(full), ``energy_fraction``, ``control_of``; unavailable variants are listed with
        ``available=False``; ``alignment`` is :func:`weight_steering.ablate.base_subspace_alignment`
        per tensor. ``ablation.json`` / ``.md``, ``retained_vs_energy.png`` and (with the layer group) ``retained_by_layer.png`` are written atomically.

    Raises:
        DeltaWeightsError: the dW does not fit the model. AblationError: see :func:`weight_steering.ablate.build_variants` (raised when the variant is reached; finished variants stay on disk).
    """
    from .ablate import activation_subspace_alignment, base_subspace_alignment, iter_variants, native_dw_parts, retained
    from .analyse import metric_frame
    from .behaviors import load_behavior
    from .eval_rows import dilemma_rows, held_out_rows
    from .report import plot_layer_retained, plot_retained

    alpha = check_alpha(alpha)
    model_obj, tokenizer = loaded or load_model(model, device, dtype)
    dw = load_dw(dw_path, model_obj)
    dw_file = Path(dw_path) / "dW.safetensors" if Path(dw_path).is_dir() else Path(dw_path)
    params = dict(model_obj.named_parameters())
    base = {k: params[k].detach().to("cpu", torch.float32) for k in dw.tensors}
    native = None
    if groups is None or "native" in groups:
        train_dirs = train_dirs_of(dw_file.parent)
        family = dw.metadata.get("family")
        if train_dirs is not None:
            native = native_dw_parts(train_dirs["positive"], train_dirs["negative"], family, base)
    pair_rows = pair_rows if pair_rows is not None else pairs_of(dw_file.parent)
    streams = _contrast_streams(model_obj, tokenizer, pair_rows, dw.tensors) if pair_rows else None  # (write, read), read once
    subspaces = None
    if candidates:
        from .hypotheses import build_context, candidate_bases

        context = build_context(model_obj, tokenizer, dw.tensors, contrast=streams[0] if streams else {})
        subspaces = {f"{name}_k{k}": bases for name, bases in candidate_bases(context, list(candidates), k).items()}  # k in the stage names
    variants = iter_variants(dw.tensors, base, seed, groups, native, n_controls, n_within, subspaces, variants)  # built one at a time: all at once is ~90 copies of dW
    behavior = dw.metadata.get("behavior")
    rows = (held_out_rows(tokenizer, load_behavior(behavior)) if behavior else []) + dilemma_rows(tokenizer, dilemma_limit)
    rows_key = stable_hash({"rows": [r["text"] for r in rows], "dw": dw_identity(dw)})
    root = Path(out) / "ablation" / f"{dw_file.parent.name}-{rows_key}"

    def scored(name: str, tensors, at: float) -> list[dict]:
        key = stable_hash({"variant": name, "alpha": at, "rows": rows_key, "seed": seed})
        directory = root / f"{name}-{key}"
        run_stage(f"ablation {name}", directory, key,
                  lambda d: write_jsonl(d / "records.jsonl", evaluate(model_obj, tokenizer, tensors, rows, (at,))))
        return read_jsonl(directory / "records.jsonl")

    frame_base = metric_frame(scored("base", None, 0.0))
    frame_full = metric_frame(scored("full", dw.tensors, alpha))
    table = []
    for name, entry in variants:
        if entry["tensors"] is None:
            table.append({"variant": name, "group": entry["group"], "available": False})
            continue
        frame = frame_full if name == "full" else metric_frame(scored(name, entry["tensors"], alpha))
        for metric in sorted(set(frame["metric"])):
            parts = [f[f["metric"] == metric].set_index("row_id").sort_index() for f in (frame, frame_full, frame_base)]
            result = retained(parts[0]["score"].to_numpy(), parts[1]["score"].to_numpy(), parts[2]["score"].to_numpy(),
                              parts[0]["cluster"].to_numpy(), strata=parts[0]["stratum"].to_numpy())
            table.append({"variant": name, "group": entry["group"], "available": True, "metric": metric,
                          "energy_fraction": entry["energy_fraction"], "control_of": entry["control_of"],
                          "control_kind": entry.get("control_kind"), **result})
    summarise_controls(table)
    alignment = base_subspace_alignment(dw.tensors, base, seed=seed)
    if streams:
        write, read = streams
        activation_alignment = activation_subspace_alignment(dw.tensors, write, read, k=activation_k, seed=seed)
        n_pairs = len(next(iter(write.values())))
        activation_note = f"{n_pairs} persona contrast pairs from the dW's training data"
    else:
        activation_alignment, activation_note = [], "unavailable: the dW's generated pairs are not next to it (pass pair_rows)"
    result = {"dw": str(dw_file), "alpha": alpha, "seed": seed, "candidates": {"names": list(candidates), "k": k} if candidates else None,
              "rows": table, "alignment": alignment,
              "activation_alignment": activation_alignment, "activation_alignment_note": activation_note}
    write_json(root / "ablation.json", result)
    with atomic_write(root / "ablation.md") as handle:
        handle.write(render_ablation(result))
    plot_retained(table, root / "retained_vs_energy.png")
    plot_layer_retained(table, root / "retained_by_layer.png")
    return {**result, "path": root}


@torch.no_grad()
def _contrast_streams(model, tokenizer, pair_rows: list[dict], tensors: dict) -> tuple[dict, dict]:
    """Persona contrast differences (positive − negative, ``[n_pairs, hidden]`` per layer) of the streams
    dW's tensors touch: each layer's block output (what o_proj / down_proj write into) and its normalised
    block input (what q / k / v read: ``input_layernorm`` of the previous block's output). A decoder
    layer without an ``input_layernorm`` gets no read-side entry (its q/k/v rows are then unavailable)."""
    from .ablate import parse_key
    from .methods import contrast_activations, contrast_pairs

    layers = sorted({parsed[0] for key in tensors if (parsed := parse_key(key))})
    read_layers = [layer for layer in layers if layer > 0]
    activations = contrast_activations(model, tokenizer, contrast_pairs(tokenizer, pair_rows), sorted(set(layers) | {l - 1 for l in read_layers}))
    write = {layer: activations.positive[layer] - activations.negative[layer] for layer in layers}
    decoder = model.get_decoder().layers
    read = {}
    for layer in read_layers:
        norm = getattr(decoder[layer], "input_layernorm", None)
        if norm is None:
            continue
        dtype = next(norm.parameters()).dtype
        read[layer] = (norm(activations.positive[layer - 1].to(dtype)) - norm(activations.negative[layer - 1].to(dtype))).float()
    return write, read
