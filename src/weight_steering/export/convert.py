"""Export a dW as a LoRA adapter that inference engines serve, with the adapter's scale as α.

A LoRA adapter adds ``scale · B @ A`` to each target weight. Any dW tensor is such a product: with the
SVD dW_k = U S Vᵀ, ``B = U[:, :k] √S[:k]`` ``[out, k]`` and ``A = √S[:k] Vᵀ[:k]`` ``[k, in]``. At the
numerical rank of dW_k, counted above the fp32 rounding that merging leaves in Δ = W_merged − W
(:func:`rounding_floor`), the export is exact for every adapter family (a LoRA dW θ⁺ − θ⁻ has rank
≤ 2r, the concatenation of the two adapters' factors); a ``rank`` or ``energy``
truncates it, and the energy kept (Σ kept S² / Σ S²) is recorded per tensor. Working from dW itself
rather than from the adapters' own factors tests the export on the combined weight change, which
is where negative-weight adapter arithmetic has had sign bugs (PEFT #3004).

Format ``peft``: ``adapter_config.json`` + ``adapter_model.safetensors`` for ``PeftModel.from_pretrained``
on the base model; ``lora_alpha`` equals each tensor's rank (``alpha_pattern``), so the stored scaling is 1
and ``peft.helpers.rescale_adapter_scale(model, α)`` steers by α·dW. A sidecar ``export.json`` records
the ranks, the energy kept and the largest reconstruction error.

Format ``gguf``: ``adapter.gguf``, a llama.cpp LoRA adapter (the layout of llama.cpp's ``convert_lora_to_gguf.py``,
written through the ``gguf`` library): ``general.type = adapter``, ``adapter.type = lora``, tensors
``blk.<i>.<name>.weight.lora_a`` ``[k, in]`` and ``.lora_b`` ``[out, k]`` in fp32. llama.cpp scales each product by
``adapter_scale · lora_alpha / k``; every tensor is zero-padded to the largest rank k and ``lora_alpha = k``, so the
adapter's scale (``--lora-scaled FILE α``, ``Llama(lora_path=…, lora_scale=α)``) is α. For a llama model the
converter permutes the rows of q and k into llama.cpp's RoPE layout (``LlamaModel.permute``), and B's rows follow.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..artifacts import atomic_save_path, commit_path, write_json
from ..core.diff import DeltaWeights, check_fits, load_dw
from ..core.models import DEFAULT_MODEL, check_machine, load_model
from ..core.steer import steer
from ..evaluation.calibrate import kl_from_base
from ..evaluation.datasets import load_neutral, neutral_split
from ..evaluation.scoring import YES_NO, answer_sets, evaluate

FORMATS = ("peft", "gguf")
GGUF_FILE = "adapter.gguf"
# Architectures the GGUF export knows, and whether llama.cpp's converter permutes their q/k rows for RoPE.
GGUF_QK_PERMUTED = {"llama": True, "gemma3": False}


class ExportError(ValueError):
    """A dW cannot be exported as asked (unknown format, bad rank or energy, a tensor that is not a Linear weight, output exists)."""


def rounding_floor(weight: torch.Tensor) -> float:
    """An upper estimate of the spectral norm of the fp32 rounding in Δ = W_merged − W for a weight ``weight`` ``[m, n]``.

    Each merged entry is rounded to within ε/2·|W_ij| (ε = 2⁻²³), once in θ⁺ and once in θ⁻; a random m × n matrix
    with entries of that size has spectral norm about rms · (√m + √n). The factor 4 is margin. On the embedded
    model's LoRA dW the singular values fall from 2e-6–4e-4 at index 2r − 1 to 2–7e-7 at 2r (docs/RESULTS.md), and
    this floor (about 1e-6) lies in that gap.
    """
    m, n = weight.shape
    rms = float(weight.detach().float().pow(2).mean().sqrt())
    return 4 * torch.finfo(torch.float32).eps * rms * (m**0.5 + n**0.5)


def lora_factors(dw: DeltaWeights, rank: int | None = None, energy: float | None = None, floors: dict[str, float] | None = None,
                 relative_tolerance: float = 1e-6) -> dict:
    """Per tensor, LoRA factors ``(B [out, k], A [k, in])`` with ``B @ A`` ≈ dW_k (fp32, from an fp64 SVD).

    Args:
        dw: the dW (2-D tensors only).
        rank: keep k = ``rank`` singular directions in every tensor.
        energy: keep the fewest directions whose Σ S² reaches this share of the tensor's (0 < energy ≤ 1).
        floors: without ``rank`` or ``energy``, keep every singular value above ``floors[name]`` (the numerical
            rank above the merge's fp32 rounding, :func:`rounding_floor`; a LoRA dW keeps 2r); tensors without a
            floor keep every singular value above ``relative_tolerance`` times the largest.

    Returns:
        ``{name: {"B", "A", "rank", "energy", "max_abs_error"}}``; ``max_abs_error`` is max |B @ A − dW_k|.

    Raises:
        ExportError: both ``rank`` and ``energy``, a rank < 1 or above a tensor's min(out, in), an energy outside (0, 1],
            or a tensor that is not 2-D.
    """
    check_truncation(rank, energy)
    not_matrices = [k for k, t in dw.tensors.items() if t.dim() != 2]
    if not_matrices:
        raise ExportError(f"only 2-D weight tensors can be a LoRA; dW has others: {not_matrices[:5]}")
    out = {}
    for name, tensor in dw.tensors.items():
        if rank is not None and rank > min(tensor.shape):
            raise ExportError(f"--rank {rank} exceeds the rank of {name} {tuple(tensor.shape)} (at most {min(tensor.shape)})")
        u, s, vh = torch.linalg.svd(tensor.double(), full_matrices=False)  # [out, m], [m], [m, in]
        share = torch.cumsum(s**2, 0) / (s**2).sum().clamp_min(1e-300)
        if rank is not None:
            k = rank
        elif energy is not None:
            k = int(torch.searchsorted(share, torch.tensor(energy * (1 - 1e-12), dtype=share.dtype)).item()) + 1
        else:
            floor = (floors or {}).get(name, relative_tolerance * float(s[0]))
            k = max(1, int((s > floor).sum()))
        k = min(k, s.numel())
        root = s[:k].sqrt()
        b, a = (u[:, :k] * root).float().contiguous(), (root[:, None] * vh[:k]).float().contiguous()  # [out, k], [k, in]
        out[name] = {"B": b, "A": a, "rank": k, "energy": float(share[k - 1]),
                     "max_abs_error": float((b.double() @ a.double() - tensor.double()).abs().max())}
    return out


def check_export_request(out: str | Path, fmt: str = "peft", rank: int | None = None, energy: float | None = None,
                         force: bool = False) -> Path:
    """Refuse a bad export request before any work: unknown format, both or bad ``rank`` / ``energy``, an ``out`` that
    is a file or a non-empty folder (without ``force``). Returns ``out`` as a Path.

    Raises:
        ExportError: naming the option and the fix.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
    check_truncation(rank, energy)
    out = Path(out)
    if out.exists() and (out.is_file() or (not force and any(out.iterdir()))):
        raise ExportError(f"{out} exists; give a new folder or pass --force to replace the adapter in it")
    return out


def check_truncation(rank: int | None, energy: float | None) -> None:
    """Raise :class:`ExportError` for both ``rank`` and ``energy``, a rank < 1 or an energy outside (0, 1]."""
    if rank is not None and energy is not None:
        raise ExportError("give --rank or --energy, not both")
    if energy is not None and not (0 < energy <= 1):
        raise ExportError(f"--energy must lie in (0, 1] (the share of each tensor's Σ S² to keep); got {energy}")
    if rank is not None and (not isinstance(rank, int) or rank < 1):
        raise ExportError(f"--rank must be an integer ≥ 1; got {rank}")


def export_dw(dw: DeltaWeights, model, out: str | Path, fmt: str = "peft", rank: int | None = None, energy: float | None = None,
              force: bool = False) -> Path:
    """Write ``dw`` as a LoRA adapter for ``model`` into the folder ``out``; returns the folder.

    Args:
        dw: a dW made for ``model`` (checked: base-weight hash, keys, shapes).
        model: the base model; every dW tensor must be the weight of a ``torch.nn.Linear`` in it.
        fmt: ``"peft"`` (PEFT adapter folder) or ``"gguf"`` (llama.cpp adapter, ``out/adapter.gguf``).
        rank, energy: truncation (:func:`lora_factors`); neither: exact.
        force: replace an existing ``out``.

    Raises:
        ExportError: unknown format, ``out`` exists (without ``force``) or is a file, a tensor that is not a Linear weight
            (a norm, say), a bad rank or energy, or (gguf) an architecture outside ``GGUF_QK_PERMUTED``. DeltaWeightsError: the dW was made for another model.
    """
    out = check_export_request(out, fmt, rank, energy, force)
    check_fits(dw, model)
    modules = dict(model.named_modules())
    names = {key: key.removesuffix(".weight") for key in dw.tensors}
    not_linear = [key for key, module in names.items() if not key.endswith(".weight") or not isinstance(modules.get(module), torch.nn.Linear)]
    if not_linear:
        raise ExportError(f"a LoRA adapter holds Linear weights only; these dW tensors are not: {not_linear[:5]}")
    if fmt == "gguf":
        _gguf_layout(model, list(dw.tensors))  # refuse an architecture whose llama.cpp layout is not known, before the SVD
    params = dict(model.named_parameters())
    factors = lora_factors(dw, rank, energy, floors={key: rounding_floor(params[key]) for key in dw.tensors})
    ranks = {names[k]: f["rank"] for k, f in factors.items()}
    top = max(ranks.values())
    config = {  # PEFT's adapter_config.json
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": dw.metadata.get("model", ""),
        "r": top, "lora_alpha": top, "rank_pattern": {m: r for m, r in ranks.items() if r != top},
        "alpha_pattern": {m: r for m, r in ranks.items() if r != top},  # scaling = alpha / r = 1 for every tensor
        "target_modules": sorted(ranks), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "init_lora_weights": True, "inference_mode": True,
    }
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "peft":
        _write_peft(out, factors, names, config)
    else:
        _write_gguf(out, factors, model)
    write_json(out / "export.json", {
        "format": fmt, "dw_model": dw.metadata.get("model"), "base_weights_hash": dw.metadata.get("base_weights_hash"),
        "mode": "exact (numerical rank above the merge's fp32 rounding)" if rank is None and energy is None else f"truncated ({'rank ' + str(rank) if rank else 'energy ' + str(energy)})",
        "n_tensors": len(factors), "max_rank": top, "min_energy": min(f["energy"] for f in factors.values()),
        "max_abs_error": max(f["max_abs_error"] for f in factors.values()),
        "tensors": {names[k]: {"rank": f["rank"], "energy": f["energy"], "max_abs_error": f["max_abs_error"]} for k, f in factors.items()},
        "alpha": ("the adapter's scale: peft.helpers.rescale_adapter_scale(model, α) steers by α·dW" if fmt == "peft" else
                  "the adapter's scale: llama-cli --lora-scaled adapter.gguf α, or Llama(lora_path=…, lora_scale=α), steers by α·dW"),
    })
    return out


def _write_peft(out: Path, factors: dict, names: dict, config: dict) -> None:
    tensors = {}
    for key, f in factors.items():
        tensors[f"base_model.model.{names[key]}.lora_A.weight"] = f["A"]
        tensors[f"base_model.model.{names[key]}.lora_B.weight"] = f["B"]
    tmp = atomic_save_path(out / "adapter_model.safetensors")
    save_file(dict(sorted(tensors.items())), str(tmp), metadata={"format": "pt"})
    commit_path(tmp, out / "adapter_model.safetensors")
    write_json(out / "adapter_config.json", config)


def _gguf_layout(model, keys: list[str]) -> tuple[str, dict[str, tuple[str, int | None]]]:
    """llama.cpp's architecture name for ``model`` and, per dW key, its GGUF tensor name and the head count whose
    RoPE permutation its rows take (``None``: rows as they are)."""
    import gguf

    arch = getattr(model.config, "model_type", None)
    if arch not in GGUF_QK_PERMUTED:
        raise ExportError(f"GGUF export knows the llama.cpp layout of {sorted(GGUF_QK_PERMUTED)}, not '{arch}'; "
                          "export --format peft and convert it with llama.cpp's convert_lora_to_gguf.py")
    arch_id = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch)
    name_map = gguf.get_tensor_name_map(arch_id, model.config.num_hidden_layers)
    n_head, n_kv = model.config.num_attention_heads, getattr(model.config, "num_key_value_heads", None) or model.config.num_attention_heads
    layout = {}
    for key in keys:
        name = name_map.get_name(key, try_suffixes=(".weight",))
        if name is None:
            raise ExportError(f"{key} has no llama.cpp tensor name for {arch}; export --format peft instead")
        heads = None
        if GGUF_QK_PERMUTED[arch] and key.endswith("q_proj.weight"):
            heads = n_head
        elif GGUF_QK_PERMUTED[arch] and key.endswith("k_proj.weight"):
            heads = n_kv
        layout[key] = (name, heads)
    return arch, layout


