"""``wsteer``: the command line over the same functions as the Python API."""

from __future__ import annotations

import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .artifacts import StorageError, check_output_folder
from .behaviors import BehaviorError, available_behaviors
from .data import DataGateError
from .diff import DeltaWeightsError
from .evaluate import AnswerTokenError, EvalError
from .models import DEFAULT_MODEL, DeviceError, ModelNotAvailableError
from .steer import check_alpha_grid
from .train import AdapterFamilyError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Weight steering: dW = θ⁺ − θ⁻ from persona-contrast adapters.")
console = Console()

# Options that many commands share, declared once (typer reads Annotated metadata).
DwPath = Annotated[str, typer.Option(help="path of a dW.safetensors (or its directory)")]
DwModel = Annotated[str, typer.Option(help="the model the dW was made for")]
OutRoot = Annotated[str, typer.Option(help="output root")]
Sampler = Annotated[str, typer.Option(help="how the persona-contrast data are sampled: cached (the cached decoder in batches of 200) "
                                           "or transformers (model.generate in batches of 50, as every archived data stage was: "
                                           "pass it to resume from docs/compare/archive or docs/sweep/cells)")]
Device = Annotated[str, typer.Option(help="cpu, cuda or cuda:<i> (default: cuda when present, else cpu)")]
Dtype = Annotated[str, typer.Option(help="float32, bfloat16 or float16 (default: bfloat16 on CUDA, float32 on CPU)")]
KNOWN_ERRORS = (StorageError, ModelNotAvailableError, DeviceError, BehaviorError, AdapterFamilyError, DataGateError, DeltaWeightsError,
                AnswerTokenError, EvalError, FileNotFoundError, ValueError)


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(2)


def _machine(device: str | None, dtype: str | None) -> None:
    """Check ``--device`` and ``--dtype`` against this machine before anything is read or loaded (raises DeviceError)."""
    from .models import resolve_device, resolve_dtype

    resolve_dtype(dtype, resolve_device(device))


def _read_dw(path: str):
    """The dW at ``path``, read and checked for damage (truncated, pickled, non-finite, no sidecar) before any model
    is loaded, so a bad file fails in a second; :func:`~weight_steering.diff.check_fits` checks it against the model."""
    from .diff import load_dw

    return load_dw(path)


def _check_assessment(dw: str, alphas: str, out: str, device: str | None, dtype: str | None) -> tuple[float, ...]:
    """The checks of an assessment of a dW, before any model is loaded: the device and dtype, the α grid (must include 0),
    the output folder, and the dW file itself. Returns the parsed α grid."""
    _machine(device, dtype)
    parsed = _parse_alphas(alphas, require_zero=True)
    check_output_folder(out)
    _read_dw(dw)
    return parsed


def _parse_numbers(text: str, option: str, kind: type = float, example: str = "-1,0,1") -> tuple:
    """A comma-separated list option: every item a finite ``kind`` (float or int), none repeated, none missing.

    Raises:
        ValueError: naming the option and the offending item, with an example of a valid value.
    """
    items = [part.strip() for part in text.split(",")]
    values = []
    for item in items:
        try:
            value = kind(item)
        except ValueError:
            raise ValueError(f"{option}: {item!r} is not {'an integer' if kind is int else 'a number'}; "
                             f"give comma-separated {'integers' if kind is int else 'numbers'} such as {example}") from None
        if not math.isfinite(value):
            raise ValueError(f"{option}: {item!r} is not finite; give comma-separated numbers such as {example}")
        if value in values:
            raise ValueError(f"{option}: {item!r} is given twice; give each value once, such as {example}")
        values.append(value)
    return tuple(values)


def _parse_alphas(text: str | None, require_zero: bool = False) -> tuple[float, ...] | None:
    if text is None:
        return None
    alphas = _parse_numbers(text, "--alphas", float, "-2,-1,0,1,2")
    return check_alpha_grid(alphas, f"--alphas {text}: the unsteered reference of every Δ") if require_zero else alphas


