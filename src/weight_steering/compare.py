"""Steering methods compared at the same KL budget: iso-KL calibration, baselines, effect-vs-KL curves.

For one behaviour, every method (:mod:`weight_steering.methods`) is put on one footing:

1. **Calibrate** each continuous method separately for + and − to p95 KL(steered ‖ base) = target
   on the calibration split of the shipped neutral prompts (:func:`weight_steering.calibrate.calibrate_alpha`),
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
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .analyse import bootstrap_ci, dilemma_target, kl_summary, method_effects, metric_frame, paired_rows, ratio_ci, stratified_mean
from .artifacts import atomic_write, read_json, read_jsonl, stable_hash, write_json, write_jsonl
from .calibrate import calibrate_alpha, kl_from_base
from .diff import load_dw
from .eval_data import load_neutral, neutral_split
from .evaluate import evaluate, reference_nll
from .generations import generate_replies, generation_effects, generation_prompts, score_replies
from .judge import judge_logratios
from .methods import COMPARISON_METHODS, MethodContext, SteeringMethod, keyed_spec
from .models import DEFAULT_MODEL, dtype_name
from .behaviors import load_behavior
from .pipeline import eval_rows, evaluate_base, job_root, prepare_job, preset_config, dw_stage
from .stage_cache import copy_finished_stages, run_stage
from .train import layer_slice

log = logging.getLogger(__name__)

METHODS = COMPARISON_METHODS  # key -> how it is built and what it is (methods.register_method); the order of the table


# main-job stages small enough to archive (the adapters and dW are retrained instead)
JOB_STAGES = ("data-", "judge-", "eval-base-")
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
        methods: keys of :data:`METHODS`.
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
            :mod:`weight_steering.generations`).
        out: output root; the result goes to ``<out>/compare/<behaviour>/<model>/<family>-seed<s>[-data<d>]/``.
        archive: a folder (committed, say) that keeps every small finished stage of the comparison and of its
            main job (data, judge, base evaluation) under ``<archive>/<model>/<behaviour>/``: they are restored
            before the run and added after each method, so a stopped run resumes there or on another machine.
            The trained adapters and dW are not archived (too large); they are retrained, deterministically.
        name: the result folder's name (default :func:`result_name`), so that runs with other methods keep their own result.
    """

    behavior: str = "honesty"
    model: str = DEFAULT_MODEL
    family: str = "lora"
    seed: int = 0
    data_seed: int | None = None
    methods: tuple[str, ...] = tuple(METHODS)
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
    if not (isinstance(config.generation_tokens, int) and config.generation_tokens >= 1):
        raise CompareError(f"--generation-tokens must be an integer ≥ 1; got {config.generation_tokens!r}")


def build_methods(job, dw, config: CompareConfig) -> dict[str, tuple[SteeringMethod, dict]]:
    """``key -> (method, spec)`` for the requested methods, each built by its entry of the registry
    (:data:`weight_steering.methods.COMPARISON_METHODS`); ``spec`` identifies the method in stage keys.

    The contrast activations are read once on every layer (steering-vectors) from the same persona
    contrast as dW (:func:`weight_steering.methods.contrast_pairs`), when an activation method asks for them.
    """
    context = MethodContext(job.model, job.tokenizer, job.behavior, job.rows, job.data_sha, job.base_hash,
                            layer_slice(job.model.config.num_hidden_layers, job.config.train.layer_fraction), dw,
                            f"dW ({config.family}, seed {config.seed})", config.n_contrast_pairs, config.reading, config.s_space_rank, job)
    return {key: METHODS[key].build(context) for key in config.methods}


