"""Steering methods compared at the same KL budget: iso-KL calibration, baselines, effect-vs-KL curves.

For one behaviour, every method (:mod:`weight_steering.core.methods`) is put on one footing:

1. **Calibrate** each continuous method separately for + and − to p95 KL(steered ‖ base) = target
   on the calibration split of the shipped neutral prompts (:func:`weight_steering.evaluation.calibrate.calibrate_alpha`),
   then re-measure on the audit split at the chosen α (its own stage, every position kept: p95 and mean
   with bootstrap CIs over prompts). Prompt methods have one setting per sign: their KL is measured and reported instead.
2. **Evaluate** every method at its two strengths on identical rows (held-out behaviour rows +
   DailyDilemmas), with the base at α = 0 shared (every arm differs from the base in its steer only), and the NLL of the
   shipped neutral reference answers under each arm (degradation).
3. **Curves**: each continuous method at fractions of its calibrated α (p95 KL on x, OOD honesty Δ on y).

Every step is a resumable stage (:func:`weight_steering.stage_cache.run_stage`) under
``<out>/compare/<behaviour>/<model>/``; ``comparison.json``, ``comparison.md`` and ``effect_vs_kl.png``
are written atomically into the seed's own folder ``<family>-seed<s>/`` there. With ``archive`` every small
finished stage is also kept in a folder from which a stopped run resumes, here or on another machine.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..artifacts import atomic_write, read_json, read_jsonl, stable_hash, write_json, write_jsonl
from ..core.adapters import layer_slice
from ..core.behavior_files import load_behavior
from ..core.diff import load_dw
from ..core.methods import SteeringMethod
from ..core.models import DEFAULT_MODEL, dtype_name
from ..evaluation.calibrate import calibrate_alpha, kl_from_base
from ..evaluation.datasets import load_neutral, neutral_split
from ..evaluation.effects import dilemma_target, kl_summary, method_effects
from ..evaluation.generations import generate_replies, generation_effects, generation_prompts, score_replies
from ..evaluation.judge import PAIR_JUDGES, judge_logratios
from ..evaluation.scoring import evaluate, read_records, reference_nll
from ..evaluation.statistics import bootstrap_ci
from ..main_job.config import preset_config
from ..main_job.stages import dw_stage, eval_rows, evaluate_base, job_root, prepare_job
from ..stage_cache import copy_finished_stages, recording_stages, run_stage
from .methods import COMPARISON_METHODS, MethodContext, all_methods, keyed_spec
from .ratios import generalisation_ratios, ood_delta, ood_measure
from .render import plot_effect_vs_kl, render_comparison
from .result import Arm, ComparisonResult, MethodResult

log = logging.getLogger(__name__)

METHODS = COMPARISON_METHODS  # key -> how it is built and what it is (methods.register_method); the order of the table


# main-job stages small enough to archive (the adapters and dW are retrained instead)
JOB_STAGES = ("data-", "judge-", "control-", "eval-base-")
# the calibration search, in stage keys: results made by another search are recomputed
CALIBRATION_SEARCH = "power-law secant"


class CompareError(ValueError):
    """Bad comparison input (unknown method, bad target or fractions)."""


@dataclass(frozen=True)
class CompareConfig:
    """Settings of :func:`run_comparison`.

    Attributes:
        behavior, model: as in the main job; the dW is the main job's (``family``, ``seed``), reused if on disk.
        seed: the training seed and, unless ``data_seed`` is given, the data-sampling seed too, so that the
            comparison at seeds 0, 1, 2 varies both sources of variation.
        data_seed: fix the data-sampling seed (None: the same as ``seed``).
        methods: keys of :data:`METHODS` (default: :func:`~weight_steering.comparison.methods.all_methods`).
        target, tolerance: p95 KL target and accepted error (nats).
        n_tokens: greedy tokens per calibration prompt.
        n_contrast_pairs: training pairs used for the activation directions.
        reading: where the activation directions are read: ``"response_mean"`` (mean over the response
            tokens, the default) or ``"last"`` (the response's last token).
        s_space_rank: r of the S-space projection.
        curve_fractions: extra strengths, as fractions of each calibrated α, for the effect-vs-KL curves.
        dilemma_limit: evaluate on the first n dilemmas (None: all).
        prompt_limit: use the first n prompts of each neutral split for calibration, audit and the reference
            answers' NLL (None: all; smaller only for smoke runs).
        generation_tokens: greedy tokens per reply in the generation scores (behaviours with OOD sets or a
            ``generation_metric``: every method's replies to the ID and OOD prompts at both strengths,
            :mod:`weight_steering.evaluation.generations`).
        out: output root; the result goes to ``<out>/compare/<behaviour>/<model>/<family>-seed<s>[-data<d>]/``.
        archive: a folder (committed, say) that keeps every small finished stage of the comparison and of its
            main job (data, judge, base evaluation) under ``<archive>/<model>/<behaviour>/``: they are restored
            before the run and added after each method, so a stopped run resumes there or on another machine.
            The trained adapters and dW are not archived (too large); they are retrained, deterministically.
        name: the result folder's name (default :func:`result_name`), so that runs with other methods keep their own result.
        filter_pairs: ``None`` (every pair) or the pair judge (``"model"``, ``"metric"``;
            :func:`weight_steering.evaluation.judge.pair_scorer`) whose kept pairs train dW (both recipes) and give the
            activation methods their contrast (Fierro & Roger 2025 §3).
        size_control: with ``filter_pairs``, as many pairs as that judge keeps, drawn at random from all of them, in
            place of the kept ones (:func:`weight_steering.main_job.stages.size_control_data`): the filter's size without its purity.
    """

    behavior: str = "honesty"
    model: str = DEFAULT_MODEL
    family: str = "lora"
    seed: int = 0
    data_seed: int | None = None
    methods: tuple[str, ...] = field(default_factory=all_methods)
    target: float = 1.0
    tolerance: float = 0.05
    n_tokens: int = 32
    n_contrast_pairs: int = 64
    reading: str = "response_mean"
    s_space_rank: int = 8
    curve_fractions: tuple[float, ...] = (0.25, 0.5)
    dilemma_limit: int | None = None
    prompt_limit: int | None = None
    generation_tokens: int = 48
    out: str = "out"
    archive: str | None = None
    name: str | None = None
    filter_pairs: str | None = None
    size_control: bool = False


def check_config(config: CompareConfig) -> None:
    """Raise :class:`CompareError` naming the problem: unknown methods, a target ≤ 0 or not finite, bad fractions."""
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown:
        raise CompareError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if len(set(config.methods)) != len(config.methods):
        raise CompareError(f"--methods repeat a method ({', '.join(config.methods)}); name each once")
    if not np.isfinite(config.target) or config.target <= 0:
        raise CompareError(f"--target (the p95 KL target) must be a finite number of nats > 0; got {config.target}")
    if not (0 < config.tolerance < config.target):
        raise CompareError(f"--tolerance must lie in (0, --target) nats; got {config.tolerance}")
    if any(not (0 < f < 1) for f in config.curve_fractions):
        raise CompareError(f"curve fractions must lie in (0, 1) (the calibrated α is the point at 1); got {config.curve_fractions}")
    if len(set(config.curve_fractions)) != len(config.curve_fractions):
        raise CompareError(f"curve fractions repeat a value ({config.curve_fractions}); give each fraction once")
    if config.name is not None and (not config.name or "/" in config.name or config.name.startswith(".")):
        raise CompareError(f"--name must be a plain folder name (no '/', not starting with '.'); got {config.name!r}")
    if config.filter_pairs is not None and config.filter_pairs not in PAIR_JUDGES:
        raise CompareError(f"--filter-pairs names the pair judge: one of {', '.join(PAIR_JUDGES)}; got {config.filter_pairs!r}")
    if config.size_control and config.filter_pairs is None:
        raise CompareError("--size-control draws as many random pairs as a pair judge keeps; name the judge with --filter-pairs")
    if not (isinstance(config.generation_tokens, int) and config.generation_tokens >= 1):
        raise CompareError(f"--generation-tokens must be an integer ≥ 1; got {config.generation_tokens!r}")


def build_methods(job, dw, config: CompareConfig) -> dict[str, tuple[SteeringMethod, dict]]:
    """``key -> (method, spec)`` for the requested methods, each built by its entry of the registry
    (:data:`weight_steering.comparison.methods.COMPARISON_METHODS`); ``spec`` identifies the method in stage keys.

    The contrast activations are read once on every layer (steering-vectors) from the same persona
    contrast as dW (:func:`weight_steering.core.activations.contrast_pairs`), when an activation method asks for them.
    """
    context = MethodContext(job.model, job.tokenizer, job.behavior, job.rows, job.data_sha, job.base_hash,
                            layer_slice(job.model.config.num_hidden_layers, job.config.train.layer_fraction), dw,
                            f"dW ({config.family}, seed {config.seed})", config.n_contrast_pairs, config.reading, config.s_space_rank, job)
    return {key: METHODS[key].build(context) for key in config.methods}


def comparison_dw(config: CompareConfig, loaded=None, job_config=None) -> Path:
    """The comparison's dW on disk, and nothing else: restore the archived stages, train (or reuse) the adapters and
    the dW, archive the data and judge stages; no comparison result is touched. It is the dW other recipes (ablation,
    hypotheses, export) start from. Arguments and errors as in :func:`run_comparison`; returns the dW's stage folder."""
    with recording_stages() as used:
        _, dw_dir, _, archive = _prepare(config, loaded, job_config, used)
        archive()  # the restored or new data and judge stages
    return dw_dir


def _prepare(config: CompareConfig, loaded, job_config, used: set[Path]):
    """``(job, dW stage folder, comparison root, archive())``: the main job's stages up to dW, after restoring the
    archived stages; ``archive()`` copies back the finished small stages among ``used`` (the stages this run asked for,
    :func:`~weight_steering.stage_cache.recording_stages`), so other runs' stages under the same root stay out."""
    check_config(config)
    behavior_name = load_behavior(config.behavior).name
    job_dir = job_root(config.out, behavior_name, config.model)
    root = job_dir.parent.parent / "compare" / behavior_name / job_dir.name
    archived = None if config.archive is None else Path(config.archive) / job_dir.name / behavior_name
    if archived is not None:
        if Path(config.archive).exists() and not Path(config.archive).is_dir():
            raise CompareError(f"--archive {config.archive} is a file; give a folder (it is created if missing)")
        restored = copy_finished_stages(archived / "job", job_dir, JOB_STAGES) + copy_finished_stages(archived / "compare", root, ("",))
        if restored:
            log.info("restored %d finished stages from %s", len(restored), archived)

    def archive() -> None:
        if archived is not None:
            names = {d.name for d in used}
            copy_finished_stages(job_dir, archived / "job", JOB_STAGES, names)
            copy_finished_stages(root, archived / "compare", ("",), names)

    run_config = job_config or preset_config()
    if config.filter_pairs is not None:
        run_config = replace(run_config, filter_pairs=True, pair_judge=config.filter_pairs, size_control=config.size_control)
    run_config = replace(run_config, behavior=config.behavior, model=config.model, dilemma_limit=config.dilemma_limit, out=config.out,
                         train=replace(run_config.train, family=config.family, seed=config.seed),
                         generation=replace(run_config.generation, seed=config.seed if config.data_seed is None else config.data_seed))
    model, tokenizer = loaded or (None, None)
    job = prepare_job(run_config, model, tokenizer)
    dw_dir = dw_stage(job)
    return job, dw_dir, root, archive


def run_comparison(config: CompareConfig, loaded=None, command: str = "", job_config=None) -> ComparisonResult:
    """Calibrate, evaluate and plot every method of ``config`` (see the module docstring).

    Args:
        loaded: ``(model, tokenizer)`` already in memory (tests); else ``config.model`` is loaded.
        job_config: the main job's :class:`~weight_steering.main_job.run.RunConfig` for data and training
            sizes (default: the ``default`` preset); ``config`` overrides its behaviour, model, family, seed, rows and output.
        command: the command line recorded in the outputs.

    Returns:
        The :class:`~weight_steering.comparison.result.ComparisonResult` (per method its strengths, KL per sign on the
        calibration and audit split, calibration cost and effects; ``path`` its folder), also written as
        ``comparison.json``.

    Raises:
        CompareError: bad config. BehaviorError: the behaviour's prompts overlap a shipped set, such as the neutral
        calibration prompts (checked when it is loaded, before any model work). DeltaWeightsError, ModelNotAvailableError:
        as in the main job.
    """
    with recording_stages() as used:
        return _run_comparison(config, loaded, command, job_config, used)


def _run_comparison(config: CompareConfig, loaded, command: str, job_config, used: set[Path]) -> ComparisonResult:
    job, dw_dir, root, archive = _prepare(config, loaded, job_config, used)
    dw = load_dw(dw_dir / "dW.safetensors", job.model, base_hash=job.base_hash)
    rows = eval_rows(job)
    neutral = load_neutral()
    calibration, audit = neutral_split(neutral)
    calibration_prompts = [p["instruction"] for p in calibration][: config.prompt_limit]
    audit_prompts = [p["instruction"] for p in audit][: config.prompt_limit]
    if config.prompt_limit is not None:  # the reference answers' NLL on the same prompts (default: all 100 pairs)
        neutral = calibration[: config.prompt_limit] + audit[: config.prompt_limit]
    base_records = evaluate_base(job)
    methods = build_methods(job, dw, config)
    archive()
    nll_key = stable_hash({"base": job.base_hash, "pairs": neutral})
    nll_dir = run_stage("reference NLL, base", root / f"nll-base-{nll_key}", nll_key,
                        lambda d: write_json(d / "nll.json", reference_nll(job.model, job.tokenizer, None, 0.0, neutral)))
    base_nll = np.array(read_json(nll_dir / "nll.json"))
    settings = {"target": config.target, "tolerance": config.tolerance, "n_tokens": config.n_tokens, "prompts": calibration_prompts}

    def measure(method, alpha, prompts):
        return kl_from_base(job.model, job.tokenizer, method, alpha, prompts, config.n_tokens)

    behavior = job.behavior
    gen_prompts = generation_prompts(behavior, job.config.ood_limit) if (behavior.ood_sets or behavior.generation_metric) else []
    threshold = (job.judge or {}).get("threshold")

    def generations(label: str, method, alphas: tuple[float, ...], identity: str) -> list[dict]:
        """Greedy replies to the ID and OOD prompts at ``alphas``, scored (a resumable stage; the judge sees the base model)."""
        key = stable_hash({"identity": identity, "alphas": list(alphas), "prompts": [g["prompt"] for g in gen_prompts],
                           "tokens": config.generation_tokens, "metric": behavior.generation_metric, "threshold": threshold,
                           "judge": None if behavior.judge is None else asdict(behavior.judge)})

        def compute(directory: Path) -> None:
            rows = []
            for alpha in alphas:
                replies = generate_replies(job.model, job.tokenizer, method, alpha, [g["prompt"] for g in gen_prompts], config.generation_tokens)
                rows += [{**g, "alpha": alpha, "reply": reply} for g, reply in zip(gen_prompts, replies)]
            judged = judge_logratios(job.model, job.tokenizer, behavior, [(r["prompt"], r["reply"]) for r in rows]) if behavior.judge else None
            write_jsonl(directory / "generations.jsonl", score_replies(rows, behavior.generation_metric, judged, threshold))

        return read_jsonl(run_stage(f"generate {label}", root / f"gen-{label}-{key}", key, compute) / "generations.jsonl")

    base_generations = generations("base", None, (0.0,), stable_hash({"base": job.base_hash})) if gen_prompts else []

    results, records_by_method = [], {}
    for key, (method, spec) in methods.items():
        log.info("method %s: %s", key, method.name)
        identity = stable_hash({"method": key, "spec": keyed_spec(spec), "base": job.base_hash})
        arms = {}
        for sign, label in ((1, "plus"), (-1, "minus")):
            # − starts its search at |α₊| (KL is close to even in α), + at 1
            start = abs(arms["plus"]["alpha"]) if sign == -1 and method.continuous else 1.0
            stage_key = stable_hash({"identity": identity, **settings, "sign": sign, "search": CALIBRATION_SEARCH, "start": start})

            def calibrate(directory: Path, method=method, sign=sign, start=start) -> None:
                started = time.perf_counter()
                if method.continuous:
                    result = asdict(calibrate_alpha(lambda a: measure(method, a, calibration_prompts), sign, config.target,
                                                    config.tolerance, start=start))
                else:  # one setting per sign: report its KL
                    stats = measure(method, float(sign), calibration_prompts)
                    result = {"alpha": float(sign), "p95": stats.p95, "mean": stats.mean, "max": stats.max, "target": None,
                              "tolerance": None, "converged": None, "iterations": 1, "n_forward_passes": stats.n_forward_passes,
                              "history": [(float(sign), stats.p95)], "message": "prompt method: KL reported, not calibrated"}
                write_json(directory / "calibration.json", {**result, "seconds": time.perf_counter() - started,
                                                            "n_calibration_prompts": len(calibration_prompts)})

            directory = run_stage(f"calibrate {key} {label}", root / f"calibrate-{key}-{label}-{stage_key}", stage_key, calibrate)
            arm = {k: v for k, v in read_json(directory / "calibration.json").items() if not k.startswith("audit_")}
            arms[label] = {**arm, **_audit(method, key, label, arm["alpha"], identity, audit_prompts, root, measure, config)}
        alpha_plus, alpha_minus = arms["plus"]["alpha"], arms["minus"]["alpha"]

        eval_key = stable_hash({"identity": identity, "alphas": [alpha_minus, alpha_plus], "rows": [r["text"] for r in rows], "nll": nll_key})

        def score(directory: Path, method=method, alphas=(alpha_minus, alpha_plus)) -> None:
            started = time.perf_counter()
            write_jsonl(directory / "records.jsonl", evaluate(job.model, job.tokenizer, method, rows, alphas))
            seconds = time.perf_counter() - started
            write_json(directory / "nll.json", {str(a): reference_nll(job.model, job.tokenizer, method, a, neutral) for a in alphas})
            write_json(directory / "timing.json", {"seconds": seconds})

        directory = run_stage(f"evaluate {key}", root / f"eval-{key}-{eval_key}", eval_key, score)
        records = base_records + read_records(directory / "records.jsonl")
        curve = [{"fraction": 0.0, "alpha": 0.0, "p95": 0.0, "ood_target": 0.0}]
        if method.continuous:
            curve += _curve(job, method, identity, config, root, rows, base_records, arms, measure, calibration_prompts)
        effects = method_effects(records, alpha_plus, alpha_minus, behavior=job.behavior)
        if gen_prompts:
            effects.extend(generation_effects(base_generations + generations(key, method, (alpha_minus, alpha_plus), identity), alpha_plus, alpha_minus))
        measure_name = ood_measure(job.behavior)[0]
        for label in ("plus", "minus"):  # the calibrated points of the curve are the table's Δ
            curve.append({"fraction": 1.0, "alpha": arms[label]["alpha"], "p95": arms[label]["p95"], "ood_target": effects.mean(measure_name, label)})
        nll = read_json(directory / "nll.json")
        for label, alpha in (("plus", alpha_plus), ("minus", alpha_minus)):
            change = np.array(nll[str(alpha)]) - base_nll
            effects.add("nll_change", label, *bootstrap_ci(change, np.arange(len(change))))
        archive()
        results.append(MethodResult(key=key, name=method.name, continuous=method.continuous, plus=Arm(**arms["plus"]), minus=Arm(**arms["minus"]),
                                    effects=effects, curve=sorted(curve, key=lambda c: c["alpha"]),
                                    eval_seconds=read_json(directory / "timing.json")["seconds"],
                                    spec={k: v for k, v in spec.items() if k in ("layers", "rank", "aggregator", "reading", "direction_agreement")}))
        records_by_method[key] = records
    result = ComparisonResult(
        behavior=job.behavior.name, model=config.model, config=config_record(config), command=command,
        device=str(job.model.device), dtype=dtype_name(job.model.dtype),
        n_rows=len(rows), n_dilemma_rows=sum(r["eval"] == "dilemmas" for r in rows),
        n_calibration_prompts=len(calibration_prompts), n_audit_prompts=len(audit_prompts),
        ood_target=dict(zip(("value", "sign"), dilemma_target(job.behavior))), behavior_label=job.behavior.label,
        ood_sets=[{"name": s.name, "description": s.description, "n_items": len(s.items)} for s in job.behavior.ood_sets],
        ood_measure=ood_measure(job.behavior)[0], generation_metric=job.behavior.generation_metric,
        n_generation_prompts=len(gen_prompts), judge_threshold=threshold, judge_agreement=(job.judge or {}).get("agreement"),
        methods=results, ratios=generalisation_ratios(results, records_by_method, job.behavior))

    def write_result(directory: Path) -> None:
        write_json(directory / "comparison.json", result.to_json())
        with atomic_write(directory / "comparison.md") as handle:
            handle.write(render_comparison(result))
        plot_effect_vs_kl(result, directory / "effect_vs_kl.png")

    run_dir = root / result_name(config)
    run_stage("comparison", run_dir, stable_hash({"config": config_record(config) | {"archive": None}}), write_result, force=True)
    archive()
    result.path, result.dw_dir = run_dir, dw_dir
    return result


def config_record(config: CompareConfig) -> dict:
    """The config as recorded in ``comparison.json`` and in the result's key; ``name``, ``filter_pairs`` and
    ``size_control`` only when set, so results made before the options existed keep their bytes."""
    return {k: v for k, v in asdict(config).items() if not ((k in ("name", "filter_pairs") and v is None) or (k == "size_control" and not v))}


def result_name(config: CompareConfig) -> str:
    """The folder name of one comparison's result: ``<family>-seed<s>``, with ``-data<d>`` when the data seed is fixed
    apart, ``-kl<target>`` at a KL budget other than 1 nat, ``-filtered-<judge>`` on filtered pairs and
    ``-sizecontrol`` on their size control."""
    if config.name is not None:
        return config.name
    fixed = config.data_seed is not None and config.data_seed != config.seed
    return (f"{config.family}-seed{config.seed}" + (f"-data{config.data_seed}" if fixed else "")
            + (f"-kl{config.target:g}" if config.target != 1.0 else "")
            + (f"-filtered-{config.filter_pairs}" if config.filter_pairs else "")
            + ("-sizecontrol" if config.size_control else ""))


def _audit(method, key, label, alpha, identity, prompts, root, measure, config) -> dict:
    """Re-measure KL(steered ‖ base) at the chosen α on the audit split (a resumable stage keeping every
    position) and summarise it with bootstrap CIs over prompts: ``audit_p95``, ``audit_p95_ci_low`` … (nats)."""
    stage_key = stable_hash({"identity": identity, "alpha": alpha, "n_tokens": config.n_tokens, "prompts": prompts})

    def compute(directory: Path) -> None:
        stats = measure(method, alpha, prompts)
        write_json(directory / "audit.json", {"alpha": alpha, "kl": stats.per_position.tolist(), "prompt": stats.prompt_index.tolist(),
                                              "n_prompts": len(prompts), "n_forward_passes": stats.n_forward_passes})

    directory = run_stage(f"audit KL {key} {label}", root / f"audit-{key}-{label}-{stage_key}", stage_key, compute)
    raw = read_json(directory / "audit.json")
    summary = kl_summary(np.array(raw["kl"]), np.array(raw["prompt"]))
    return {f"audit_{name}": value for name, value in summary.items()} | {"n_audit_prompts": raw["n_prompts"]}


def _curve(job, method, identity, config, root, rows, base_records, arms, measure, prompts) -> list[dict]:
    """Points of the effect-vs-KL curve at ``config.curve_fractions`` of each calibrated α (the rows of the behaviour's
    OOD measure only, :func:`ood_measure`)."""
    eval_name = ood_measure(job.behavior)[2]
    if eval_name is None:
        return []
    dilemmas = [r for r in rows if r["eval"] == eval_name]
    points = []
    for label in ("plus", "minus"):
        for fraction in config.curve_fractions:
            alpha = fraction * arms[label]["alpha"]
            key = stable_hash({"identity": identity, "alpha": alpha, "n_tokens": config.n_tokens, "prompts": prompts,
                               "rows": [r["text"] for r in dilemmas]})

            def compute(directory: Path, alpha=alpha) -> None:
                stats = measure(method, alpha, prompts)
                write_jsonl(directory / "records.jsonl", evaluate(job.model, job.tokenizer, method, dilemmas, (alpha,)))
                write_json(directory / "kl.json", {"p95": stats.p95, "mean": stats.mean, "max": stats.max})

            directory = run_stage(f"curve {alpha:+.3g}", root / f"curve-{key}", key, compute)
            base = [r for r in base_records if r["eval"] == eval_name]
            points.append({"fraction": fraction, "alpha": alpha, "p95": read_json(directory / "kl.json")["p95"],
                           "ood_target": ood_delta(base + read_records(directory / "records.jsonl"), alpha, job.behavior)})
    return points


