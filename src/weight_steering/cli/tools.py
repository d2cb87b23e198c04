"""Taking a dW elsewhere and looking at it: export, quick generations, the shipped behaviours."""

from __future__ import annotations

import typer

from ..core.behavior_files import available_behaviors
from ..core.models import DEFAULT_MODEL
from . import KNOWN_ERRORS, Device, Dtype, DwModel, DwPath, app, check_machine, console, fail, read_dw


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
    from ..export.convert import ExportError, run_export

    try:
        result = run_export(dw, out, format, rank, energy, model, kl_prompts, force, device, dtype)
    except (*KNOWN_ERRORS, ExportError) as err:
        fail(err)
    info, path = result["info"], result["path"]
    console.print(f"exported {info['n_tensors']} tensors to {path} ({info['mode']}; largest rank {info['max_rank']}, "
                  f"lowest energy kept {info['min_energy']:.4f}, max |B·A − dW| {info['max_abs_error']:.2e})")
    if "kl" in result:
        kl = result["kl"]
        console.print(f"KL(export ‖ exact dW) at α = 1 on {kl['n_prompts']} neutral prompts: p95 {kl['p95']:.4f}, mean {kl['mean']:.4f} nats")


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
    from ..core.chat import generate_text
    from ..core.diff import check_fits
    from ..core.models import load_model
    from ..core.steer import check_alpha, steer

    try:
        if max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be ≥ 1; got {max_new_tokens}")
        for a in alpha:
            check_alpha(a)
        check_machine(device, dtype)
        delta = read_dw(dw)
        loaded_model, tokenizer = load_model(model, device, dtype)
        check_fits(delta, loaded_model)
        for a in alpha:
            with steer(loaded_model, delta, a):
                console.print(f"[bold]α = {a:+g}[/]: {generate_text(loaded_model, tokenizer, prompt, max_new_tokens)}\n")
    except KNOWN_ERRORS as err:
        fail(err)


@app.command()
def behaviors():
    """List the shipped behaviours."""
    from ..core.behavior_files import load_behavior

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
