"""The main job's stages, each resumable under ``out/<behavior>/<model>/<stage>-<key>/``: the persona data (and its judge), θ⁺ and θ⁻, dW (also alone: :func:`train_dw`), and the scored evaluation rows of the base model and of each α·dW."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from safetensors.torch import load_file

from ..artifacts import file_sha256, read_json, read_jsonl, stable_hash, write_json, write_jsonl
from ..core.adapters import TrainConfig, check_targets, layer_slice, make_peft_config, resolve_train_config, train_key
from ..core.behavior_files import load_behavior
from ..core.chat import check_chat_template, set_thinking, thinking_enabled
from ..core.data import DataGateError, check_pairs, generate_pairs, generation_key
from ..core.diff import DeltaWeights, compute_dw, load_dw, save_dw
from ..core.models import base_weights_hash, load_model
from ..core.train import train_adapter
from ..evaluation.judge import (
    behavior_rates,
    check_judgeable,
    hand_label_rates,
    has_hand_labels,
    judge_agreement,
    judge_pairs,
    load_hand_labels,
    pair_scorer,
)
from ..evaluation.rows import dilemma_rows, held_out_rows, ood_set_rows
from ..evaluation.scoring import check_identical_rows, evaluate, read_records
from ..stage_cache import run_stage, stage_is_finished
from .config import RunConfig, preset_config


def job_root(out: str | Path, behavior_name: str, model: str) -> Path:
    """``<out>/<behaviour>/<model slug>``: where the main job's stages of one behaviour and model live."""
    return Path(out) / behavior_name / (Path(model).name.lower().replace("/", "_") or "model")


@dataclass
class Job:
    """The shared state of one (behaviour, model, data seed): loaded model, persona-contrast pairs, paths.

    Built by :func:`prepare_job`; :func:`dw_stage` and :func:`evaluate_dw` take it, so a sweep trains
    many dW on one copy of the data and one unsteered (α = 0) evaluation.
    """

    config: RunConfig
    model: object
    tokenizer: object
    behavior: object
    base_hash: str
    root: Path
    rows: list[dict]
    data_sha: str
    pair_counts: dict
    timings: dict = field(default_factory=dict)
    judge: dict | None = None


