"""The main job: data → train θ⁺/θ⁻ → dW → evaluate over α → analyse → report, with resumable stages.

Every stage writes into its own directory ``out/<behavior>/<model>/<stage>-<key>/``, where ``key``
hashes the stage's config and inputs. Files are written atomically and a ``stage.json`` marker is
written last; a rerun reuses every stage whose marker carries the same key and resumes at the first
unfinished one (``force=True`` redoes all).
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from safetensors.torch import load_file, save_file

from .analyse import summarise
from .artifacts import atomic_save_path, commit_path, file_sha256, read_json, read_jsonl, stable_hash, write_json, write_jsonl
from .behaviors import load_behavior
from .data import GenerationConfig, check_pairs, generate_pairs
from .diff import compute_dw, load_dw, save_dw
from .evaluate import DEFAULT_ALPHAS, dilemma_rows, evaluate, sycophancy_rows
from .models import DEFAULT_MODEL, base_weights_hash, load_model
from .report import write_report
from .steer import check_alpha, generate_text, steer
from .train import TrainConfig, make_peft_config, train_adapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Everything the main job needs. Sizes default to a ≤ 20-minute run on a 2-core CPU.

    Attributes:
        behavior: shipped behaviour name or path of a behaviour JSON.
        model: embedded name, local path or Hugging Face id.
        generation: data sampling settings (its ``seed`` is the data seed).
        train: adapter settings (its ``seed`` is the training seed).
        alphas: steering strengths to evaluate (must include 0 for the contrasts).
        dilemma_limit: evaluate only the first n DailyDilemmas dilemmas (None: all 252).
        eval_batch_size: rows per scoring batch.
        max_length: longest eval row in tokens (longer rows are cut from the left, counted).
        out: output root.
        force: recompute every stage.
    """

    behavior: str = "sycophancy"
    model: str = DEFAULT_MODEL
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    dilemma_limit: int | None = None
    eval_batch_size: int = 32
    max_length: int = 1024
    out: str = "out"
    force: bool = False


PRESETS: dict[str, dict] = {
    # ≤ 20 minutes on 2 CPU cores (measured in docs/RESULTS.md).
    "default": {},
    # A few minutes on CPU: the CI tier of the real-model test.
    "smoke": {"generation": {"n_prompts": 6, "n_personas": 2, "n_samples": 2, "max_new_tokens": 32},
              "alphas": (-1.0, 0.0, 1.0), "dilemma_limit": 24},
    # Paper-sized data (Fierro & Roger 2025: ~1000 pairs); meant for a GPU.
    "paper": {"generation": {"n_samples": 10, "max_new_tokens": 256}, "train": {"max_length": 512}},
}


