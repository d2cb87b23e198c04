"""Bad input at the command line: a non-zero exit, no traceback, and a message that names the field and the fix."""

import pytest
from typer.testing import CliRunner

from weight_steering.cli import app

CASES = [
    (["run", "--epochs", "-1"], "train.epochs"),
    (["run", "--dilemma-limit", "-5"], "run.dilemma_limit"),
    (["run", "--n-samples", "0"], "generation.n_samples"),
    (["run", "--learning-rate", "nan"], "train.learning_rate"),
    (["run", "--alphas", "1,2"], "must include 0"),
    (["run", "--alphas", "0,x"], "--alphas"),
    (["run", "--out", "README.md"], "existing file"),
    (["run", "--behavior", "telepathy"], "unknown behaviour 'telepathy'"),
    (["run", "--judge-threshold", "nan"], "--judge-threshold"),
    (["sweep", "--seeds", "a,b"], "--seeds"),
    (["sweep", "--archive", "README.md"], "is a file"),
    (["sweep", "--seeds", "0", "--data-seed", "-1"], "data seed"),
    (["summarize", "no/such/run"], "no run.json"),
    (["compare", "--archive", "README.md"], "is a file"),
    (["compare", "--methods", "dW,telepathy"], "unknown method"),
    (["compare-seeds", "no/such/folder"], "does not exist"),
    (["monitor", "--dw", "x", "--finetune", "y", "--margin", "nan"], "--margin"),
    (["export", "--dw", "x", "--out", "y", "--format", "onnx"], "unknown export format 'onnx'"),
    (["export", "--dw", "x", "--out", "README.md"], "README.md exists"),
    (["export", "--dw", "x", "--out", "y", "--rank", "0"], "--rank"),
    (["export", "--dw", "x", "--out", "y", "--energy", "1.5"], "--energy"),
    (["export", "--dw", "x", "--out", "y", "--rank", "4", "--energy", "0.9"], "not both"),
    (["compare-seeds", "docs/sweep"], "no comparison.json"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_cli_input_is_a_clear_error(args, message):
    """Each case fails before any work (no model is loaded); run from the repository root (README.md is a file there)."""
    result = CliRunner().invoke(app, args)
    text = " ".join(result.output.split())
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (KeyError, TypeError, AttributeError))
    assert message in text, text