def prepare_job(config: RunConfig, model=None, tokenizer=None) -> Job:
    """Load the behaviour (and the model unless given) and run or reuse the data stage.

    Raises:
        ModelNotAvailableError, BehaviorError, AdapterFamilyError, DataGateError, ValueError.
    """
    timings: dict = {}
    behavior = load_behavior(config.behavior)
    if model is None:
        t0 = time.perf_counter()
        model, tokenizer = load_model(config.model, config.device, config.dtype)
        timings["load model"] = {"seconds": time.perf_counter() - t0, "reused": False, "dir": ""}
    make_peft_config(resolve_train_config(config.train), model.config.num_hidden_layers)  # fail fast on a bad family
    check_targets(model, config.train)  # and on target modules that name nothing in this architecture
    set_thinking(tokenizer, config.thinking)  # every stage renders with this choice (the chat contract)
    check_chat_template(tokenizer)  # a system turn, a generation prompt and an end of turn, or a clear error
    base_hash = base_weights_hash(model)
    root = job_root(config.out, behavior.name, config.model)

    # thinking enters the key only when on, so stages made before the option existed keep their keys
    data_key = stable_hash({"model": config.model, "base": base_hash, "behavior": behavior.to_dict(), "generation": generation_key(config.generation),
                            **({"thinking": True} if config.thinking else {})})
    data_dir = root / f"data-{data_key}"

    def make_data(directory: Path) -> None:
        write_jsonl(directory / "pairs.jsonl", generate_pairs(model, tokenizer, behavior, config.generation))

    run_stage("data", data_dir, data_key, make_data, force=config.force, timings=timings)
    rows = read_jsonl(data_dir / "pairs.jsonl")
    pair_counts = check_pairs(rows, config.generation.max_identical_fraction)
    data_sha = file_sha256(data_dir / "pairs.jsonl")
    judge = None
    if config.filter_pairs:
        check_judgeable(behavior, config.pair_judge)
    if (config.judge or (config.filter_pairs and config.pair_judge == "model")) and behavior.judge is not None:
        # the model judge's report (rates per sign and persona, agreement with the hand labels), also when another judge
        # filters; --judge-threshold is in the filtering judge's units, so the report then keeps the default rule
        reporting = config if config.pair_judge == "model" else replace(config, pair_judge="model", judge_threshold="labels")
        judge_dir = judge_data(reporting, model, tokenizer, behavior, rows, data_sha, base_hash, root, timings)
        judge = read_json(judge_dir / "summary.json")
    if config.filter_pairs:  # the model judge filters with the stage it reported from
        filter_dir = judge_dir if config.pair_judge == "model" else judge_data(config, model, tokenizer, behavior, rows, data_sha, base_hash, root, timings)
        kept = read_json(filter_dir / "summary.json")
        all_rows, rows = rows, read_jsonl(filter_dir / "pairs.jsonl")
        if not rows:
            raise DataGateError(f"the {config.pair_judge} judge kept no pair of {pair_counts['pairs']} (threshold {kept['threshold']:.3f}); "
                                "lower --judge-threshold or run without --filter-pairs")
        pairs_dir = filter_dir
        if config.size_control:  # as many pairs as the judge kept, drawn at random from all of them
            pairs_dir = size_control_data(all_rows, len(rows), data_sha, config.generation.seed, root, config.force, timings)
            rows = read_jsonl(pairs_dir / "pairs.jsonl")
        pair_counts = {**check_pairs(rows, config.generation.max_identical_fraction), "before_filter": pair_counts["pairs"],
                       **({} if config.pair_judge == "model" else {"filter": {k: kept[k] for k in ("judge_model", "threshold", "threshold_rule", "rates")}
                                                                   | {"agreement": kept.get("agreement")}}),
                       **({"size_control": f"{len(rows)} pairs drawn at random (data seed {config.generation.seed}) in place of "
                                           f"the {config.pair_judge} judge's kept pairs"} if config.size_control else {})}
        data_sha = file_sha256(pairs_dir / "pairs.jsonl")
    return Job(config, model, tokenizer, behavior, base_hash, root, rows, data_sha, pair_counts, timings, judge)


def judge_data(config: RunConfig, model, tokenizer, behavior, rows: list[dict], data_sha: str, base_hash: str, root: Path,
               timings: dict) -> Path:
    """The judge stage: judge both responses of every pair with ``config.pair_judge`` (the job's model, or the
    behaviour's judge-free metric); write ``judged.jsonl``, ``pairs.jsonl`` (the kept pairs) and ``summary.json``
    (behaviour rates per sign / persona / answer word, the threshold, and the judge's agreement with the shipped hand
    labels when there are any)."""
    labels = load_hand_labels(behavior) if has_hand_labels(behavior) else None
    # the model judge's key is as before the metric judge existed, so its archived stages are reused
    judge = ({"judge": asdict(behavior.judge)} if config.pair_judge == "model"
             else {"pair_judge": config.pair_judge, "metric": behavior.generation_metric})
    key = stable_hash({"data": data_sha, "base": base_hash, **judge, "threshold": config.judge_threshold, "labels": labels})
    rule = config.judge_threshold if (config.judge_threshold != "labels" or labels) else "median"
    scorer = pair_scorer(model, tokenizer, behavior, config.pair_judge)
    name = "judge" if config.pair_judge == "model" else f"judge-{behavior.generation_metric}"

    def compute(directory: Path) -> None:
        label_scores = scorer([(r["prompt"], r["response"]) for r in labels]) if labels else None
        judged, threshold = judge_pairs(scorer, rows, rule, labels, label_scores)
        write_jsonl(directory / "judged.jsonl", judged)
        write_jsonl(directory / "pairs.jsonl", [r for r, j in zip(rows, judged) if j["keep"]])
        summary = {"threshold": threshold, "threshold_rule": rule if rule == config.judge_threshold else f"{rule} (no hand labels)",
                   "judge_model": config.model if config.pair_judge == "model" else f"{behavior.generation_metric} (judge-free metric)",
                   "rates": behavior_rates(rows, judged, behavior)}
        if labels:
            agreement = judge_agreement(model, tokenizer, behavior, labels, threshold, label_scores)  # at the threshold used on the data
            summary["agreement"] = {k: v for k, v in agreement.items() if k != "scores"}
            summary["hand_label_rates"] = hand_label_rates(labels)
        write_json(directory / "summary.json", summary)

    return run_stage(name, root / f"{name}-{key}", key, compute, force=config.force, timings=timings)