def preset_config(name: str = "default", **overrides) -> RunConfig:
    """A :class:`RunConfig` from a preset (``default``, ``smoke``, ``paper``) plus field overrides.

    ``overrides`` may set top-level fields or ``generation``/``train`` dicts of sub-fields.

    Raises:
        ValueError: unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    merged: dict = {}
    for source in (PRESETS[name], overrides):
        for key, value in source.items():
            if key in ("generation", "train"):
                merged.setdefault(key, {}).update(value)
            elif value is not None:
                merged[key] = value
    config = RunConfig(**{k: v for k, v in merged.items() if k not in ("generation", "train")})
    return replace(
        config,
        generation=replace(config.generation, **merged.get("generation", {})),
        train=replace(config.train, **merged.get("train", {})),
    )


def _stage(name: str, directory: Path, key: str, compute: Callable[[Path], None], force: bool, timings: dict) -> Path:
    """Run ``compute(directory)`` unless a completed stage with the same key is on disk."""
    marker = directory / "stage.json"
    started = time.perf_counter()
    if not force and marker.exists() and read_json(marker).get("key") == key:
        timings[name] = {"seconds": 0.0, "reused": True, "dir": str(directory)}
        log.info("stage %s: reusing %s", name, directory)
        return directory
    if marker.exists():
        marker.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    compute(directory)
    seconds = time.perf_counter() - started
    write_json(marker, {"stage": name, "key": key, "seconds": seconds})
    timings[name] = {"seconds": seconds, "reused": False, "dir": str(directory)}
    return directory


def run_main_job(config: RunConfig, model=None, tokenizer=None, command: str | None = None) -> dict:
    """Run (or resume) the main job and return ``{"summary", "report", "dw", "timings", ...}``.

    Args:
        config: see :class:`RunConfig`; :func:`preset_config` builds one.
        model, tokenizer: an already loaded model (e.g. the tiny test model); else ``config.model`` is loaded.
        command: the command line to record in the report.

    Raises:
        ModelNotAvailableError, BehaviorError, AdapterFamilyError, DataGateError, DeltaWeightsError,
        ValueError: with messages naming the problem and the fix; finished stages stay on disk.
    """
    timings: dict = {}
    started = time.perf_counter()
    alphas = tuple(check_alpha(a) for a in config.alphas)
    if 0.0 not in alphas:
        raise ValueError("the α grid must include 0 (the unsteered reference for every contrast)")
    behavior = load_behavior(config.behavior)
    if model is None:
        t0 = time.perf_counter()
        model, tokenizer = load_model(config.model)
        timings["load model"] = {"seconds": time.perf_counter() - t0, "reused": False, "dir": ""}
    make_peft_config(config.train, model.config.num_hidden_layers)  # fail fast on a bad family
    base_hash = base_weights_hash(model)
    model_slug = Path(config.model).name.lower().replace("/", "_") or "model"
    root = Path(config.out) / behavior.name / model_slug

    data_key = stable_hash({"model": config.model, "base": base_hash, "behavior": behavior.to_dict(), "generation": asdict(config.generation)})
    data_dir = root / f"data-{data_key}"

    def make_data(directory: Path) -> None:
        write_jsonl(directory / "pairs.jsonl", generate_pairs(model, tokenizer, behavior, config.generation))

    _stage("data", data_dir, data_key, make_data, config.force, timings)
    rows = read_jsonl(data_dir / "pairs.jsonl")
    pair_counts = check_pairs(rows, config.generation.max_identical_fraction)
    data_sha = file_sha256(data_dir / "pairs.jsonl")

    train_dirs = {}
    for sign in ("positive", "negative"):
        key = stable_hash({"data": data_sha, "train": asdict(config.train), "sign": sign, "base": base_hash})
        directory = root / f"train-{config.train.family}-{sign}-seed{config.train.seed}-{key}"

        def make_adapter(directory: Path, sign: str = sign) -> None:
            delta, train_log, peft_model = train_adapter(model, tokenizer, rows, sign, config.train)
            tmp = atomic_save_path(directory / "delta.safetensors")
            save_file(delta, str(tmp))
            commit_path(tmp, directory / "delta.safetensors")
            peft_model.save_pretrained(directory / "adapter")
            write_json(directory / "train_log.json", train_log)

        train_dirs[sign] = _stage(f"train θ{'⁺' if sign == 'positive' else '⁻'}", directory, key, make_adapter, config.force, timings)

    dw_key = stable_hash({d.name: file_sha256(d / "delta.safetensors") for d in train_dirs.values()})
    dw_dir = root / f"dw-{config.train.family}-seed{config.train.seed}-{dw_key}"

    def make_dw(directory: Path) -> None:
        metadata = {
            "model": config.model, "base_weights_hash": base_hash, "behavior": behavior.name,
            "family": config.train.family, "train_config": asdict(config.train), "generation_config": asdict(config.generation),
            "data_seed": config.generation.seed, "train_seed": config.train.seed, "data_sha256": data_sha,
            "train_logs": {s: read_json(d / "train_log.json")["validation_loss_after"] for s, d in train_dirs.items()},
        }
        dw = compute_dw(load_file(str(train_dirs["positive"] / "delta.safetensors")),
                        load_file(str(train_dirs["negative"] / "delta.safetensors")), metadata)
        save_dw(dw, directory / "dW.safetensors")

    _stage("diff dW", dw_dir, dw_key, make_dw, config.force, timings)
    dw = load_dw(dw_dir / "dW.safetensors", model)

    eval_rows = sycophancy_rows(tokenizer, behavior) + dilemma_rows(tokenizer, config.dilemma_limit)
    eval_key = stable_hash({"dw": dw_key, "alphas": alphas, "rows": [r["text"] for r in eval_rows], "max_length": config.max_length})
    eval_dir = root / f"eval-{eval_key}"

    def make_eval(directory: Path) -> None:
        records = evaluate(model, tokenizer, dw, eval_rows, alphas, config.eval_batch_size, config.max_length)
        write_jsonl(directory / "records.jsonl", records)
        write_json(directory / "summary.json", summarise(records))

    _stage("evaluate", eval_dir, eval_key, make_eval, config.force, timings)
    summary = read_json(eval_dir / "summary.json")

    t0 = time.perf_counter()
    prompt = behavior.held_out.prompts()[0] if behavior.held_out else behavior.train_prompts[0]
    generations = []
    for alpha in (-1.0, 0.0, 1.0):
        with steer(model, dw, alpha):
            generations.append({"alpha": alpha, "prompt": prompt, "text": generate_text(model, tokenizer, prompt, 60)})
    run_dir = root / f"{config.train.family}-seed{config.train.seed}"
    timings["generations + report"] = {"seconds": time.perf_counter() - t0, "reused": False, "dir": str(run_dir)}
    timings["total"] = {"seconds": time.perf_counter() - started, "reused": False, "dir": ""}
    run_info = {
        "behavior": behavior.name, "model": config.model, "family": config.train.family, "seed": config.train.seed,
        "norm_dw": dw.metadata["norm_dw"], "cos_delta": dw.metadata["cos_delta_positive_minus_delta_negative"],
        "n_tensors": dw.metadata["n_tensors"], "n_pairs": pair_counts["pairs"], "alphas": list(alphas),
        "command": command or " ".join(shlex.quote(a) for a in sys.argv), "timings": timings,
    }
    report = write_report(run_dir, run_info, summary, generations)
    write_json(run_dir / "run.json", {**run_info, "config": asdict(config), "pair_counts": pair_counts,
                                      "stages": {k: v["dir"] for k, v in timings.items() if v["dir"]}, "summary": summary})
    return {"summary": summary, "report": report, "dw_path": dw_dir / "dW.safetensors", "dw": dw,
            "timings": timings, "run_dir": run_dir, "generations": generations}
