"""The ablation of a saved dW: which layers, modules and singular directions carry its effect, against norm-matched random and within-dW nulls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..artifacts import atomic_write, stable_hash, write_json, write_jsonl
from ..core.activations import contrast_activations, contrast_pairs
from ..core.behavior_files import load_behavior
from ..core.diff import dw_identity, load_dw
from ..core.models import DEFAULT_MODEL, load_model
from ..core.steer import check_alpha
from ..evaluation.effects import metric_frame
from ..evaluation.rows import dilemma_rows, held_out_rows
from ..evaluation.scoring import evaluate, read_records
from ..hypotheses.candidates import build_context, candidate_bases
from ..main_job.stages import pairs_of, train_dirs_of
from ..stage_cache import run_stage
from .alignment import activation_subspace_alignment, base_subspace_alignment
from .native import native_dw_parts
from .render import plot_layer_retained, plot_retained, render_ablation
from .variants import iter_variants, parse_key, retained


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
    """Causal ablation of one dW (see :mod:`weight_steering.ablation.variants`): retained and energy per variant.

    Subspace alignment: per tensor, dW's concentration in the top singular subspaces of the pretrained W
    and in the top-``activation_k`` PCA subspace of the persona contrast activations, read from
    ``pair_rows`` (default: the generated pairs the dW was trained on, found next to it; without them
    the activation alignment is reported unavailable).

    Adapter-native variants (DoRA direction / magnitude) are built from the θ⁺ and θ⁻ adapters when
    the dW sits next to its training stages (:func:`weight_steering.main_job.stages.train_dirs_of`).

    Scores every available variant at ``alpha`` and the base at α = 0 on identical rows: the
    behaviour's held-out rows (if the dW's behaviour has them) and the DailyDilemmas rows. Each
    variant's records are a resumable stage, so an interrupted ablation resumes where it stopped.

    ``variants`` (optional) scores only the variants of ``groups`` so named, with their controls (the anchors always).

    Controls (:func:`weight_steering.ablation.variants.iter_variants`): ``n_controls`` norm-matched random draws per
    keep variant and ``n_within`` energy-matched subsets of dW's own singular directions per own-SVD keep
    variant; each variant's row carries the mean, standard deviation and count of each kind
    (``control_random_mean`` …, ``control_within_dw_mean`` …).

    Causal check of candidate subspaces (``candidates``, names of :data:`weight_steering.hypotheses.run.CANDIDATES`, rank
    ``k``): dW's write side projected onto each candidate's span and onto its complement
    (:func:`weight_steering.ablation.variants.subspace_parts`, the ``subspace`` group), the inside part with the same controls as
    every keep variant (variants ``in_<candidate>_k<k>`` and ``outside_<candidate>_k<k>``); compare with ``write_side`` (the
    whole write side) and with the controls.

    Returns:
        ``{"rows": [...], "alignment": [...], "path"}``: per (variant, metric) ``retained`` with its 95% CI, Δ(variant),
        Δ(full), ``energy_fraction``, ``control_of``; unavailable variants are listed with
        ``available=False``; ``alignment`` is :func:`weight_steering.ablation.alignment.base_subspace_alignment`
        per tensor. ``ablation.json`` / ``.md``, ``retained_vs_energy.png`` and (with the layer group) ``retained_by_layer.png`` are written atomically.

    Raises:
        DeltaWeightsError: the dW does not fit the model. AblationError: see :func:`weight_steering.ablation.variants.build_variants` (raised when the variant is reached; finished variants stay on disk).
    """

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
        return read_records(directory / "records.jsonl")

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
