"""``wsteer``: the command line over the same functions as the Python API."""

from __future__ import annotations

import logging
import math
import os
import shlex
import sys
from typing import Annotated

import typer
from rich.console import Console

from ..artifacts import StorageError, check_output_folder
from ..core.behaviors import BehaviorError
from ..core.data import DataGateError
from ..core.diff import DeltaWeightsError
from ..core.models import DeviceError, ModelNotAvailableError
from ..core.steer import check_alpha_grid
from ..core.train import AdapterFamilyError
from ..evaluation.scoring import AnswerTokenError, EvalError

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


def fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}")
    raise typer.Exit(2)


def check_machine(device: str | None, dtype: str | None) -> None:
    """:func:`weight_steering.core.models.check_machine`, imported when called (``wsteer --help`` loads no torch)."""
    from ..core.models import check_machine as check

    check(device, dtype)


def read_dw(path: str):
    """The dW at ``path``, read and checked for damage (truncated, pickled, non-finite, no sidecar) before any model
    is loaded, so a bad file fails in a second; :func:`~weight_steering.core.diff.check_fits` checks it against the model."""
    from ..core.diff import load_dw

    return load_dw(path)


def check_assessment(dw: str, alphas: str, out: str, device: str | None, dtype: str | None) -> tuple[float, ...]:
    """The checks of an assessment of a dW, before any model is loaded: the device and dtype, the α grid (must include 0),
    the output folder, and the dW file itself. Returns the parsed α grid."""
    check_machine(device, dtype)
    parsed = parse_alphas(alphas, require_zero=True)
    check_output_folder(out)
    read_dw(dw)
    return parsed


def parse_numbers(text: str, option: str, kind: type = float, example: str = "-1,0,1") -> tuple:
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


def parse_alphas(text: str | None, require_zero: bool = False) -> tuple[float, ...] | None:
    if text is None:
        return None
    alphas = parse_numbers(text, "--alphas", float, "-2,-1,0,1,2")
    return check_alpha_grid(alphas, f"--alphas {text}: the unsteered reference of every Δ") if require_zero else alphas


def parse_threshold(text: str) -> float | str:
    if text in ("median", "labels"):
        return text
    try:
        value = float(text)
    except ValueError as err:
        raise typer.BadParameter(f"--judge-threshold must be a number of nats, 'labels' or 'median'; got {text!r}") from err
    if value != value or value in (float("inf"), float("-inf")):
        raise typer.BadParameter(f"--judge-threshold must be finite; got {text!r}")
    return value


def start_logging() -> str:
    """Progress logs of a long command to stderr; returns the command line to record in its outputs."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return "wsteer " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def show_report(compute, filename: str, errors: tuple = ()) -> None:
    """Run ``compute() -> {"path", ...}`` and print the report ``filename`` it wrote, or fail with a clear message."""
    try:
        result = compute()
    except (*KNOWN_ERRORS, *errors) as err:
        fail(err)
    console.print((result["path"] / filename).read_text())


def print_summary(make_text, errors: tuple = ()) -> None:
    """Print ``make_text()`` (a markdown summary, unwrapped), or fail with a clear message on a known error."""
    try:
        text = make_text()
    except (*KNOWN_ERRORS, *errors) as err:
        fail(err)
    typer.echo(text, nl=False)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":  # python -m weight_steering.cli
    main()


from . import jobs, studies, tools  # noqa: E402, F401  (each registers its commands on app)
