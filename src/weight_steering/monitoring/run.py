"""Monitor a fine-tune with dW: does its weight change point along a behaviour's steering direction?

Fierro & Roger 2025 §5: a fine-tune that picks up a behaviour moves its weights along that behaviour's
dW. For a fine-tune's weight change Δ (``finetune_delta``: a PEFT adapter merged into a copy of the base,
or a full safetensors checkpoint minus the base) the monitor reports

    cos(Δ, dW) = ⟨Δ, dW⟩ / (‖Δ‖_F ‖dW‖_F)      over the tensors both touch,

overall and per layer and module, against two nulls:

* **norm-matched random directions**: Δ replaced, tensor by tensor, by a uniformly random direction of the
  same norm. The coordinate of a random unit vector of dimension D along a fixed one is exactly
  z₁ / √(z₁² + χ²_{D−1}), so each draw of the overall cosine is sampled exactly without drawing any tensor;
  z = (cos − null mean) / null sd. This null is easy to beat (its sd is about 1/√D), so it only shows the
  cosine is not chance;
* **the dW of unrelated behaviours**: cos(Δ, dW_other). A fine-tune that moves along every behaviour's dW
  alike (a generic "any fine-tune" direction) is caught here, not by the random null.

The verdict: aligned when the cosine is above the random null's 99.9th percentile *and* above every
unrelated dW's cosine by ``margin``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..artifacts import check_output_folder, read_json, stable_hash, write_json
from ..core.adapters import TrainConfig, train_key
from ..core.diff import DeltaWeights, check_fits, dw_identity, load_dw
from ..core.models import DEFAULT_MODEL, check_machine, load_model
from ..core.train import adapter_delta, attached_adapter, train_adapter
from ..evaluation.datasets import load_neutral
from ..evaluation.statistics import seed_summary
from ..main_job.stages import pairs_of
from ..stage_cache import copy_finished_stages, run_stage
from .render import plot_monitoring, render_monitoring


class MonitorError(ValueError):
    """A fine-tune that cannot be compared with dW (unreadable, another model, no tensor in common)."""


@torch.no_grad()
def finetune_delta(model, path: str | Path) -> dict[str, torch.Tensor]:
    """Δ = W_finetuned − W_base in fp32 for every parameter the fine-tune changed.

    Args:
        model: the base model (left unchanged: an adapter is attached in place and removed after).
        path: a PEFT adapter folder (``adapter_config.json``; each adapted module merged in an fp32 copy of that module), a
            ``.safetensors`` checkpoint, or a folder of them, with the base model's parameter names and shapes.

    Raises:
        MonitorError: the path is missing or of no known kind, or a checkpoint shares no parameter with the model
            (names the first keys) or has a shape mismatch.
    """
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel


        with attached_adapter(model, lambda m: PeftModel.from_pretrained(m, str(path))) as adapted:  # in place: no copy of the model
            return adapter_delta(adapted)
    base = {k: p.detach().to("cpu", torch.float32) for k, p in model.named_parameters()}
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files or any(f.suffix != ".safetensors" for f in files):
        raise MonitorError(f"{path}: give a PEFT adapter folder (with adapter_config.json) or a safetensors checkpoint "
                           "of the same base model (only safetensors is read)")
    from safetensors.torch import load_file

    tuned = {}
    for file in files:
        try:
            tuned.update({k: v.float() for k, v in load_file(str(file)).items()})
        except Exception as err:  # safetensors' own error type for a damaged file
            raise MonitorError(f"{file} is not a readable safetensors file ({err})") from err
    common = [k for k in tuned if k in base]
    if not common:
        raise MonitorError(f"the fine-tune at {path} shares no parameter name with the model (its keys start {sorted(tuned)[:3]}); "
                           "is it a checkpoint of this base model?")
    shapes = [k for k in common if tuned[k].shape != base[k].shape]
    if shapes:
        raise MonitorError(f"the fine-tune's shapes differ from the model's for {shapes[:5]}; it was made from another base model")
    delta = {k: (tuned[k] - base[k]).contiguous() for k in common}
    return {k: v for k, v in delta.items() if torch.any(v != 0)}


def _group(key: str) -> tuple[str, str]:
    """(layer, module) of a parameter name: ``model.layers.12.mlp.down_proj.weight`` -> ("12", "down_proj")."""
    match = re.search(r"layers\.(\d+)\.", key)
    parts = key.split(".")
    return (match.group(1) if match else "other", parts[-2] if len(parts) > 1 else key)


def _cos(a: dict, b: dict, keys: list[str]) -> float:
    dot = sum(float((a[k].double() * b[k].double()).sum()) for k in keys)
    na = np.sqrt(sum(float((a[k].double() ** 2).sum()) for k in keys))
    nb = np.sqrt(sum(float((b[k].double() ** 2).sum()) for k in keys))
    return dot / (na * nb) if na > 0 and nb > 0 else float("nan")


def random_direction_null(delta: dict, dw: dict, keys: list[str], n_draws: int = 10_000, seed: int = 0) -> np.ndarray:
    """``[n_draws]`` exact draws of cos(R, dW), R a per-tensor uniformly random direction with ‖R_k‖ = ‖Δ_k‖.

    ⟨R_k, dW_k⟩ = ‖Δ_k‖ ‖dW_k‖ u_k with u_k = z₁ / √(z₁² + χ²_{D_k−1}) the coordinate of a random unit vector.
    """
    rng = np.random.default_rng(seed)
    norms_delta = np.array([float(delta[k].double().norm()) for k in keys])
    norms_dw = np.array([float(dw[k].double().norm()) for k in keys])
    dims = np.array([delta[k].numel() for k in keys])
    z = rng.standard_normal((n_draws, len(keys)))
    u = z / np.sqrt(z**2 + rng.chisquare(dims - 1, size=(n_draws, len(keys))))  # [n_draws, n_tensors]
    return (u * norms_delta * norms_dw).sum(1) / (np.linalg.norm(norms_delta) * np.linalg.norm(norms_dw))


def monitor(delta: dict[str, torch.Tensor], dw: DeltaWeights, unrelated: dict[str, DeltaWeights] | None = None,
            n_draws: int = 10_000, margin: float = 0.0, seed: int = 0) -> dict:
    """cos(Δ, dW) overall, per layer and per module, against the two nulls of the module docstring.

    Args:
        delta: the fine-tune's weight change (:func:`finetune_delta`), ``{parameter: tensor}``.
        dw: the behaviour's dW.
        unrelated: ``{label: dW}`` of other behaviours (the second null); may be empty.
        n_draws: draws of the random-direction null. margin: how far above every unrelated cosine counts as aligned.

    Returns:
        ``{"cos", "n_tensors", "random_null": {"mean", "sd", "p999"}, "z", "unrelated": {label: cos}, "aligned",
        "verdict", "per_layer": {layer: cos}, "per_module": {module: cos}}``.

    Raises:
        MonitorError: Δ and dW share no tensor.
    """
    keys = sorted(set(delta) & set(dw.tensors))
    if not keys:
        raise MonitorError(f"the fine-tune changed none of dW's {len(dw.tensors)} tensors (it changed {sorted(delta)[:3]} …); "
                           "was it trained on other modules or layers?")
    cos = _cos(delta, dw.tensors, keys)
    null = random_direction_null(delta, dw.tensors, keys, n_draws, seed)
    others = {}
    for label, other in (unrelated or {}).items():
        shared = [k for k in keys if k in other.tensors]
        others[label] = _cos(delta, other.tensors, shared) if shared else float("nan")
    p999 = float(np.quantile(null, 0.999))
    beats_unrelated = all(not np.isfinite(c) or cos > c + margin for c in others.values())
    aligned = bool(cos > p999 and beats_unrelated)
    z = float((cos - null.mean()) / null.std())
    if aligned:
        verdict = f"aligned: cos {cos:+.4f} > random-direction p99.9 {p999:+.4f}" + (
            f" and > every unrelated dW's cosine (max {max(others.values()):+.4f}) + {margin:g}" if others else " (no unrelated dW given)")
    elif cos <= p999:
        verdict = f"not aligned: cos {cos:+.4f} ≤ random-direction p99.9 {p999:+.4f}"
    else:
        verdict = f"not specific: cos {cos:+.4f} beats random directions but not the unrelated dW ({max(others.values()):+.4f} + {margin:g})"
    groups: dict[str, dict[str, list[str]]] = {"per_layer": {}, "per_module": {}}
    for key in keys:
        layer, module = _group(key)
        groups["per_layer"].setdefault(layer, []).append(key)
        groups["per_module"].setdefault(module, []).append(key)
    return {"cos": cos, "n_tensors": len(keys), "n_tensors_only_in_finetune": len(set(delta) - set(keys)),
            "random_null": {"mean": float(null.mean()), "sd": float(null.std()), "p999": p999}, "z": z,
            "unrelated": others, "aligned": aligned, "verdict": verdict,
            **{name: {g: _cos(delta, dw.tensors, ks) for g, ks in sorted(table.items(), key=lambda kv: (len(kv[0]), kv[0]))}
               for name, table in groups.items()}}


def mixture_rows(pairs: list[dict], neutral: list[dict], fraction: float, n_rows: int, seed: int) -> list[dict]:
    """A fine-tuning set of ``n_rows`` rows, a ``fraction`` of them behaviour-inducing (the positive-persona responses of
    ``pairs``) and the rest neutral (the shipped neutral prompts' reference answers), drawn without replacement with ``seed``.

    Rows have ``prompt`` and ``response_positive`` (the shape :func:`weight_steering.core.train.train_adapter` reads).

    Raises:
        MonitorError: a fraction outside [0, 1], or more rows asked of either source than it holds.
    """
    if not (0 <= fraction <= 1):
        raise MonitorError(f"the behaviour fraction must lie in [0, 1]; got {fraction}")
    n_behavior = int(round(fraction * n_rows))
    if n_behavior > len(pairs) or n_rows - n_behavior > len(neutral):
        raise MonitorError(f"{n_rows} rows at fraction {fraction} need {n_behavior} behaviour rows (have {len(pairs)}) and "
                           f"{n_rows - n_behavior} neutral rows (have {len(neutral)}); lower n_rows")
    rng = np.random.default_rng(seed)
    chosen = [{"prompt": pairs[i]["prompt"], "response_positive": pairs[i]["response_positive"]}
              for i in rng.choice(len(pairs), n_behavior, replace=False)]
    chosen += [{"prompt": neutral[i]["instruction"], "response_positive": neutral[i]["answer"]}
               for i in rng.choice(len(neutral), n_rows - n_behavior, replace=False)]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def monitoring_experiment(model, tokenizer, pairs: list[dict], neutral: list[dict], dw: DeltaWeights,
                          unrelated: dict[str, DeltaWeights] | None = None, fractions=(0.0, 0.1, 0.25, 0.5, 1.0),
                          seeds=(0, 1, 2), n_rows: int = 100, train=None, root: str | Path | None = None,
                          after_cell=None) -> dict:
    """The paper's monitoring experiment (Fierro & Roger 2025 §5): LoRA fine-tunes on mixtures of behaviour-inducing and
    neutral data, each compared with dW by :func:`monitor`.

    Seed s draws the mixture and seeds the training. With ``root`` every (fraction, seed) cell is a stage
    (:func:`weight_steering.stage_cache.run_stage`, ``root/cell-f<fraction>-s<seed>-<key>/cell.json``; the key hashes
    the rows, the training config, dW and the unrelated dW), so a stopped run resumes without retraining a finished cell;
    ``after_cell()`` runs after each cell (the CLI copies finished cells to its archive there).

    Returns:
        ``{"cells": [...], "by_fraction": [...]}``: per (fraction, seed) the cosine, z against random directions, the
        random null's 99.9th percentile and the unrelated dW's cosines; per fraction the mean cosine with a Student-t 95%
        interval over seeds (:func:`weight_steering.evaluation.statistics.seed_summary`), the largest unrelated cosine, and whether
        every seed's verdict was "aligned".

    Raises:
        MonitorError: a bad fraction, or more rows than the sources hold (:func:`mixture_rows`).
    """
    from dataclasses import replace


    train = train or TrainConfig()
    unrelated = unrelated or {}
    fingerprint = {"dw": dw_identity(dw), "unrelated": sorted(dw_identity(v) for v in unrelated.values()),  # not their labels (paths)
                   "train": train_key(train), "n_rows": n_rows}
    cells = []
    for fraction in fractions:
        for seed in seeds:
            rows = mixture_rows(pairs, neutral, fraction, n_rows, seed)

            def compute(directory: Path, rows=rows, fraction=fraction, seed=seed) -> None:
                delta, log = train_adapter(model, tokenizer, rows, "positive", replace(train, seed=seed))
                result = monitor(delta, dw, unrelated, seed=seed)
                write_json(directory / "cell.json", {
                    "fraction": fraction, "seed": seed, "cos": result["cos"], "z": result["z"], "aligned": result["aligned"],
                    "unrelated": result["unrelated"], "random_p999": result["random_null"]["p999"],
                    "per_module": result["per_module"], "train_seconds": log.get("wall_seconds", float("nan"))})

            if root is None:
                with tempfile.TemporaryDirectory() as scratch:
                    compute(Path(scratch))
                    cells.append(read_json(Path(scratch) / "cell.json"))
                continue
            key = stable_hash({**fingerprint, "fraction": fraction, "seed": seed, "rows": rows})
            directory = run_stage(f"monitor f={fraction:g} s={seed}", Path(root) / f"cell-f{fraction:g}-s{seed}-{key}", key, compute)
            cells.append(read_json(directory / "cell.json"))
            if after_cell is not None:
                after_cell()
    by_fraction = []
    for fraction in fractions:
        group = [c for c in cells if c["fraction"] == fraction]
        unrelated_max = max((v for c in group for v in c["unrelated"].values()), default=float("nan"))
        by_fraction.append({"fraction": fraction, **seed_summary([c["cos"] for c in group]),
                            "unrelated_max": unrelated_max, "random_p999": max(c["random_p999"] for c in group),
                            "all_aligned": all(c["aligned"] for c in group)})
    return {"cells": cells, "by_fraction": by_fraction}


def run_monitoring_experiment(dw_path: str | Path, unrelated_paths: list[str] | None = None, fractions=(0.0, 0.1, 0.25, 0.5, 1.0),
                              seeds=(1000, 1001, 1002), n_rows: int = 100, model: str | None = None, out: str = "out",
                              archive: str | Path | None = None, loaded=None, device: str | None = None, dtype: str | None = None) -> dict:
    """:func:`monitoring_experiment` for the dW at ``dw_path`` (its training pairs found next to it), written to
    ``<out>/monitor/<dW folder>/monitoring.{json,md,png}``.

    Args:
        unrelated_paths: dWs of unrelated behaviours (the second null), labelled by their paths.
        archive: a folder keeping every finished cell (restored first, each new cell copied in as it ends).
        loaded: ``(model, tokenizer)`` already in memory; else ``model`` is loaded.

    Returns:
        The experiment's result with ``"path"`` (the output folder).

    Raises:
        MonitorError: a share outside [0, 1], a negative seed, ``n_rows`` < 2, ``archive`` that is a file, a fine-tune seed
            equal to a dW's training seed (it would share θ⁺'s LoRA initialisation and inflate the cosine), or no training
            pairs next to the dW. All are checked before any model is loaded.
        DeltaWeightsError, FileNotFoundError: a damaged or missing dW, or one that does not fit the model.
    """

    fractions, seeds = list(fractions), list(seeds)
    if not fractions or not seeds or any(not (0 <= f <= 1) for f in fractions) or min(seeds) < 0:
        raise MonitorError(f"--fractions must be numbers in [0, 1] and --seeds integers ≥ 0; got {fractions}, {seeds}")
    if n_rows < 2:
        raise MonitorError(f"--n-rows must be ≥ 2; got {n_rows}")
    check_output_folder(out)
    if archive is not None and Path(archive).is_file():
        raise MonitorError(f"--archive {archive} is a file; give a folder")
    dw = load_dw(dw_path)
    nulls = {str(path): load_dw(path) for path in unrelated_paths or []}
    for label, delta_weights in (("--dw", dw), *(("--unrelated " + k, v) for k, v in nulls.items())):
        trained = delta_weights.metadata.get("train_seed", delta_weights.metadata.get("train_config", {}).get("seed"))
        if trained in seeds:
            raise MonitorError(f"fine-tune seed {trained} is the training seed of {label}: a fine-tune seeded like θ⁺ starts "
                               "from its LoRA initialisation and inflates the cosine; choose --seeds that no dW was trained with")
    dw_dir = Path(dw_path) if Path(dw_path).is_dir() else Path(dw_path).parent
    pairs = pairs_of(dw_dir)
    if pairs is None:
        raise MonitorError(f"the training pairs of {dw_dir} are not next to it (a data-*/ or judge-*/ stage with its SHA-256); "
                           "rerun `wsteer run` for this dW")
    model_obj, tokenizer = loaded or load_model(model or DEFAULT_MODEL, device, dtype)
    for delta_weights in (dw, *nulls.values()):
        check_fits(delta_weights, model_obj)
    root = Path(out) / "monitor" / dw_dir.name
    if archive:
        copy_finished_stages(Path(archive), root, ("cell-",))
    keep = (lambda: copy_finished_stages(root, Path(archive), ("cell-",))) if archive else None  # archived as each cell ends
    result = monitoring_experiment(model_obj, tokenizer, pairs, load_neutral(), dw, nulls, fractions, seeds, n_rows, root=root,
                                   after_cell=keep)
    write_json(root / "monitoring.json", result)
    plot_monitoring(result, root / "monitoring.png")
    (root / "monitoring.md").write_text(render_monitoring(result), encoding="utf-8")
    return {**result, "path": root}


def run_monitor(dw_path: str | Path, finetune: str | Path, unrelated_paths: list[str] | None = None, model: str = DEFAULT_MODEL,
                margin: float = 0.0, device: str | None = None, dtype: str | None = None) -> dict:
    """``wsteer monitor``: read and check every dW and the fine-tune's path before loading the model, then
    :func:`monitor` the fine-tune's delta against the behaviour's dW, random directions and the unrelated dWs.

    Raises:
        MonitorError: a margin that is not finite. FileNotFoundError: no fine-tune at ``finetune``. DeviceError,
        DeltaWeightsError (a damaged dW, or one made for another model), ModelNotAvailableError.
    """
    if not np.isfinite(margin):
        raise MonitorError(f"--margin must be a finite number of cosine units; got {margin}")
    check_machine(device, dtype)
    behaviour_dw = load_dw(dw_path)
    nulls = {str(path): load_dw(path) for path in unrelated_paths or []}
    if not Path(finetune).exists():
        raise FileNotFoundError(f"--finetune {finetune} does not exist; give a PEFT adapter folder or a safetensors checkpoint")
    loaded, _ = load_model(model, device, dtype)
    for delta_weights in (behaviour_dw, *nulls.values()):
        check_fits(delta_weights, loaded)
    return monitor(finetune_delta(loaded, finetune), behaviour_dw, nulls, margin=margin)