def run_comparison(config: CompareConfig, loaded=None, command: str = "", job_config=None, dw_only: bool = False) -> dict:
    """Calibrate, evaluate and plot every method of ``config`` (see the module docstring).

    Args:
        loaded: ``(model, tokenizer)`` already in memory (tests); else ``config.model`` is loaded.
        job_config: the main job's :class:`~weight_steering.pipeline.RunConfig` for data and training
            sizes (default: the ``default`` preset); ``config`` overrides its behaviour, model, family, seed, rows and output.
        command: the command line recorded in the outputs.
        dw_only: stop once the comparison's dW is on disk (restored stages from the archive, adapters trained or
            reused) and return ``{"dw_dir"}``: the dW other recipes (ablation, hypotheses, export) start from, without
            touching any comparison result.

    Returns:
        ``{"methods": [...], "ratios": [...], "path", "dw_dir", ...}``: per method its strengths, KL per sign
        (calibration and audit split), calibration cost and :func:`weight_steering.analyse.method_effects`.

    Raises:
        CompareError: bad config. BehaviorError: the behaviour's prompts overlap a shipped set, such as the neutral
        calibration prompts (checked when it is loaded, before any model work). DeltaWeightsError, ModelNotAvailableError:
        as in the main job.
    """
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
            copy_finished_stages(job_dir, archived / "job", JOB_STAGES)
            copy_finished_stages(root, archived / "compare", ("",))

    run_config = job_config or preset_config()
    run_config = replace(run_config, behavior=config.behavior, model=config.model, dilemma_limit=config.dilemma_limit, out=config.out,
                         train=replace(run_config.train, family=config.family, seed=config.seed),
                         generation=replace(run_config.generation, seed=config.seed if config.data_seed is None else config.data_seed))
    model, tokenizer = loaded or (None, None)
    job = prepare_job(run_config, model, tokenizer)
    dw_dir = dw_stage(job)
    if dw_only:
        archive()  # the restored or new data and judge stages
        return {"dw_dir": dw_dir}
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

    results = []
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
        records = base_records + read_jsonl(directory / "records.jsonl")
        curve = [{"fraction": 0.0, "alpha": 0.0, "p95": 0.0, "ood_target": 0.0}]
        if method.continuous:
            curve += _curve(job, method, identity, config, root, rows, base_records, arms, measure, calibration_prompts)
        effects = method_effects(records, alpha_plus, alpha_minus, behavior=job.behavior)
        if gen_prompts:
            effects.update(generation_effects(base_generations + generations(key, method, (alpha_minus, alpha_plus), identity), alpha_plus, alpha_minus))
        measure_name = ood_measure(job.behavior)[0]
        for label in ("plus", "minus"):  # the calibrated points of the curve are the table's Δ
            curve.append({"fraction": 1.0, "alpha": arms[label]["alpha"], "p95": arms[label]["p95"],
                          "ood_target": effects.get(f"{measure_name}_{label}", {}).get("mean", float("nan"))})
        nll = read_json(directory / "nll.json")
        for label, alpha in (("plus", alpha_plus), ("minus", alpha_minus)):
            change = np.array(nll[str(alpha)]) - base_nll
            mean, low, high = bootstrap_ci(change, np.arange(len(change)))
            effects[f"nll_change_{label}"] = {"mean": mean, "ci_low": low, "ci_high": high}
        archive()
        results.append({"key": key, "name": method.name, "continuous": method.continuous, "plus": arms["plus"], "minus": arms["minus"],
                        "effects": effects, "curve": sorted(curve, key=lambda c: c["alpha"]),
                        "eval_seconds": read_json(directory / "timing.json")["seconds"],
                        "spec": {k: v for k, v in spec.items() if k in ("layers", "rank", "aggregator", "reading", "direction_agreement")},
                        "_records": records})
    ratios = _ratios(results, job.behavior)
    for r in results:
        del r["_records"]
    summary = {"behavior": job.behavior.name, "model": config.model, "config": config_record(config), "command": command,
               "device": str(job.model.device), "dtype": dtype_name(job.model.dtype),
               "n_rows": len(rows), "n_dilemma_rows": sum(r["eval"] == "dilemmas" for r in rows),
               "n_calibration_prompts": len(calibration_prompts), "n_audit_prompts": len(audit_prompts),
               "ood_target": dict(zip(("value", "sign"), dilemma_target(job.behavior))), "behavior_label": job.behavior.label,
               "ood_sets": [{"name": s.name, "description": s.description, "n_items": len(s.items)} for s in job.behavior.ood_sets],
               "ood_measure": ood_measure(job.behavior)[0], "generation_metric": job.behavior.generation_metric,
               "n_generation_prompts": len(gen_prompts), "judge_threshold": threshold,
               "judge_agreement": (job.judge or {}).get("agreement"), "methods": results, "ratios": ratios}
    from .report import plot_effect_vs_kl, render_comparison

    def write_result(directory: Path) -> None:
        write_json(directory / "comparison.json", summary)
        with atomic_write(directory / "comparison.md") as handle:
            handle.write(render_comparison(summary))
        plot_effect_vs_kl(summary, directory / "effect_vs_kl.png")

    run_dir = root / result_name(config)
    run_stage("comparison", run_dir, stable_hash({"config": config_record(config) | {"archive": None}}), write_result, force=True)
    archive()
    return {**summary, "path": run_dir, "dw_dir": dw_dir}


def config_record(config: CompareConfig) -> dict:
    """The config as recorded in ``comparison.json`` and in the result's key; ``name`` only when set, so results made
    before the option existed keep their bytes."""
    return {k: v for k, v in asdict(config).items() if not (k == "name" and v is None)}