def size_control_data(rows: list[dict], n: int, data_sha: str, seed: int, root: Path, force: bool, timings: dict) -> Path:
    """The size control of a pair filter: a stage ``control-<key>/pairs.jsonl`` holding ``n`` of ``rows`` drawn
    uniformly without replacement with ``random.Random(seed)``, in their original order. Trained on in place of the
    filter's ``n`` kept pairs, it changes the data's size as the filter does but not its purity.

    Raises:
        DataGateError: ``n`` outside 1..len(rows).
    """
    if not 1 <= n <= len(rows):
        raise DataGateError(f"the size control draws {n} pairs but the data has {len(rows)}; it needs 1 to {len(rows)}")
    key = stable_hash({"data": data_sha, "n": n, "seed": seed})

    def compute(directory: Path) -> None:
        picked = sorted(random.Random(seed).sample(range(len(rows)), n))
        write_jsonl(directory / "pairs.jsonl", [rows[i] for i in picked])

    return run_stage("size control", root / f"control-{key}", key, compute, force=force, timings=timings)


def _train_dir(root: Path, train: TrainConfig | dict, sign: str, data_sha: str, base_hash: str) -> Path:
    """Where :func:`dw_stage` keeps one sign's adapter: the name hashes the data, the training config (as
    :func:`~weight_steering.core.adapters.train_key` gives it) and the base."""
    train = train_key(train)
    key = stable_hash({"data": data_sha, "train": train, "sign": sign, "base": base_hash})
    return root / f"train-{train['family']}-{sign}-seed{train['seed']}-{key}"


def train_dirs_of(dw_dir: Path) -> dict[str, Path] | None:
    """The θ⁺ and θ⁻ training stages a dW stage was made from (found from its metadata), or None if
    either is not on disk next to it (a dW copied elsewhere, or made by other code)."""
    metadata = load_dw(Path(dw_dir) / "dW.safetensors").metadata
    needed = ("train_config", "data_sha256", "base_weights_hash")
    if any(k not in metadata for k in needed):
        return None
    dirs = {sign: _train_dir(Path(dw_dir).parent, metadata["train_config"], sign, metadata["data_sha256"], metadata["base_weights_hash"])
            for sign in ("positive", "negative")}
    return dirs if all(stage_is_finished(d) for d in dirs.values()) else None


def pairs_of(dw_dir: Path) -> list[dict] | None:
    """The generated pairs (``pairs.jsonl`` rows) a dW stage was trained on, found next to it by the
    SHA-256 in its metadata, or None if they are not on disk there."""
    wanted = load_dw(Path(dw_dir) / "dW.safetensors").metadata.get("data_sha256")
    for path in sorted(p for stage in ("data", "judge", "control") for p in Path(dw_dir).parent.glob(f"{stage}-*/pairs.jsonl")):
        if wanted and stage_is_finished(path.parent) and file_sha256(path) == wanted:
            return read_jsonl(path)
    return None


