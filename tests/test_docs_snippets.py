"""Every ```python block of the README and of docs/*.md runs, in order, in one namespace per document.

The tiny random model stands in for the embedded one (``ws.load_model`` returns a fresh copy of it) and every preset
gets the tiny sizes, so a snippet that names a function that moved, passes an argument that was renamed or reads a
result key that no longer exists fails here (the README's API example once raised ImportError)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
TINY = {"generation": {"n_prompts": 3, "n_personas": 2, "n_samples": 2, "max_new_tokens": 8, "batch_size": 8},
        "train": {"rank": 4, "lora_alpha": 8, "learning_rate": 5e-3, "batch_size": 4}, "dilemma_limit": 2}


def python_blocks(document: Path) -> list[str]:
    return BLOCK.findall(document.read_text(encoding="utf-8"))


def test_the_readme_has_the_api_example_the_snippet_test_runs():
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 4 and "ws.train_dw(" in blocks[0] and "ws.steer(" in blocks[0]


@pytest.mark.slow  # trains a tiny dW and runs a tiny main job
@pytest.mark.parametrize("document", [d for d in DOCUMENTS if python_blocks(d)], ids=lambda d: d.name)
def test_every_python_snippet_runs_on_the_tiny_model(document, tokenizer, tmp_path, monkeypatch):
    pytest.importorskip("steering_vectors", reason="installed with --no-deps by the Makefile")
    from conftest import build_model

    import weight_steering as ws
    from weight_steering.core.models import prepare

    real_preset = ws.preset_config
    monkeypatch.setattr(ws, "load_model", lambda *args, **kwargs: prepare(build_model(tokenizer), tokenizer))
    monkeypatch.setattr(ws, "preset_config", lambda name="default", **kw: real_preset(name, **{**TINY, **kw, "out": str(tmp_path / "out")}))
    monkeypatch.chdir(tmp_path)  # snippets write relative paths (adapters/…)
    (tmp_path / "docs").symlink_to(ROOT / "docs")  # and read the committed archive as from the repository root
    from weight_steering.comparison.methods import COMPARISON_METHODS

    registered = dict(COMPARISON_METHODS)  # a snippet may register a method: the registry is restored after
    namespace: dict = {}
    try:
        for index, code in enumerate(python_blocks(document)):
            exec(compile(code, f"{document.name} python block {index + 1}", "exec"), namespace)  # noqa: S102
    finally:
        COMPARISON_METHODS.clear()
        COMPARISON_METHODS.update(registered)
    if document.name == "README.md":
        assert len(namespace["dw"]) > 0 and namespace["plus"].alpha > 0 > namespace["minus"].alpha
        assert (tmp_path / "adapters" / "tone" / "adapter_config.json").is_file()
        assert "dw_first_layer" in namespace and "dw_first_layer" not in COMPARISON_METHODS
        assert namespace["result"].contrast("id_per_token")["n"] > 0 and namespace["weights"].plus.alpha > 0