def result_name(config: CompareConfig) -> str:
    """The folder name of one comparison's result: ``<family>-seed<s>``, with ``-data<d>`` when the data seed is fixed
    apart and ``-kl<target>`` at a KL budget other than 1 nat."""
    if config.name is not None:
        return config.name
    fixed = config.data_seed is not None and config.data_seed != config.seed
    return (f"{config.family}-seed{config.seed}" + (f"-data{config.data_seed}" if fixed else "")
            + (f"-kl{config.target:g}" if config.target != 1.0 else ""))


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


def ood_measure(behavior) -> tuple[str, str | None, str | None]:
    """``(effect name, metric, eval)`` of the behaviour's out-of-distribution measure, the y of the effect-vs-KL curve:
    its DailyDilemmas target (``ood_target``, action-stratified), else its OOD sets pooled per reply token
    (``ood_sets_per_token``, each set weighted equally), else ``("ood_target", None, None)`` (no OOD measure)."""
    value, _ = dilemma_target(behavior)
    if value is not None:
        return "ood_target", f"dilemmas_{value}", "dilemmas"
    if behavior.ood_sets:
        return "ood_sets_per_token", "ood_sets_per_token", "ood_pair"
    return "ood_target", None, None


def _ood_delta(records: list[dict], alpha: float, behavior) -> float:
    """The behaviour's OOD measure (:func:`ood_measure`) Δ (α − 0) in nats (NaN without one)."""
    _, metric, _ = ood_measure(behavior)
    if metric is None:
        return float("nan")
    values, _, strata = paired_rows(metric_frame(records), metric, alpha, 0.0)
    return stratified_mean(values, strata)


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
                           "ood_target": _ood_delta(base + read_jsonl(directory / "records.jsonl"), alpha, job.behavior)})
    return points


def _ratios(results: list[dict], behavior) -> list[dict]:
    """dW's spread (Δ at α₊ − Δ at α₋) over each other method's, paired over identical rows, with a 95% CI:
    for the behaviour's DailyDilemmas target (action-stratified), its OOD sets pooled per reply token (each set
    weighted equally) and, where the behaviour has held-out rows, for the framing-controlled ID score (the opinion
    framing alone when no control was scored) and the paired-completion probe per reply token."""
    by_key = {r["key"]: r for r in results}
    if "dW" not in by_key:
        return []
    frames = {key: metric_frame(result["_records"]) for key, result in by_key.items()}
    value, _ = dilemma_target(behavior)
    scored = set(frames["dW"]["metric"])
    measures = {"id": "id_controlled" if "id_controlled" in scored else "id", "id_per_token": "id_per_token", "ood_sets": "ood_sets_per_token"}
    if value:
        measures = {"ood_target": f"dilemmas_{value}", **measures}
    out = []
    for measure, metric in measures.items():
        if metric not in set(frames["dW"]["metric"]):
            continue

        def spread(key, metric=metric):
            result = by_key[key]
            return paired_rows(frames[key], metric, result["plus"]["alpha"], result["minus"]["alpha"])

        numerator, clusters, strata = spread("dW")
        for key, result in by_key.items():
            if key == "dW":
                continue
            denominator, other_clusters, _ = spread(key)
            if not np.array_equal(clusters, other_clusters):
                raise ValueError(f"dW and {key} were not scored on identical rows")
            ratio, low, high = ratio_ci(numerator, denominator, clusters, strata=strata)
            out.append({"measure": measure, "metric": metric, "method": key, "name": result["name"], "ratio": ratio, "ci_low": low,
                        "ci_high": high, "dw_spread": stratified_mean(numerator, strata), "method_spread": stratified_mean(denominator, strata)})
    return out


# measures of the across-seed table: name -> where it is in a method's result
SEED_MEASURES = ("alpha_minus", "alpha_plus", "audit_p95_minus", "audit_p95_plus", "id_controlled_minus", "id_controlled_plus",
                 "id_controlled_spread", "id_neutral_plus", "ood_target_minus", "ood_target_plus", "ood_target_spread",
                 "action_bias_plus", "nll_change_minus", "nll_change_plus", "si_k2")