def dw_stage(job: Job, train: TrainConfig | None = None) -> Path:
    """Train θ⁺ and θ⁻ with ``train`` (default: the job's) and take dW; return the dW stage directory.

    Each sign and the diff are resumable stages; the directory holds ``dW.safetensors`` + ``dW.json``.
    """
    train = resolve_train_config(train or job.config.train)
    train_dirs = {}
    for sign in ("positive", "negative"):
        directory = _train_dir(job.root, train, sign, job.data_sha, job.base_hash)
        key = directory.name.rsplit("-", 1)[1]

        def make_adapter(directory: Path, sign: str = sign) -> None:
            _, train_log = train_adapter(job.model, job.tokenizer, job.rows, sign, train, adapter_dir=directory / "adapter",
                                         delta_path=directory / "delta.safetensors")  # written a module at a time
            write_json(directory / "train_log.json", train_log)

        train_dirs[sign] = run_stage(f"train θ{'⁺' if sign == 'positive' else '⁻'}", directory, key, make_adapter, force=job.config.force, timings=job.timings)

    # keyed on what made the adapters, not on their bytes, which differ across CPU kernel paths (diff.dw_identity)
    dw_key = stable_hash({sign: d.name for sign, d in train_dirs.items()})
    dw_dir = job.root / f"dw-{train.family}-seed{train.seed}-{dw_key}"

    def make_dw(directory: Path) -> None:
        logs = {s: read_json(d / "train_log.json") for s, d in train_dirs.items()}
        metadata = {
            "model": job.config.model, "base_weights_hash": job.base_hash, "behavior": job.behavior.name,
            "family": train.family, "train_config": asdict(train), "generation_config": generation_key(job.config.generation),
            "data_seed": job.config.generation.seed, "train_seed": train.seed, "data_sha256": job.data_sha,
            "train_logs": {s: {k: v[k] for k in ("validation_loss_before", "validation_loss_after", "norm_delta_at_init", "wall_seconds", "steps")
                               if k in v} for s, v in logs.items()},
            "thinking": thinking_enabled(job.tokenizer),
            "targets": {k: v for k, v in logs["positive"].get("targets", {}).items() if k != "adapted"},
            "n_pairs": len(job.rows), "max_new_tokens": job.config.generation.max_new_tokens, "source_key": dw_key,
            "recipe": job.config.recipe, "layers": layer_slice(job.model.config.num_hidden_layers, train.layer_fraction),
            "target_modules": list(train.target_modules),
        }
        dw = compute_dw(load_file(str(train_dirs["positive"] / "delta.safetensors")),
                        load_file(str(train_dirs["negative"] / "delta.safetensors")), metadata)
        save_dw(dw, directory / "dW.safetensors")

    return run_stage("diff dW", dw_dir, dw_key, make_dw, force=job.config.force, timings=job.timings)


def recipe_dw(job: Job, preset: str) -> DeltaWeights:
    """dW of ``job``'s behaviour, model, seeds, sampler and output root, trained on another preset's data and adapter
    recipe (e.g. ``paper_2core``): its own data, judge, training and dW stages beside the job's, reused when finished.

    Raises:
        ValueError: unknown preset. As :func:`prepare_job` and :func:`dw_stage` otherwise.
    """
    recipe = preset_config(preset)
    mine = job.config
    config = replace(recipe, behavior=mine.behavior, model=mine.model, out=mine.out, device=mine.device, dtype=mine.dtype,
                     thinking=mine.thinking, judge=mine.judge, judge_threshold=mine.judge_threshold, force=mine.force,
                     filter_pairs=mine.filter_pairs, pair_judge=mine.pair_judge, size_control=mine.size_control,
                     generation=replace(recipe.generation, seed=mine.generation.seed, sampler=mine.generation.sampler,
                                        batch_size=mine.generation.batch_size),
                     train=replace(recipe.train, family=mine.train.family, seed=mine.train.seed))
    recipe_job = prepare_job(config, job.model, job.tokenizer)
    return load_dw(dw_stage(recipe_job) / "dW.safetensors", job.model, base_hash=job.base_hash)