def rope_permute(rows: torch.Tensor, n_head: int, inverse: bool = False) -> torch.Tensor:
    """llama.cpp's q/k row order (``LlamaModel.permute`` in convert_hf_to_gguf): per head, the two RoPE halves
    interleaved. ``rows`` ``[n_head · head_dim, ...]``; ``inverse`` undoes it."""
    half = rows.shape[0] // n_head // 2
    if inverse:
        return rows.reshape(n_head, half, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)
    return rows.reshape(n_head, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _write_gguf(out: Path, factors: dict, model) -> None:
    import gguf

    arch, layout = _gguf_layout(model, list(factors))
    top = max(f["rank"] for f in factors.values())
    tmp = atomic_save_path(out / GGUF_FILE)
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(top))  # scale = adapter_scale · alpha / k = adapter_scale
    for key in sorted(factors):
        name, heads = layout[key]
        b, a, k = factors[key]["B"], factors[key]["A"], factors[key]["rank"]
        b = torch.cat([b, b.new_zeros(b.shape[0], top - k)], 1)  # [out, top]
        a = torch.cat([a, a.new_zeros(top - k, a.shape[1])], 0)  # [top, in]
        if heads is not None:
            b = rope_permute(b, heads)
        writer.add_tensor(f"{name}.lora_a", a.numpy())
        writer.add_tensor(f"{name}.lora_b", b.contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    commit_path(tmp, out / GGUF_FILE)


def exported_delta(model, path: str | Path, keys: list[str]) -> dict[str, torch.Tensor]:
    """The weight change ``B @ A`` ``[out, in]`` per dW key that the adapter in ``path`` adds at scale 1, read back from
    its file (PEFT safetensors or ``adapter.gguf``, with llama.cpp's q/k row order undone).

    Raises:
        ExportError: the folder holds neither format, or lacks a tensor for one of ``keys``.
    """
    path = Path(path)
    if (path / GGUF_FILE).is_file():
        import gguf

        _, layout = _gguf_layout(model, keys)
        stored = {t.name: torch.from_numpy(t.data.copy()) for t in gguf.GGUFReader(str(path / GGUF_FILE)).tensors}
        scale = 1.0  # alpha = the padded rank (see _write_gguf)
        factors = {}
        for key in keys:
            name, heads = layout[key]
            if f"{name}.lora_a" not in stored:
                raise ExportError(f"{path / GGUF_FILE} has no {name}.lora_a for {key}; re-export with `wsteer export --force`")
            b = stored[f"{name}.lora_b"]
            factors[key] = scale * (rope_permute(b, heads, inverse=True) if heads is not None else b) @ stored[f"{name}.lora_a"]
        return factors
    if (path / "adapter_model.safetensors").is_file():
        from safetensors.torch import load_file

        adapter = load_file(str(path / "adapter_model.safetensors"))
        out = {}
        for key in keys:
            module = f"base_model.model.{key.removesuffix('.weight')}"
            if f"{module}.lora_A.weight" not in adapter:
                raise ExportError(f"{path} has no LoRA tensors for {key}; re-export with `wsteer export --force`")
            out[key] = adapter[f"{module}.lora_B.weight"] @ adapter[f"{module}.lora_A.weight"]
        return out
    raise ExportError(f"{path} holds no exported adapter (adapter_model.safetensors or {GGUF_FILE}); export one with `wsteer export`")


def load_exported(model, path: str | Path):
    """The base ``model`` with the exported adapter at ``path`` loaded by PEFT (``PeftModel.from_pretrained``, scale 1).

    Note: PEFT wraps ``model`` in place (its Linear layers become LoRA layers); unload with ``.unload()``.

    Raises:
        FileNotFoundError: no ``adapter_config.json``. ExportError: it is not valid JSON (the file is named).
    """
    from peft import PeftModel

    if not (Path(path) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no adapter_config.json in {path}; export one with `wsteer export`")
    try:
        json.loads((Path(path) / "adapter_config.json").read_text())
    except ValueError as err:
        raise ExportError(f"{Path(path) / 'adapter_config.json'} is not valid JSON ({err}); re-export with `wsteer export --force`") from err
    return PeftModel.from_pretrained(model, str(path))


def export_kl(model, tokenizer, dw: DeltaWeights, path: str | Path, prompts: list[str], n_tokens: int = 32) -> dict:
    """KL(export ‖ exact dW) at α = 1 on ``prompts`` (nats; p95, mean, max over generated positions), written into ``export.json``.

    The model is steered by the exact dW and the residual (B @ A − dW) is the "steer" measured by
    :func:`weight_steering.evaluation.calibrate.kl_from_base`, so the reference distribution is the exact dW's.
    """

    exported = exported_delta(model, path, list(dw.tensors))
    residual = {key: exported[key] - tensor for key, tensor in dw.tensors.items()}  # [out, in]
    with steer(model, dw, 1.0):
        stats = kl_from_base(model, tokenizer, residual, 1.0, prompts, n_tokens)
    result = {"p95": stats.p95, "mean": stats.mean, "max": stats.max, "n_prompts": stats.n_prompts, "alpha": 1.0}
    info = json.loads((Path(path) / "export.json").read_text())
    write_json(Path(path) / "export.json", {**info, "kl_export_vs_exact": result})
    return result


def llama_cpp_logratios(gguf_model: str | Path, adapter: str | Path | None, alpha: float, token_ids: list[list[int]],
                        answer_ids: list[list[int]], threads: int = 2) -> list[float]:
    """log P(first answer set) − log P(second) after each row's tokens, served by llama.cpp (``llama-cpp-python``) with
    ``adapter`` (an ``adapter.gguf``) at scale α. ``token_ids``: N rows of token ids; returns N log-odds (nats).

    Raises:
        ExportError: llama-cpp-python is not installed (the message gives the install command).
    """
    try:
        from llama_cpp import Llama
    except ImportError as err:
        raise ExportError("serving a GGUF adapter needs llama-cpp-python: pip install llama-cpp-python (builds llama.cpp from source)") from err
    kwargs = {"lora_path": str(adapter), "lora_scale": float(alpha)} if adapter is not None else {}
    llm = Llama(model_path=str(gguf_model), n_ctx=1024, n_threads=threads, n_batch=512, logits_all=True, verbose=False, **kwargs)
    out = []
    try:
        for ids in token_ids:
            llm.reset()
            llm.eval(ids)
            log_p = torch.log_softmax(torch.tensor(llm.scores[llm.n_tokens - 1], dtype=torch.float64), -1)  # [vocab] (logits_all keeps them)
            out.append(float(torch.logsumexp(log_p[answer_ids[0]], 0) - torch.logsumexp(log_p[answer_ids[1]], 0)))
    finally:
        llm.close()
    return out


def check_gguf_export(model, tokenizer, dw: DeltaWeights, rows: list[dict], gguf_model: str | Path, adapter_dir: str | Path,
                      alphas=(-1.0, 0.0, 1.0), threads: int = 2) -> dict:
    """llama.cpp serving the exported ``adapter_dir/adapter.gguf`` on ``gguf_model`` against the fp32 model steered by α·dW.

    Both score the same token ids (``rows``: Yes/No eval rows, :mod:`weight_steering.evaluation.rows`). The base differs by
    llama.cpp's quantised arithmetic, so the result is an agreement: per α the Spearman ρ over rows and the mean
    |Δ logratio| between the two, and per α ≠ 0 the mean effect (logratio − α = 0's) in each, whether the two effects
    have the same sign, and the share of rows whose effects agree in sign.
    """
    import numpy as np
    from scipy.stats import spearmanr


    sets = answer_sets(tokenizer, YES_NO)
    token_ids = [tokenizer(r["text"], add_special_tokens=False)["input_ids"] for r in rows]
    records = evaluate(model, tokenizer, dw, rows, alphas=tuple(alphas))
    fp32 = {a: np.array([r["logratio"] for r in records if r["alpha"] == a]) for a in alphas}
    served = {a: np.array(llama_cpp_logratios(gguf_model, Path(adapter_dir) / GGUF_FILE, a, token_ids, sets, threads)) for a in alphas}
    result = {"n_rows": len(rows), "per_alpha": {}}
    for a in alphas:
        result["per_alpha"][f"{a:+g}"] = {"spearman_rho": float(spearmanr(fp32[a], served[a]).statistic),
                                         "mean_abs_diff": float(np.abs(fp32[a] - served[a]).mean()),
                                         "mean_logratio_fp32": float(fp32[a].mean()), "mean_logratio_llama_cpp": float(served[a].mean())}
        if a != 0 and 0.0 in fp32:
            effect_fp32, effect_served = fp32[a] - fp32[0.0], served[a] - served[0.0]
            result["per_alpha"][f"{a:+g}"].update({
                "effect_fp32": float(effect_fp32.mean()), "effect_llama_cpp": float(effect_served.mean()),
                "same_direction": bool(np.sign(effect_fp32.mean()) == np.sign(effect_served.mean())),
                "row_sign_agreement": float(np.mean(np.sign(effect_fp32) == np.sign(effect_served))),
                "effect_spearman_rho": float(spearmanr(effect_fp32, effect_served).statistic)})
    return result


def run_export(dw_path: str | Path, out: str | Path, fmt: str = "peft", rank: int | None = None, energy: float | None = None,
               model: str = DEFAULT_MODEL, kl_prompts: int = 20, force: bool = False, device: str | None = None,
               dtype: str | None = None) -> dict:
    """``wsteer export``: check the request, the machine and the dW file before loading the model, export, and for a
    truncated export measure its KL to the exact dW at α = 1 on the first ``kl_prompts`` neutral calibration prompts.

    Returns:
        ``{"path", "info"}`` (the folder and its ``export.json``), plus ``"kl"`` (:func:`export_kl`) for a truncated export.

    Raises:
        ExportError: a bad request (:func:`check_export_request`). DeviceError, DeltaWeightsError, ModelNotAvailableError.
    """
    check_export_request(out, fmt, rank, energy, force)
    check_machine(device, dtype)
    delta = load_dw(dw_path)
    loaded, tokenizer = load_model(model, device, dtype)
    check_fits(delta, loaded)
    path = export_dw(delta, loaded, out, fmt, rank, energy, force)
    result = {"path": path, "info": json.loads((path / "export.json").read_text(encoding="utf-8"))}
    if rank is not None or energy is not None:
        prompts = [p["instruction"] for p in neutral_split(load_neutral())[0]][:kl_prompts]
        result["kl"] = export_kl(loaded, tokenizer, delta, path, prompts)
    return result
