"""The main job, the sweep and the comparison, and their summaries over runs and seeds."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from ..core.behavior_files import available_behaviors
from ..core.models import DEFAULT_MODEL
from . import (
    KNOWN_ERRORS,
    Device,
    Dtype,
    OutRoot,
    Sampler,
    app,
    console,
    fail,
    parse_alphas,
    parse_numbers,
    parse_threshold,
    print_summary,
    split_list,
    start_logging,
)


@app.command()
def run(
    behavior: str = typer.Option("sycophancy", help=f"behaviour name ({', '.join(available_behaviors())}) or a behaviour .json path"),
    model: str = typer.Option(DEFAULT_MODEL, help="embedded name, local path or Hugging Face id"),
    family: str = typer.Option("lora", help="adapter family"),
    seed: int = typer.Option(0, help="training seed (adapter init, split, batch order)"),
    data_seed: int = typer.Option(0, help="sampling seed of the persona-contrast data"),
    preset: str = typer.Option("default", help="size preset: default (≤ 20 min on 2 CPU cores), smoke, paper (the paper's recipe, for a GPU), paper_2core (the same recipe at 2-core size)"),
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
    judge_threshold: str = typer.Option("labels", help="judge threshold (nats of log-odds; the metric's units with --pair-judge metric), 'labels' (calibrated on the shipped hand labels) or 'median'"),
    pair_judge: str = typer.Option("model", help="what judges the data: model (the behaviour's Yes/No judge asked of the model) or metric (its judge-free generation metric, e.g. VADER for upbeat)"),
    size_control: bool = typer.Option(False, "--size-control", help="with --filter-pairs: train on as many pairs as the judge keeps, drawn at random from all of them (the filter's size without its purity)"),
    sampler: Sampler = "cached",
    device: Device = None,
    dtype: Dtype = None,
    thinking: bool = typer.Option(False, help="a reasoning template (Qwen3) with thinking on in every stage; off by default"),
    target_modules: str = typer.Option(None, help="comma-separated module names to adapt (default: q,k,v,o,gate,up,down _proj)"),
):
    """Run the main job: persona data → θ⁺/θ⁻ adapters → dW → α·dW evaluation → report."""
    from ..core.data import sampler_settings
    from ..main_job.config import preset_config
    from ..main_job.run import run_main_job

    start_logging()
    try:
        generation = {"n_samples": n_samples, "max_new_tokens": max_new_tokens, "seed": data_seed, **sampler_settings(sampler)}
        train = {"family": family, "seed": seed, "epochs": epochs, "learning_rate": learning_rate,
                 "target_modules": tuple(split_list(target_modules)) if target_modules else None}
        config = preset_config(
            preset, behavior=behavior, model=model, alphas=parse_alphas(alphas), dilemma_limit=dilemma_limit, out=out, force=force,
            filter_pairs=filter_pairs, judge=judge, judge_threshold=parse_threshold(judge_threshold), pair_judge=pair_judge,
            size_control=size_control, device=device, dtype=dtype, thinking=thinking,
            generation={k: v for k, v in generation.items() if v is not None}, train={k: v for k, v in train.items() if v is not None},
        )
        result = run_main_job(config, command="wsteer " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    except KNOWN_ERRORS as err:
        fail(err)
    table = Table(title="stage timings")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("reused")
    for stage, info in result.timings.items():
        table.add_row(stage, f"{info['seconds']:.1f}", "yes" if info["reused"] else "")
    console.print(table)
    contrasts = Table(title="contrasts (paired, 95% bootstrap CI)")
    for col in ("metric", "contrast", "mean", "95% CI"):
        contrasts.add_column(col)
    for c in result.summary["contrasts"]:
        contrasts.add_row(c["metric"], c["contrast"], f"{c['mean']:+.3f}", f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]")
    console.print(contrasts)
    console.print(f"report: {result.report}")
    typer.echo(f"dW: {result.dw_path}")  # plain, never wrapped: recipes read the last line


@app.command()
def sweep(
    families: str = typer.Option("all", help="comma-separated adapter families, or 'all'"),
    seeds: str = typer.Option("0,1,2", help="comma-separated training seeds"),
    behaviors: str = typer.Option("sycophancy", help="comma-separated behaviours"),
    model: str = typer.Option(DEFAULT_MODEL, help="embedded name, local path or Hugging Face id"),
    preset: str = typer.Option("default", help="size preset of every cell: default, smoke, paper, paper_2core"),
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
    from ..core.adapters import ADAPTER_FAMILIES
    from ..core.data import sampler_settings
    from ..main_job.config import preset_config
    from ..sweep.archive import archived_cells
    from ..sweep.cells import SweepError
    from ..sweep.run import run_sweep, write_ranking

    command = start_logging()
    try:
        names = list(ADAPTER_FAMILIES) if families == "all" else split_list(families)
        seed_list = list(parse_numbers(seeds, "--seeds", int, "0,1,2"))
        if len(set(names)) != len(names):
            raise SweepError(f"--families names a family twice ({families!r}); give each once")
        config = preset_config(preset, model=model, dilemma_limit=dilemma_limit, out=out, force=force,
                               generation=sampler_settings(sampler), device=device, dtype=dtype)
        started = time.perf_counter()
        if rank_only and archive:
            cells, n_computed = archived_cells(archive, split_list(behaviors), names, seed_list), 0
        else:
            cells, n_computed = run_sweep(config, split_list(behaviors), names, seed_list, executor, compute=not rank_only, archive=archive,
                                          data_seed=data_seed)
        if not cells:
            raise SweepError("no finished cells to rank; run the sweep without --rank-only first")
        paths = write_ranking(config, cells, command, time.perf_counter() - started, n_computed)
    except (*KNOWN_ERRORS, SweepError) as err:
        fail(err)
    console.print(paths["markdown"].read_text())
    console.print(f"ranking: {paths['markdown']}\nforest plot: {paths['forest']}")


@app.command()
def summarize(runs: list[str] = typer.Argument(..., help="main-job run folders (out/<behaviour>/<model>/<family>-seed<s>) or their run.json")):
    """Headline table of finished main-job runs: primary scores (framing-controlled ID, action-stratified OOD) with CIs."""
    from ..main_job.render import render_run_summary
    from ..main_job.summary import load_runs

    print_summary(lambda: render_run_summary(load_runs(runs)))  # plain text: a markdown table must not be wrapped


@app.command()
def compare(
    behavior: str = typer.Option("honesty", help="behaviour whose dW and persona contrast are compared"),
    model: str = typer.Option(DEFAULT_MODEL, help="embedded name, local path or Hugging Face id"),
    family: str = typer.Option("lora", help="adapter family of the dW (the main job's; trained if missing)"),
    seed: int = typer.Option(0, help="training seed of the dW, and its data-sampling seed unless --data-seed is given"),
    data_seed: int = typer.Option(None, help="fix the data-sampling seed (default: the same as --seed)"),
    methods: str = typer.Option("all", help="comma-separated: dW, persona, engineered, caa_slice, pca_slice, caa_all, caa_increments, caa_best, s_space (all: these), dW_paper"),
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
    filter_pairs: str = typer.Option(None, help="train dW and read the activation contrast only on pairs this judge keeps: model or metric (default: every pair)"),
    size_control: bool = typer.Option(False, "--size-control", help="with --filter-pairs: as many pairs as the judge keeps, drawn at random from all of them (the filter's size without its purity)"),
    sampler: Sampler = "cached",
    device: Device = None,
    dtype: Dtype = None,
):
    """Weight steering against prompting and activation steering at the same p95 KL: table, ratios, effect-vs-KL PNG."""
    from ..comparison.methods import all_methods
    from ..comparison.run import CompareConfig, CompareError, comparison_dw, run_comparison
    from ..core.data import sampler_settings
    from ..evaluation.datasets import EvalDataError
    from ..main_job.config import preset_config

    command = start_logging()
    try:
        fractions = parse_numbers(curve_fractions, "--curve-fractions", float, "0.25,0.5") if curve_fractions.strip() else ()
        config = CompareConfig(behavior=behavior, model=model, family=family, seed=seed, data_seed=data_seed,
                               methods=all_methods() if methods == "all" else tuple(split_list(methods)), target=target,
                               tolerance=tolerance, n_tokens=n_tokens, curve_fractions=fractions, s_space_rank=s_space_rank,
                               dilemma_limit=dilemma_limit, prompt_limit=prompt_limit, generation_tokens=generation_tokens, out=out,
                               archive=archive, name=name, filter_pairs=filter_pairs, size_control=size_control)
        job_config = preset_config(generation=sampler_settings(sampler), device=device, dtype=dtype)
        if dw_only:
            typer.echo(str(comparison_dw(config, job_config=job_config)))
            return
        result = run_comparison(config, command=command, job_config=job_config)
    except (*KNOWN_ERRORS, CompareError, EvalDataError) as err:
        fail(err)
    console.print((result.path / "comparison.md").read_text())
    console.print(f"effect vs KL: {result.path / 'effect_vs_kl.png'}")


@app.command("compare-seeds")
def compare_seeds(
    paths: list[str] = typer.Argument(..., help="comparison result folders, or a folder holding them (e.g. docs/compare/archive)"),
    plot: str = typer.Option(None, help="also write <folder>/<behaviour>_budgets.png: OOD spread against the KL budget and the ID spread"),
):
    """The iso-KL comparison across seeds: per-seed values and t-intervals over seed means, one table per behaviour and budget."""
    from ..comparison.render import plot_budget_curves, render_seed_comparison
    from ..comparison.seeds import SeedSummaryError, load_comparisons, summarize_seeds

    def summary() -> str:
        if plot and Path(plot).exists() and not Path(plot).is_dir():
            raise ValueError(f"--plot {plot} is a file; give a folder for the <behaviour>_budgets.png figures (it is created if missing)")
        groups = summarize_seeds(load_comparisons(paths))
        for behavior in dict.fromkeys(g["behavior"] for g in groups) if plot else ():
            plot_budget_curves(groups, behavior, Path(plot) / f"{behavior}_budgets.png")
        return render_seed_comparison(groups)

    print_summary(summary, (SeedSummaryError,))
