"""Assessments of a finished dW: vignettes, degradation, the ablation, hypotheses and monitoring, and their summaries over seeds."""

from __future__ import annotations

import typer

from ..artifacts import check_output_folder
from ..core.models import DEFAULT_MODEL
from . import (
    Device,
    Dtype,
    DwModel,
    DwPath,
    OutRoot,
    app,
    check_assessment,
    check_machine,
    parse_numbers,
    print_summary,
    read_dw,
    show_report,
    split_list,
)


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
    from ..evaluation.datasets import FOUNDATIONS
    from ..vignettes.run import run_vignettes

    def run():
        intents = {} if intent else None
        for item in intent or []:
            name, _, sign = item.partition("=")
            if name not in FOUNDATIONS or sign not in ("1", "+1", "-1"):
                raise ValueError(f"--intent must look like Authority=-1 with a foundation in {FOUNDATIONS}; got {item!r}")
            intents[name] = int(sign)
        return run_vignettes(dw, model, check_assessment(dw, alphas, out, device, dtype), intents, k, pmass_floor, out, limit,
                             device=device, dtype=dtype)

    show_report(run, "vignettes.md")


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
    from ..degradation.run import run_degradation

    show_report(lambda: run_degradation(dw, model, check_assessment(dw, alphas, out, device, dtype), n_tokens, out,
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
    from ..ablation.run import run_ablation
    from ..ablation.variants import AblationError, check_ablation_options
    from ..hypotheses.candidates import CANDIDATES, HypothesisError

    def run():
        chosen = None if groups == "all" else tuple(split_list(groups))
        check_ablation_options(chosen, n_controls, n_within)
        names = tuple(split_list(candidates)) if candidates.strip() else ()
        unknown = [n for n in names if n not in CANDIDATES]
        if unknown or k < 1:
            raise HypothesisError(f"--candidates must name candidates of {', '.join(CANDIDATES)} and --k be ≥ 1; got {list(unknown)}, k = {k}")
        check_output_folder(out)
        check_machine(device, dtype)
        read_dw(dw)
        return run_ablation(dw, model, alpha, chosen, dilemma_limit, seed, out, activation_k=activation_k, n_controls=n_controls,
                            n_within=n_within, candidates=names, k=k, device=device, dtype=dtype)

    show_report(run, "ablation.md", (AblationError, HypothesisError))


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
    from ..hypotheses.candidates import HypothesisError
    from ..hypotheses.run import run_hypotheses

    def run():
        check_machine(device, dtype)
        return run_hypotheses(dw, k, None if candidates == "all" else split_list(candidates), null_draws, model, out, device=device, dtype=dtype)

    show_report(run, "hypotheses.md", (HypothesisError,))


@app.command("summarize-ablations")
def summarize_ablations(paths: list[str] = typer.Argument(..., help="finished `wsteer ablate` folders (one per dW; family and seed are read from the dW's folder name)")):
    """Where dW lives, across seeds: retained per seed and t-intervals over seeds, with random and within-dW nulls."""
    from ..ablation.render import render_ablation_seeds
    from ..ablation.seeds import load_ablations, summarize_ablation_seeds
    from ..ablation.variants import AblationError

    print_summary(lambda: render_ablation_seeds(summarize_ablation_seeds(load_ablations(paths))), (AblationError,))


@app.command("summarize-hypotheses")
def summarize_hypotheses(paths: list[str] = typer.Argument(..., help="finished `wsteer hypotheses` folders (or their hypotheses.json), one per dW")):
    """Which base-model subspace predicts where dW lives, across families and seeds: R_w per seed, t-intervals, rank agreement."""
    from ..hypotheses.candidates import HypothesisError
    from ..hypotheses.render import render_hypothesis_seeds
    from ..hypotheses.seeds import load_hypotheses
    from ..hypotheses.seeds import summarize_hypotheses as summarize

    print_summary(lambda: render_hypothesis_seeds(summarize(load_hypotheses(paths))), (HypothesisError,))


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
    from ..monitoring.render import render_monitor
    from ..monitoring.run import MonitorError, run_monitor

    print_summary(lambda: render_monitor(run_monitor(dw, finetune, unrelated, model, margin, device, dtype)), (MonitorError,))


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
    from ..monitoring.run import MonitorError, run_monitoring_experiment

    def run():
        fraction_list = parse_numbers(fractions, "--fractions", float, "0,0.1,0.5,1")
        seed_list = parse_numbers(seeds, "--seeds", int, "1000,1001,1002")
        check_machine(device, dtype)
        return run_monitoring_experiment(dw, unrelated, fraction_list, seed_list, n_rows, model, out, archive, device=device, dtype=dtype)

    show_report(run, "monitoring.md", (MonitorError,))