# behaviours with OOD sets of paired completions (and generation scores): the measures of their across-seed table
PAIR_SEED_MEASURES = ("alpha_minus", "alpha_plus", "audit_p95_minus", "audit_p95_plus", "id_spread", "id_per_token_plus",
                      "id_per_token_minus", "id_per_token_spread", "ood_sets_spread", "ood_sets_per_token_plus", "ood_sets_per_token_minus",
                      "ood_sets_per_token_spread", "generalisation_ratio_per_token", "generalisation_ratio_summed", "gen_id_metric_spread",
                      "gen_ood_metric_spread", "gen_id_judged_spread", "gen_ood_judged_spread", "action_bias_plus", "nll_change_minus",
                      "nll_change_plus")
# dW against each other method, per seed (dW − method): the OOD effect and the generalisation ratio
ADVANTAGE_MEASURES = ("ood_sets_per_token_spread", "ood_sets_spread", "generalisation_ratio_per_token", "gen_ood_metric_spread")


class SeedSummaryError(ValueError):
    """Comparisons that cannot be summarised together (different settings, behaviours mixed, a seed twice)."""


def load_comparisons(paths) -> list[dict]:
    """Every ``comparison.json`` under ``paths`` (files, or folders searched recursively, e.g. the archive).

    Raises:
        SeedSummaryError: a path that does not exist, or no comparison found.
    """
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise SeedSummaryError(f"{path} does not exist; give comparison result folders or the archive folder")
        found += [path] if path.is_file() else sorted(path.rglob("comparison.json"))
    if not found:
        raise SeedSummaryError(f"no comparison.json under {', '.join(map(str, paths))}; run `wsteer compare` first")
    return [read_json(p) for p in found]


def _method_value(method: dict, measure: str) -> float:
    """One number of a method's comparison result: a strength or audit KL, an effect's mean, or a generalisation ratio
    (``generalisation_ratio_per_token``: OOD spread / ID spread, both pooled per reply token; ``_summed``: both summed
    over the reply, which a longer OOD reply inflates)."""
    if measure.startswith("generalisation_ratio_"):
        ood, idm = ("ood_sets_per_token_spread", "id_per_token_spread") if measure.endswith("per_token") else ("ood_sets_spread", "id_spread")
        return _method_value(method, ood) / _method_value(method, idm)
    if measure.startswith(("alpha_", "audit_p95_")):
        name, arm = measure.rsplit("_", 1)
        return float(method[arm]["alpha" if name == "alpha" else "audit_p95"])
    entry = method["effects"].get(measure)
    return float("nan") if entry is None else float(entry["mean"])


def _row_significant(method: dict, measure: str) -> bool | None:
    entry = method["effects"].get(measure)
    if not isinstance(entry, dict) or "ci_low" not in entry:
        return None
    return bool(entry["ci_low"] > 0 or entry["ci_high"] < 0)


def method_label(names: list[str]) -> str:
    """One label for a method across seeds: its per-seed names without the seed; where they still differ (the best
    layer is chosen per seed), the differing parts side by side, e.g. ``CAA (layer 0 / layer 10 / layer 26, by seed)``."""
    names = [re.sub(r",? seed \d+", "", n) for n in names]
    if len(set(names)) == 1:
        return names[0]
    parts = [re.match(r"(.*?) \((.*)\)$", n) for n in names]
    if all(parts) and len({m[1] for m in parts}) == 1:
        return f"{parts[0][1]} ({' / '.join(m[2] for m in parts)}, by seed)"
    return " / ".join(names) + " (by seed)"