def _parse_threshold(text: str) -> float | str:
    if text in ("median", "labels"):
        return text
    try:
        value = float(text)
    except ValueError as err:
        raise typer.BadParameter(f"--judge-threshold must be a number of nats, 'labels' or 'median'; got {text!r}") from err
    if value != value or value in (float("inf"), float("-inf")):
        raise typer.BadParameter(f"--judge-threshold must be finite; got {text!r}")
    return value


@app.command()
def run(
    behavior: str = typer.Option("sycophancy", help=f"behaviour name ({', '.join(available_behaviors())}) or a behaviour .json path"),
    model: str = typer.Option(DEFAULT_MODEL, help="embedded name, local path or Hugging Face id"),
    family: str = typer.Option("lora", help="adapter family"),
    seed: int = typer.Option(0, help="training seed (adapter init, split, batch order)"),
    data_seed: int = typer.Option(0, help="sampling seed of the persona-contrast data"),
    preset: str = typer.Option("default", help="size preset: default (≤ 20 min on 2 CPU cores), smoke, paper (GPU)"),
    n_samples: int = typer.Option(None, help="responses per (prompt, persona, sign)"),
    max_new_tokens: int = typer.Option(None, help="response length in tokens"),
    epochs: float = typer.Option(None, help="training epochs"),
    learning_rate: float = typer.Option(None, help="adapter learning rate"),
    alphas: str = typer.Option(None, help="comma-separated α grid, e.g. -2,-1,0,1,2"),
    dilemma_limit: int = typer.Option(None, help="evaluate only the first n DailyDilemmas dilemmas"),
    out: OutRoot = "out",
    force: bool = typer.Option(False, help="recompute every stage"),
    filter_pairs: bool = typer.Option(False, help="train only on pairs whose positive response the judge says shows the behaviour and whose negative does not"),
    judge: bool = typer.Option(True, help="judge the generated responses for the behaviour (behaviour rate per sign)"),
    judge_threshold: str = typer.Option("labels", help="judge log-odds threshold in nats, 'labels' (calibrated on the shipped hand labels) or 'median'"),
    sampler: Sampler = "cached",
    device: Device = None,
    dtype: Dtype = None,
    thinking: bool = typer.Option(False, help="a reasoning template (Qwen3) with thinking on in every stage; off by default"),
    target_modules: str = typer.Option(None, help="comma-separated module names to adapt (default: q,k,v,o,gate,up,down _proj)"),
):
    """Run the main job: persona data → θ⁺/θ⁻ adapters → dW → α·dW evaluation → report."""
    from .data import sampler_settings
    from .pipeline import preset_config, run_main_job

    _start_logging()
    try:
        generation = {"n_samples": n_samples, "max_new_tokens": max_new_tokens, "seed": data_seed, **sampler_settings(sampler)}
        train = {"family": family, "seed": seed, "epochs": epochs, "learning_rate": learning_rate,
                 "target_modules": tuple(_split(target_modules)) if target_modules else None}
        config = preset_config(
            preset, behavior=behavior, model=model, alphas=_parse_alphas(alphas), dilemma_limit=dilemma_limit, out=out, force=force,
            filter_pairs=filter_pairs, judge=judge, judge_threshold=_parse_threshold(judge_threshold), device=device, dtype=dtype, thinking=thinking,
            generation={k: v for k, v in generation.items() if v is not None}, train={k: v for k, v in train.items() if v is not None},
        )
        result = run_main_job(config, command="wsteer " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    except KNOWN_ERRORS as err:
        _fail(err)
    table = Table(title="stage timings")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("reused")
    for stage, info in result["timings"].items():
        table.add_row(stage, f"{info['seconds']:.1f}", "yes" if info["reused"] else "")
    console.print(table)
    contrasts = Table(title="contrasts (paired, 95% bootstrap CI)")
    for col in ("metric", "contrast", "mean", "95% CI"):
        contrasts.add_column(col)
    for c in result["summary"]["contrasts"]:
        contrasts.add_row(c["metric"], c["contrast"], f"{c['mean']:+.3f}", f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]")
    console.print(contrasts)
    console.print(f"report: {result['report']}")
    typer.echo(f"dW: {result['dw_path']}")  # plain, never wrapped: recipes read the last line


def _start_logging() -> str:
    """Progress logs of a long command to stderr; returns the command line to record in its outputs."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return "wsteer " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@app.command()
def sweep(
    families: str = typer.Option("all", help="comma-separated adapter families, or 'all'"),
    seeds: str = typer.Option("0,1,2", help="comma-separated training seeds"),
    behaviors: str = typer.Option("sycophancy", help="comma-separated behaviours"),
    model: str = typer.Option(DEFAULT_MODEL, help="embedded name, local path or Hugging Face id"),
    preset: str = typer.Option("default", help="size preset of every cell: default, smoke, paper"),
    data_seed: int = typer.Option(None, help="fix one data-sampling seed for every cell (default: each cell samples its data with its own seed)"),
    dilemma_limit: int = typer.Option(None, help="evaluate only the first n DailyDilemmas dilemmas"),
    executor: str = typer.Option("local", help="local (one process) or ray (one Ray task per cell; one per GPU)"),
    out: OutRoot = "out",
    force: bool = typer.Option(False, help="recompute every cell"),
    rank_only: bool = typer.Option(False, help="compute nothing: rank the finished cells of the grid (a partial sweep); with --archive, "
                                   "rank the archived cells of the grid as recorded"),
    archive: str = typer.Option(None, help="folder of finished cells' results (markers + records): restored first, each new cell copied in"),
    sampler: Sampler = "cached",
    device: Device = None,
    dtype: Dtype = None,
):
    """Families × seeds × behaviours: train, diff and evaluate each cell (resumable), then rank the families."""
    from .data import sampler_settings
    from .pipeline import preset_config
    from .sweep import SweepError, archived_cells, run_sweep, write_ranking
    from .train import ADAPTER_FAMILIES

    command = _start_logging()
    try:
        names = list(ADAPTER_FAMILIES) if families == "all" else _split(families)
        seed_list = list(_parse_numbers(seeds, "--seeds", int, "0,1,2"))
        if len(set(names)) != len(names):
            raise SweepError(f"--families names a family twice ({families!r}); give each once")
        config = preset_config(preset, model=model, dilemma_limit=dilemma_limit, out=out, force=force,
                               generation=sampler_settings(sampler), device=device, dtype=dtype)
        started = time.perf_counter()
        if rank_only and archive:
            cells, n_computed = archived_cells(archive, _split(behaviors), names, seed_list), 0
        else:
            cells, n_computed = run_sweep(config, _split(behaviors), names, seed_list, executor, compute=not rank_only, archive=archive,
                                          data_seed=data_seed)
        if not cells:
            raise SweepError("no finished cells to rank; run the sweep without --rank-only first")
        paths = write_ranking(config, cells, command, time.perf_counter() - started, n_computed)
    except (*KNOWN_ERRORS, SweepError) as err:
        _fail(err)
    console.print(paths["markdown"].read_text())
    console.print(f"ranking: {paths['markdown']}\nforest plot: {paths['forest']}")


@app.command()
def summarize(runs: list[str] = typer.Argument(..., help="main-job run folders (out/<behaviour>/<model>/<family>-seed<s>) or their run.json")):
    """Headline table of finished main-job runs: primary scores (framing-controlled ID, action-stratified OOD) with CIs."""
    from pathlib import Path

    from .artifacts import read_json
    from .report import render_run_summary

    try:
        loaded = []
        for run in runs:
            path = Path(run) / "run.json" if Path(run).is_dir() else Path(run)
            if not path.is_file():
                raise FileNotFoundError(f"no run.json at {path}; give the folder `wsteer run` printed its report in")
            run_json = read_json(path)
            missing = [k for k in ("behavior", "family", "seed", "n_pairs", "norm_dw", "summary", "config") if k not in run_json]
            if missing:
                raise ValueError(f"{path} is not a finished main job's run.json (no {', '.join(missing)}); "
                                 "give the run.json `wsteer run` wrote, or rerun that job")
            loaded.append(run_json)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(render_run_summary(loaded), nl=False)  # plain text: a markdown table must not be wrapped


@app.command()
def vignettes(
    dw: DwPath,
    model: DwModel = DEFAULT_MODEL,
    alphas: str = typer.Option("-1,0,1", help="comma-separated α grid (must include 0)"),
    intent: list[str] = typer.Option(None, help="foundation=±1: intended direction of wrongness at α>0 (repeat); "
                                     "default: the vignette target of the dW's behaviour file (authority: Authority=-1)"),
    k: float = typer.Option(2.0, help="SI penalty on broken items"),
    pmass_floor: float = typer.Option(0.5, help="cells whose format mass is below this are NaN (counted)"),
    limit: int = typer.Option(None, help="only the first n vignettes"),
    out: OutRoot = "out",
    device: Device = None,
    dtype: Dtype = None,
):
    """Moral-foundation vignettes under α·dW: bare table, Δlogit per foundation, Surgical Informedness."""
    from .eval_data import FOUNDATIONS
    from .assess import run_vignettes

    def run():
        intents = {} if intent else None
        for item in intent or []:
            name, _, sign = item.partition("=")
            if name not in FOUNDATIONS or sign not in ("1", "+1", "-1"):
                raise ValueError(f"--intent must look like Authority=-1 with a foundation in {FOUNDATIONS}; got {item!r}")
            intents[name] = int(sign)
        return run_vignettes(dw, model, _check_assessment(dw, alphas, out, device, dtype), intents, k, pmass_floor, out, limit,
                             device=device, dtype=dtype)

    _show_report(run, "vignettes.md")


@app.command()
def degradation(
    dw: DwPath,
    model: DwModel = DEFAULT_MODEL,
    alphas: str = typer.Option("-1,0,1", help="comma-separated α grid (must include 0)"),
    n_tokens: int = typer.Option(32, help="greedy tokens per neutral prompt for the KL"),
    out: OutRoot = "out",
    device: Device = None,
    dtype: Dtype = None,
):
    """Degradation under α·dW: neutral reference-answer NLL and KL(steered ‖ base) mean / p95 / max."""
    from .assess import run_degradation

    _show_report(lambda: run_degradation(dw, model, _check_assessment(dw, alphas, out, device, dtype), n_tokens, out,
                                                   device=device, dtype=dtype), "degradation.md")


@app.command()
def ablate(
    dw: DwPath,
    model: DwModel = DEFAULT_MODEL,
    alpha: float = typer.Option(1.0, help="steering strength at which every variant is scored"),
    groups: str = typer.Option("all", help="comma-separated variant groups: layer, module, svd, base_svd, native (anchors always)"),
    dilemma_limit: int = typer.Option(None, help="only the first n DailyDilemmas dilemmas (faster on a CPU)"),
    seed: int = typer.Option(0, help="seed of the norm-matched random controls"),
    activation_k: int = typer.Option(4, help="dimension of the persona-contrast PCA subspace for the alignment table"),
    n_controls: int = typer.Option(5, help="norm-matched random control draws per keep variant"),
    n_within: int = typer.Option(5, help="energy-matched subsets of dW's own singular directions per SVD keep variant (within-dW null)"),
    candidates: str = typer.Option("", help="causal check: comma-separated write-side candidates of `wsteer hypotheses`; dW's write side is scored inside and outside each"),
    k: int = typer.Option(8, help="rank of the --candidates subspaces"),
    out: OutRoot = "out",
    device: Device = None,
    dtype: Dtype = None,
):
    """Where does dW live: retained = Δ(variant)/Δ(full) per layer, module and singular-direction variant."""
    from .ablate import AblationError, check_ablation_options
    from .assess import run_ablation
    from .hypotheses import CANDIDATES, HypothesisError

    def run():
        chosen = None if groups == "all" else tuple(_split(groups))
        check_ablation_options(chosen, n_controls, n_within)
        names = tuple(_split(candidates)) if candidates.strip() else ()
        unknown = [n for n in names if n not in CANDIDATES]
        if unknown or k < 1:
            raise HypothesisError(f"--candidates must name candidates of {', '.join(CANDIDATES)} and --k be ≥ 1; got {list(unknown)}, k = {k}")
        check_output_folder(out)
        _machine(device, dtype)
        _read_dw(dw)
        return run_ablation(dw, model, alpha, chosen, dilemma_limit, seed, out, activation_k=activation_k, n_controls=n_controls,
                            n_within=n_within, candidates=names, k=k, device=device, dtype=dtype)

    _show_report(run, "ablation.md", (AblationError, HypothesisError))


@app.command()
def compare(
    behavior: str = typer.Option("honesty", help="behaviour whose dW and persona contrast are compared"),
    model: str = typer.Option(DEFAULT_MODEL, help="embedded name, local path or Hugging Face id"),
    family: str = typer.Option("lora", help="adapter family of the dW (the main job's; trained if missing)"),
    seed: int = typer.Option(0, help="training seed of the dW, and its data-sampling seed unless --data-seed is given"),
    data_seed: int = typer.Option(None, help="fix the data-sampling seed (default: the same as --seed)"),
    methods: str = typer.Option("all", help="comma-separated: dW, persona, engineered, caa_slice, pca_slice, caa_all, caa_increments, caa_best, s_space"),
    target: float = typer.Option(1.0, help="p95 KL target in nats (iso-KL calibration)"),
    tolerance: float = typer.Option(0.05, help="accepted |p95 − target| in nats"),
    n_tokens: int = typer.Option(32, help="greedy tokens per calibration prompt"),
    curve_fractions: str = typer.Option("0.25,0.5", help="extra curve points as fractions of each calibrated α ('' for none)"),
    s_space_rank: int = typer.Option(8, help="r of the S-space projection"),
    dilemma_limit: int = typer.Option(None, help="only the first n DailyDilemmas dilemmas"),
    prompt_limit: int = typer.Option(None, help="only the first n prompts of each neutral split (smoke runs)"),
    generation_tokens: int = typer.Option(48, help="greedy tokens per reply in the generation scores (behaviours with OOD sets)"),
    out: OutRoot = "out",
    archive: str = typer.Option(None, help="folder keeping every small finished stage (committed: resume after a stop, anywhere)"),
    name: str = typer.Option(None, help="the result folder's name (default <family>-seed<s>[-kl<target>]): keep a run with other methods apart"),
    dw_only: bool = typer.Option(False, "--dw-only", help="only restore the archived stages and train (or reuse) the dW; print its folder and stop"),
    sampler: Sampler = "cached",
    device: Device = None,
    dtype: Dtype = None,
):
    """Weight steering against prompting and activation steering at the same p95 KL: table, ratios, effect-vs-KL PNG."""
    from .compare import METHODS, CompareConfig, CompareError, run_comparison
    from .data import sampler_settings
    from .pipeline import preset_config
    from .eval_data import EvalDataError

    command = _start_logging()
    try:
        fractions = _parse_numbers(curve_fractions, "--curve-fractions", float, "0.25,0.5") if curve_fractions.strip() else ()
        config = CompareConfig(behavior=behavior, model=model, family=family, seed=seed, data_seed=data_seed,
                               methods=tuple(METHODS) if methods == "all" else tuple(_split(methods)), target=target,
                               tolerance=tolerance, n_tokens=n_tokens, curve_fractions=fractions, s_space_rank=s_space_rank,
                               dilemma_limit=dilemma_limit, prompt_limit=prompt_limit, generation_tokens=generation_tokens, out=out,
                               archive=archive, name=name)
        result = run_comparison(config, command=command, dw_only=dw_only,
                                job_config=preset_config(generation=sampler_settings(sampler), device=device, dtype=dtype))
    except (*KNOWN_ERRORS, CompareError, EvalDataError) as err:
        _fail(err)
    if dw_only:
        typer.echo(str(result["dw_dir"]))
        return
    console.print((result["path"] / "comparison.md").read_text())
    console.print(f"effect vs KL: {result['path'] / 'effect_vs_kl.png'}")


@app.command()
def export(
    dw: DwPath,
    out: str = typer.Option(..., help="new folder for the adapter"),
    format: str = typer.Option("peft", "--format", help="peft (PeftModel.from_pretrained) or gguf (a llama.cpp LoRA, out/adapter.gguf); α is the adapter's scale"),
    rank: int = typer.Option(None, help="keep this many singular directions per tensor (default: exact, the numerical rank)"),
    energy: float = typer.Option(None, help="keep the fewest directions holding this share of each tensor's Σ S²"),
    model: DwModel = DEFAULT_MODEL,
    kl_prompts: int = typer.Option(20, help="neutral prompts for the KL of a truncated export against the exact dW"),
    force: bool = typer.Option(False, help="replace an existing adapter in --out"),
    device: Device = None,
    dtype: Dtype = None,
):
    """Export a dW as a LoRA adapter; a truncated one reports the energy kept and its p95 KL to the exact dW at α = 1."""
    from .artifacts import read_json
    from .diff import check_fits
    from .eval_data import load_neutral, neutral_split
    from .export import ExportError, check_export_request, export_dw, export_kl
    from .models import load_model

    try:
        check_export_request(out, format, rank, energy, force)
        _machine(device, dtype)
        delta = _read_dw(dw)
        loaded_model, tokenizer = load_model(model, device, dtype)
        check_fits(delta, loaded_model)
        path = export_dw(delta, loaded_model, out, format, rank, energy, force)
        info = read_json(path / "export.json")
        console.print(f"exported {info['n_tensors']} tensors to {path} ({info['mode']}; largest rank {info['max_rank']}, "
                      f"lowest energy kept {info['min_energy']:.4f}, max |B·A − dW| {info['max_abs_error']:.2e})")
        if rank is not None or energy is not None:
            prompts = [p["instruction"] for p in neutral_split(load_neutral())[0]][:kl_prompts]
            kl = export_kl(loaded_model, tokenizer, delta, path, prompts)
            console.print(f"KL(export ‖ exact dW) at α = 1 on {kl['n_prompts']} neutral prompts: p95 {kl['p95']:.4f}, mean {kl['mean']:.4f} nats")
    except (*KNOWN_ERRORS, ExportError) as err:
        _fail(err)


@app.command()
def monitor(
    dw: str = typer.Option(..., help="path of the behaviour's dW.safetensors (or its directory)"),
    finetune: str = typer.Option(..., help="PEFT adapter folder or safetensors checkpoint of the same base model"),
    unrelated: list[str] = typer.Option(None, help="dW of an unrelated behaviour, the second null (repeat the option)"),
    model: str = typer.Option(DEFAULT_MODEL, help="the base model"),
    margin: float = typer.Option(0.0, help="how far above every unrelated dW's cosine counts as aligned"),
    device: Device = None,
    dtype: Dtype = None,
):
    """Does a fine-tune move along dW? cos(Δ, dW) overall, per layer and module, against random directions and unrelated dW."""
    from .diff import check_fits
    from .models import load_model
    from .monitor import MonitorError, finetune_delta
    from .monitor import monitor as run_monitor

    try:
        if not math.isfinite(margin):
            raise MonitorError(f"--margin must be a finite number of cosine units; got {margin}")
        _machine(device, dtype)
        behaviour_dw = _read_dw(dw)
        nulls = {path: _read_dw(path) for path in unrelated or []}
        if not Path(finetune).exists():
            raise FileNotFoundError(f"--finetune {finetune} does not exist; give a PEFT adapter folder or a safetensors checkpoint")
        loaded_model, _ = load_model(model, device, dtype)
        for delta_weights in (behaviour_dw, *nulls.values()):
            check_fits(delta_weights, loaded_model)
        delta = finetune_delta(loaded_model, finetune)
        result = run_monitor(delta, behaviour_dw, nulls, margin=margin)
    except (*KNOWN_ERRORS, MonitorError) as err:
        _fail(err)
    null = result["random_null"]
    typer.echo(f"cos(Δ, dW) = {result['cos']:+.4f} over {result['n_tensors']} tensors; random directions {null['mean']:+.4f} ± "
               f"{null['sd']:.4f} (z = {result['z']:+.1f}, p99.9 {null['p999']:+.4f})")
    for label, value in result["unrelated"].items():
        typer.echo(f"  unrelated dW {label}: cos {value:+.4f}")
    typer.echo("per layer: " + ", ".join(f"{k} {v:+.3f}" for k, v in result["per_layer"].items()))
    typer.echo("per module: " + ", ".join(f"{k} {v:+.3f}" for k, v in result["per_module"].items()))
    typer.echo(result["verdict"])


@app.command("monitor-experiment")
def monitor_experiment(
    dw: str = typer.Option(..., help="the behaviour's dW folder (its training pairs are read next to it)"),
    unrelated: list[str] = typer.Option(None, help="dW of an unrelated behaviour, the second null (repeat the option)"),
    fractions: str = typer.Option("0,0.1,0.25,0.5,1", help="behaviour-inducing shares of the fine-tuning rows"),
    seeds: str = typer.Option("1000,1001,1002", help="fine-tune seeds (each draws the mixture and seeds the fine-tune); "
                              "none may be a dW's training seed, whose LoRA initialisation it would share"),
    n_rows: int = typer.Option(100, help="fine-tuning rows per cell"),
    model: str = typer.Option(DEFAULT_MODEL, help="the base model"),
    out: str = typer.Option("out", help="output root (cells in <out>/monitor/<dW folder>/)"),
    archive: str = typer.Option(None, help="folder keeping every finished cell (committed: resume after a stop, anywhere)"),
    device: Device = None,
    dtype: Dtype = None,
):
    """The monitoring experiment: LoRA fine-tunes on behaviour/neutral mixtures; does cos(Δ, dW) rise with the behaviour share?"""
    from .monitor import MonitorError, run_monitoring_experiment

    def run():
        fraction_list = _parse_numbers(fractions, "--fractions", float, "0,0.1,0.5,1")
        seed_list = _parse_numbers(seeds, "--seeds", int, "1000,1001,1002")
        _machine(device, dtype)
        return run_monitoring_experiment(dw, unrelated, fraction_list, seed_list, n_rows, model, out, archive, device=device, dtype=dtype)

    _show_report(run, "monitoring.md", (MonitorError,))


@app.command()
def hypotheses(
    dw: str = typer.Option(..., help="the dW folder (its training pairs, next to it, give the persona-contrast activations)"),
    k: int = typer.Option(8, help="rank of every candidate subspace"),
    candidates: str = typer.Option("all", help="comma-separated candidate names, or 'all'"),
    null_draws: int = typer.Option(100, help="random rank-k subspaces per layer (the null)"),
    model: DwModel = DEFAULT_MODEL,
    out: str = typer.Option("out", help="output root (results in <out>/hypotheses/<dW folder>-k<k>/)"),
    device: Device = None,
    dtype: Dtype = None,
):
    """Which base-model subspace predicts where dW lives? R_w, R_act and R_read per candidate against random subspaces."""
    from .hypotheses import HypothesisError, run_hypotheses

    def run():
        _machine(device, dtype)
        return run_hypotheses(dw, k, None if candidates == "all" else _split(candidates), null_draws, model, out, device=device, dtype=dtype)

    _show_report(run, "hypotheses.md", (HypothesisError,))


def _show_report(compute, filename: str, errors: tuple = ()) -> None:
    """Run ``compute() -> {"path", ...}`` and print the report ``filename`` it wrote, or fail with a clear message."""
    try:
        result = compute()
    except (*KNOWN_ERRORS, *errors) as err:
        _fail(err)
    console.print((result["path"] / filename).read_text())


def _print_summary(make_text, errors: tuple = ()) -> None:
    """Print ``make_text()`` (a markdown summary, unwrapped), or fail with a clear message on a known error."""
    try:
        text = make_text()
    except (*KNOWN_ERRORS, *errors) as err:
        _fail(err)
    typer.echo(text, nl=False)


@app.command("compare-seeds")
def compare_seeds(paths: list[str] = typer.Argument(..., help="comparison result folders, or a folder holding them (e.g. docs/compare/archive)")):
    """The iso-KL comparison across seeds: per-seed values and t-intervals over seed means, per behaviour."""
    from .compare import SeedSummaryError, load_comparisons, summarize_seeds
    from .report import render_seed_comparison

    _print_summary(lambda: render_seed_comparison(summarize_seeds(load_comparisons(paths))), (SeedSummaryError,))


@app.command("summarize-ablations")
def summarize_ablations(paths: list[str] = typer.Argument(..., help="finished `wsteer ablate` folders (one per dW; family and seed are read from the dW's folder name)")):
    """Where dW lives, across seeds: retained per seed and t-intervals over seeds, with random and within-dW nulls."""
    from .ablate import AblationError, load_ablations, summarize_ablation_seeds
    from .report import render_ablation_seeds

    _print_summary(lambda: render_ablation_seeds(summarize_ablation_seeds(load_ablations(paths))), (AblationError,))


@app.command("summarize-hypotheses")
def summarize_hypotheses(paths: list[str] = typer.Argument(..., help="finished `wsteer hypotheses` folders (or their hypotheses.json), one per dW")):
    """Which base-model subspace predicts where dW lives, across families and seeds: R_w per seed, t-intervals, rank agreement."""
    from .hypotheses import HypothesisError, load_hypotheses
    from .hypotheses import summarize_hypotheses as summarize
    from .report import render_hypothesis_seeds

    _print_summary(lambda: render_hypothesis_seeds(summarize(load_hypotheses(paths))), (HypothesisError,))


@app.command()
def generate(
    dw: DwPath,
    prompt: str = typer.Option(..., help="user message"),
    alpha: list[float] = typer.Option([-1.0, 0.0, 1.0], help="one or more α (repeat the option)"),
    model: DwModel = DEFAULT_MODEL,
    max_new_tokens: int = typer.Option(80),
    device: Device = None,
    dtype: Dtype = None,
):
    """Greedy generations of one prompt under α·dW, for a quick look."""
    from .diff import check_fits
    from .models import load_model
    from .steer import check_alpha, steer
    from .chat import generate_text

    try:
        if max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be ≥ 1; got {max_new_tokens}")
        for a in alpha:
            check_alpha(a)
        _machine(device, dtype)
        delta = _read_dw(dw)
        loaded_model, tokenizer = load_model(model, device, dtype)
        check_fits(delta, loaded_model)
        for a in alpha:
            with steer(loaded_model, delta, a):
                console.print(f"[bold]α = {a:+g}[/]: {generate_text(loaded_model, tokenizer, prompt, max_new_tokens)}\n")
    except KNOWN_ERRORS as err:
        _fail(err)


@app.command()
def behaviors():
    """List the shipped behaviours."""
    from .behaviors import load_behavior

    for name in available_behaviors():
        b = load_behavior(name)
        probe = "no held-out probe" if b.held_out is None else (
            f"{len(b.held_out.items)} held-out paired completions" if b.held_out.kind == "completion_pair"
            else f"{len(b.held_out.claims)} held-out claims{' (opinion + neutral framing)' if b.held_out.control_template else ''}")
        targets = ", ".join(t.label for t in b.ood_targets) or "no DailyDilemmas/vignette target"
        sets = f"; OOD sets {', '.join(f'{o.name} ({len(o.items)})' for o in b.ood_sets)}" if b.ood_sets else ""
        metric = f"; generations scored by {b.generation_metric}" if b.generation_metric else ""
        console.print(f"[bold]{name}[/] ({b.label}): {b.n_personas} persona pairs, {len(b.train_prompts)} training prompts, {probe}; "
                      f"{targets}{sets}{metric}")


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # python -m weight_steering.cli
    main()