def train_dw(model, tokenizer, behavior: str = "sycophancy", config: RunConfig | None = None) -> DeltaWeights:
    """Persona data to dW, and nothing else: sample the pairs, train θ⁺ and θ⁻, take dW = θ⁺ − θ⁻ (Fierro & Roger 2025 §3).

    No judge (unless ``config.filter_pairs`` asks for it), no evaluation, no report. Every step is a stage of the
    main job's cache (:mod:`weight_steering.stage_cache`) under ``config.out``, so a second call, or a later
    ``wsteer run`` with the same settings, reuses them.

    Args:
        model, tokenizer: the base model (:func:`weight_steering.core.models.load_model`).
        behavior: a shipped behaviour's name or a behaviour JSON file (:func:`weight_steering.core.behavior_files.load_behavior`).
        config: data and training sizes (default: the ``default`` preset, :func:`preset_config`).

    Returns:
        The dW (fp32 tensors with the base parameters' shapes), its provenance in ``metadata``.

    Raises:
        BehaviorError, AdapterFamilyError, DataGateError, ChatTemplateError, ValueError: as :func:`prepare_job`.
    """
    config = replace(config or preset_config(), behavior=behavior)
    job = prepare_job(replace(config, judge=False), model, tokenizer)  # --filter-pairs still runs the judge it needs
    return load_dw(dw_stage(job) / "dW.safetensors", job.model, base_hash=job.base_hash)


def eval_rows(job: Job) -> list[dict]:
    """The evaluation rows of the job: held-out behaviour rows, the behaviour's OOD sets, then DailyDilemmas rows."""
    return (held_out_rows(job.tokenizer, job.behavior) + ood_set_rows(job.tokenizer, job.behavior, job.config.ood_limit)
            + dilemma_rows(job.tokenizer, job.config.dilemma_limit))


def _rows_key(job: Job, rows: list[dict]) -> str:
    return stable_hash({"base": job.base_hash, "rows": [r["text"] for r in rows], "max_length": job.config.max_length})


def _make_eval(job: Job, rows: list[dict], alphas: tuple[float, ...], dw) -> Callable[[Path], None]:
    def compute(directory: Path) -> None:
        records = evaluate(job.model, job.tokenizer, dw, rows, alphas, job.config.eval_batch_size, job.config.max_length)
        write_jsonl(directory / "records.jsonl", records)

    return compute


def evaluate_base(job: Job) -> list[dict]:
    """Records of the unsteered model (α = 0) on the job's rows: one stage per (base, rows), shared by every dW."""
    rows = eval_rows(job)
    key = _rows_key(job, rows)
    directory = run_stage("evaluate base", job.root / f"eval-base-{key}", key, _make_eval(job, rows, (0.0,), None),
                       force=job.config.force, timings=job.timings)
    return read_records(directory / "records.jsonl")


def evaluate_dw(job: Job, dw, dw_dir: Path, alphas: tuple[float, ...]) -> list[dict]:
    """Records at every α of ``alphas`` (which must include 0) on the job's evaluation rows.

    α = 0 comes from :func:`evaluate_base`; the steered α are one stage per dW. Returns the records
    of both (see :func:`weight_steering.evaluation.scoring.evaluate`).

    Raises:
        EvalError: the two stages scored different rows.
    """
    rows = eval_rows(job)
    steered = tuple(a for a in alphas if a != 0.0)
    key = stable_hash({"dw": dw_dir.name, "alphas": steered, "rows": _rows_key(job, rows)})
    directory = run_stage("evaluate", job.root / f"eval-{key}", key, _make_eval(job, rows, steered, dw), force=job.config.force, timings=job.timings)
    records = evaluate_base(job) + read_records(directory / "records.jsonl")
    check_identical_rows(records)
    return records