def summarize_seeds(summaries: list[dict]) -> list[dict]:
    """The comparison across seeds, one behaviour at a time: per method and measure the per-seed values and a
    Student-t 95% interval over the seed means (:func:`weight_steering.statistics.seed_interval`; 3 seeds: ±2.5 sd).

    Args:
        summaries: ``comparison.json`` contents (:func:`load_comparisons`); the seed of each is its ``config.seed``.

    Returns:
        One dict per behaviour: ``behavior``, ``seeds``, ``data_seeds``, ``rows`` (``method``, ``name``, ``measure``,
        ``per_seed`` values, ``row_significant`` per seed (its row-level CI excludes 0), ``mean``, ``ci_low``, ``ci_high``,
        ``seed_independent``: the method gave identical values at every seed (the prompt methods), so the interval is
        its row-level 95% CI rather than a t-interval over seeds),
        ``ratios`` (dW's spread over each method's, per seed and across), ``advantages`` (behaviours with OOD sets: dW's
        value minus each method's per seed, :data:`ADVANTAGE_MEASURES`, with a t-interval over seeds: the paired
        difference) and ``agreement`` (per seed: cos(CAA, PCA) and the per-pair sign agreement of both directions,
        averaged over the slice layers). For behaviours with OOD sets the rows also hold the generalisation ratio
        OOD spread / ID spread per seed (per reply token, and summed).

    Raises:
        SeedSummaryError: two comparisons of one behaviour with the same seed, or with different targets,
            tolerances, families or methods.
    """
    from .statistics import seed_interval

    by_behavior: dict[str, list[dict]] = {}
    for summary in summaries:
        by_behavior.setdefault(summary["behavior"], []).append(summary)
    out = []
    for behavior, group in sorted(by_behavior.items()):
        group = sorted(group, key=lambda s: s["config"]["seed"])
        seeds = [s["config"]["seed"] for s in group]
        if len(set(seeds)) != len(seeds):
            raise SeedSummaryError(f"{behavior}: seed {seeds} appears twice; give one comparison per seed")
        for field in ("target", "tolerance", "family", "model"):
            if len({stable_hash(s["config"][field]) for s in group}) > 1:
                raise SeedSummaryError(f"{behavior}: the comparisons differ in {field}; summarise like with like")
        keys = [m["key"] for m in group[0]["methods"]]
        if any([m["key"] for m in s["methods"]] != keys for s in group):
            raise SeedSummaryError(f"{behavior}: the comparisons ran different methods; rerun with the same --methods")
        set_names = [o["name"] for o in group[0].get("ood_sets", [])]
        wanted = SEED_MEASURES if not set_names else (
            *PAIR_SEED_MEASURES, *(f"ood_{name}_per_token_spread" for name in set_names), *(f"ood_{name}_spread" for name in set_names))
        rows = []
        for index, key in enumerate(keys):
            methods = [s["methods"][index] for s in group]
            measures = [m for m in wanted if not all(np.isnan([_method_value(x, m) for x in methods]))]
            # A method no seed changes (the prompts: no data, no training) gives identical values at every seed; an interval
            # over seeds would have width 0, so its interval is the row-level CI of one seed instead.
            seed_independent = len(methods) > 1 and all(len({_method_value(x, m) for x in methods}) == 1 for m in measures)
            for measure in measures:
                values = [_method_value(m, measure) for m in methods]
                interval = seed_interval(values)
                if seed_independent:
                    entry = methods[0]["effects"].get(measure) if measure in methods[0]["effects"] else None
                    low, high = (entry["ci_low"], entry["ci_high"]) if isinstance(entry, dict) and "ci_low" in entry else (float("nan"),) * 2
                    interval = {**interval, "ci_low": float(low), "ci_high": float(high)}
                rows.append({"method": key, "name": method_label([m["name"] for m in methods]), "measure": measure, "per_seed": values,
                             "row_significant": [_row_significant(m, measure) for m in methods], "seed_independent": seed_independent,
                             **interval})
        ratios = []
        for (measure, method) in dict.fromkeys((r["measure"], r["method"]) for r in group[0]["ratios"]):
            values = [next((r["ratio"] for r in s["ratios"] if (r["measure"], r["method"]) == (measure, method)), float("nan")) for s in group]
            ratios.append({"measure": measure, "method": method, "per_seed": values, **seed_interval(values)})
        advantages = []
        if set_names and "dW" in keys:
            dw_index = keys.index("dW")
            for measure in ADVANTAGE_MEASURES:
                dw_values = np.array([_method_value(s["methods"][dw_index], measure) for s in group])
                if np.isnan(dw_values).all():
                    continue
                for index, key in enumerate(keys):
                    if key == "dW":
                        continue
                    values = dw_values - np.array([_method_value(s["methods"][index], measure) for s in group])
                    advantages.append({"measure": measure, "method": key, "name": method_label([s["methods"][index]["name"] for s in group]),
                                       "per_seed": values.tolist(), **seed_interval(values)})
        agreement = []
        for s in group:
            pca = next((m for m in s["methods"] if m["key"] == "pca_slice"), None)
            if pca is None or "direction_agreement" not in pca["spec"]:
                continue
            layers = [str(layer) for layer in pca["spec"]["layers"]]
            table = pca["spec"]["direction_agreement"]
            agreement.append({"seed": s["config"]["seed"], **{name: float(np.mean([table[layer][name] for layer in layers]))
                                                               for name in ("cos_caa_pca", "sign_agreement_caa", "sign_agreement_pca")}})
        out.append({"behavior": behavior, "seeds": seeds, "data_seeds": [s["config"]["data_seed"] for s in group],
                    "target": group[0]["config"]["target"], "rows": rows, "ratios": ratios, "advantages": advantages, "agreement": agreement,
                    "ood_sets": set_names, "devices": sorted({f"{s.get('device', 'cpu')} {s.get('dtype', 'float32')}" for s in group})})
    return out

