"""Loading: no hub kernel is fetched or run by any stage, and device / dtype / size problems are clear errors."""

import os

import pytest
import torch
from safetensors.torch import save_file

from weight_steering.core.models import DeviceError, ModelNotAvailableError, check_fits_device, load_model, resolve_device, resolve_dtype


@pytest.fixture()
def kernel_calls(monkeypatch):
    """Every way transformers reaches the `kernels` hub, replaced by a recorder: kernelize (hub kernels swapped into the
    model's layers; on CUDA this fetches kernels-community/rotary), a layer repository's load and a kernel fetch."""
    import kernels
    import transformers.integrations.hub_kernels as hub_kernels
    import transformers.modeling_utils as modeling_utils

    calls = []

    def recorder(name):
        def record(*args, **kwargs):
            calls.append(name)

        return record

    monkeypatch.setattr(hub_kernels, "kernelize", recorder("kernelize"))
    monkeypatch.setattr(modeling_utils, "kernelize", recorder("kernelize"))
    monkeypatch.setattr(hub_kernels, "get_kernel_hub", recorder("get_kernel"))
    monkeypatch.setattr(kernels.LayerRepository, "load", recorder("LayerRepository.load"))
    return calls


@pytest.fixture()
def saved_tiny(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "tiny", safe_serialization=True)
    tokenizer.save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_the_recorder_sees_transformers_default_kernelization(saved_tiny, kernel_calls, monkeypatch):
    """The control: transformers' own default (use_kernels unset, hub kernels enabled) kernelizes at load, so the
    recorder below would catch a stage that did the same."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("USE_HUB_KERNELS", "YES")
    AutoModelForCausalLM.from_pretrained(str(saved_tiny))
    assert "kernelize" in kernel_calls


def test_no_stage_fetches_or_runs_a_hub_kernel(saved_tiny, kernel_calls, monkeypatch):
    """Load, sample, score, train (θ with the adapter attached) and steer a model loaded by the project, with the hub
    kernels enabled in the environment: nothing reaches the kernels hub, and the model is not kernelized."""
    from weight_steering.core.adapters import TrainConfig
    from weight_steering.core.behavior_files import load_behavior
    from weight_steering.core.data import GenerationConfig, generate_pairs
    from weight_steering.core.train import train_adapter
    from weight_steering.evaluation.scoring import score_answer_sets

    monkeypatch.setenv("USE_HUB_KERNELS", "YES")  # even where the user's environment turns them on
    model, tokenizer = load_model(str(saved_tiny))
    assert model.use_kernels is False
    rows = generate_pairs(model, tokenizer, load_behavior("tone"), GenerationConfig(n_prompts=2, n_personas=1, n_samples=1, max_new_tokens=4))
    score_answer_sets(model, tokenizer, ["Yes or no?"], [[5], [6]])
    model.train()  # transformers re-kernelizes on a mode change when kernels are in use
    model.eval()
    train_adapter(model, tokenizer, rows, "positive", TrainConfig(rank=2, lora_alpha=4, batch_size=2, layer_fraction=(0.5, 1.0)))
    assert kernel_calls == []


@pytest.mark.parametrize("user_setting, expected", [(None, "NO"), ("YES", "YES")])
def test_the_package_turns_hub_kernels_off_unless_the_user_opted_in(user_setting, expected):
    """Importing the package sets USE_HUB_KERNELS=NO for the process; a user's explicit setting is kept."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "USE_HUB_KERNELS"} | ({"USE_HUB_KERNELS": user_setting} if user_setting else {})
    code = "import os, weight_steering; print(os.environ['USE_HUB_KERNELS'])"
    printed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert printed == expected


@pytest.mark.parametrize("name, expected", [("float32", torch.float32), ("bf16", torch.bfloat16), ("FP16", torch.float16), (None, torch.float32)])
def test_dtype_names(name, expected):
    assert resolve_dtype(name, torch.device("cpu")) == expected


@pytest.mark.parametrize("name, message", [("int8", "--dtype 'int8' is not a known dtype; use one of float32"),
                                           (torch.int8, "torch.int8 is not supported")])
def test_unknown_dtype_is_named(name, message):
    with pytest.raises(DeviceError, match=message.replace("(", r"\(")):
        resolve_dtype(name, torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_names_the_fix(saved_tiny):
    with pytest.raises(DeviceError, match="sees no CUDA GPU; run with --device cpu"):
        load_model(str(saved_tiny), device="cuda")


def test_a_model_larger_than_the_free_gpu_memory_is_refused_before_loading(tmp_path, monkeypatch):
    """4 MiB of fp32 weights (2 MiB in bf16) against 1 MiB free: refused, naming both sizes and the fixes."""
    save_file({"w": torch.zeros(1024, 1024)}, str(tmp_path / "model.safetensors"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 20, 80 << 30))
    with pytest.raises(ModelNotAvailableError, match=r"needs 2\.0 MiB for its weights in bfloat16 but cuda:0 has 1\.0 MiB free; use --dtype bfloat16"):
        check_fits_device(str(tmp_path), torch.device("cuda:0"), torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (64 << 20, 80 << 30))
    check_fits_device(str(tmp_path), torch.device("cuda:0"), torch.float32)  # 4 MiB fits in 64 MiB


def test_default_device_is_cpu_here_or_cuda_when_present():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture()
def fake_embedded(tiny, tmp_path, monkeypatch):
    """The embedded model's cache path with the tiny model standing in for the GGUF (no dequantisation)."""
    import transformers

    from weight_steering.core import models as models

    model, tokenizer = tiny
    monkeypatch.setenv("WSTEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "locate_embedded_gguf", lambda name: tmp_path / "fake.gguf")
    real_model, real_tokenizer = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained
    builds = []

    def model_from(source, *args, **kwargs):
        if kwargs.pop("gguf_file", None):
            builds.append(source)
            return model
        return real_model(source, *args, **kwargs)

    def tokenizer_from(source, *args, **kwargs):
        return tokenizer if kwargs.pop("gguf_file", None) else real_tokenizer(source, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_from)
    return tmp_path / "cache" / "models" / "smollm2-135m-instruct", builds


def test_a_damaged_model_cache_is_found_rebuilt_with_a_warning_and_the_command_goes_on(fake_embedded, caplog):
    from weight_steering.core.models import base_weights_hash

    cache, builds = fake_embedded
    first = base_weights_hash(load_model("smollm2-135m-instruct")[0])
    assert len(builds) == 1 and (cache / "stage.json").exists()
    load_model("smollm2-135m-instruct")
    assert len(builds) == 1  # an intact cache is reused
    weights = cache / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a killed copy, a full disk
    with caplog.at_level("WARNING"):
        again = base_weights_hash(load_model("smollm2-135m-instruct")[0])
    assert len(builds) == 2 and again == first
    assert "model.safetensors does not match its recorded SHA-256; recomputing it" in caplog.text


def test_a_cache_folder_that_is_a_file_is_a_clear_error(fake_embedded, tmp_path, monkeypatch):
    from weight_steering.artifacts import StorageError

    (tmp_path / "cachefile").write_text("not a folder")
    monkeypatch.setenv("WSTEER_CACHE", str(tmp_path / "cachefile"))
    with pytest.raises(StorageError, match=r"cannot write .*cachefile.*: (a part of the path is a file|a file stands where).*\$WSTEER_CACHE"):
        load_model("smollm2-135m-instruct")
    assert (tmp_path / "cachefile").read_text() == "not a folder"
