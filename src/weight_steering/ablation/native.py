"""dW in the adapter's own parameterisation: DoRA's magnitude and direction parts and DeLoRA's normalised factors, for the native-parameterisation variants."""

from __future__ import annotations

from pathlib import Path

import torch

from .variants import AblationError


def dora_parts(adapter_dir: str | Path, base: dict) -> dict[str, dict]:
    """One DoRA adapter's merged update split into its direction and magnitude parts.

    DoRA (Liu et al. 2024, eq. 5) merges to W′ = (m / ‖V‖) ⊙ V with V = W + s·BA, s = lora_alpha / r
    and ‖·‖ the norm of each output row (PEFT's convention; ``m`` and the norms are ``[out]``). With
    the base norms n = ‖W‖:

    * direction = (n / ‖V‖) ⊙ V − W: the new direction at the base magnitudes;
    * magnitude = ((m − n) / n) ⊙ W: the new magnitudes along the base directions;
    * interaction = W′ − W − direction − magnitude = (m − n) ⊙ (V/‖V‖ − W/n), second order.

    Args:
        adapter_dir: a PEFT DoRA adapter saved with ``save_pretrained`` (safetensors + JSON config only).
        base: ``{parameter name: W [out, in]}`` of the base model (e.g. ``model.layers.9.mlp.down_proj.weight``).

    Returns:
        ``{"direction", "magnitude", "interaction"}``, each ``{parameter name: [out, in]}`` in fp64.

    Raises:
        AblationError: the adapter is not DoRA, uses rsLoRA / fan_in_fan_out, or names a weight missing from ``base``.
    """
    import json

    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if not config.get("use_dora") or config.get("use_rslora") or config.get("fan_in_fan_out"):
        raise AblationError(f"{adapter_dir} is not a plain DoRA adapter (use_dora={config.get('use_dora')}, "
                            f"use_rslora={config.get('use_rslora')}, fan_in_fan_out={config.get('fan_in_fan_out')})")
    scaling = config["lora_alpha"] / config["r"]
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    parts: dict[str, dict] = {"direction": {}, "magnitude": {}, "interaction": {}}
    for key in sorted(k for k in state if k.endswith(".lora_magnitude_vector")):
        module = key[: -len(".lora_magnitude_vector")]
        name = module.removeprefix("base_model.model.") + ".weight"
        if name not in base:
            raise AblationError(f"the base model has no weight {name} (named by {adapter_dir})")
        w = base[name].double()
        v = w + scaling * state[f"{module}.lora_B.weight"].double() @ state[f"{module}.lora_A.weight"].double()
        m, n, norm_v = state[key].double(), w.norm(dim=1), v.norm(dim=1)
        merged = (m / norm_v)[:, None] * v - w
        parts["direction"][name] = (n / norm_v)[:, None] * v - w
        parts["magnitude"][name] = ((m - n) / n)[:, None] * w
        parts["interaction"][name] = merged - parts["direction"][name] - parts["magnitude"][name]
    if not parts["direction"]:
        raise AblationError(f"{adapter_dir} has no DoRA magnitude vectors")
    return parts


def delora_parts(adapter_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One DeLoRA adapter's update split into its learned scale λ and its unit-bounded direction.

    DeLoRA (Bini et al. 2025, arXiv 2503.18225; PEFT ``DeloraLayer._compute_delta``) merges to
    W′ = W + λ · D with D = B · diag(1 / (r ‖A_i‖ ‖B^i‖)) · A · diag(‖W_{:,j}‖): λ is one learned scalar
    per module, D is normalised per rank-one component and scaled by the frozen base column norms.

    Args:
        adapter_dir: a PEFT DeLoRA adapter saved with ``save_pretrained`` (safetensors + JSON config only).

    Returns:
        ``{parameter name: (λ [scalar], D [out, in])}`` in fp64.

    Raises:
        AblationError: the adapter is not DeLoRA or has no DeLoRA tensors.
    """
    import json

    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("peft_type") != "DELORA":
        raise AblationError(f"{adapter_dir} is not a DeLoRA adapter (peft_type={config.get('peft_type')})")
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    out = {}
    for key in sorted(k for k in state if k.endswith(".delora_lambda")):
        module = key[: -len(".delora_lambda")]
        a, b = state[f"{module}.delora_A"].double(), state[f"{module}.delora_B"].double()
        scale = 1.0 / a.shape[0] / (a.norm(dim=1).clamp(min=1e-4) * b.norm(dim=0).clamp(min=1e-4))
        direction = (b * scale) @ a * state[f"{module}.delora_w_norm"].double()[None, :]
        out[module.removeprefix("base_model.model.") + ".weight"] = (state[key].double().reshape(()), direction)
    if not out:
        raise AblationError(f"{adapter_dir} has no DeLoRA tensors")
    return out


def native_dw_parts(positive_dir: str | Path, negative_dir: str | Path, family: str, base: dict) -> dict[str, dict] | None:
    """Adapter-native parts of dW = θ⁺ − θ⁻ (each part of θ⁺ minus the same part of θ⁻), or None when
    the family has no additive native split here.

    DoRA: ``dora_direction``, ``dora_magnitude`` and ``dora_interaction`` (:func:`dora_parts`).

    DeLoRA (:func:`delora_parts`, Δ± = λ± D±): with λ̄ = (λ⁺ + λ⁻)/2 and D̄ = (D⁺ + D⁻)/2,
    dW = λ̄ (D⁺ − D⁻) + (λ⁺ − λ⁻) D̄ exactly: ``delora_direction`` (the directions differ at the mean
    scale) and ``delora_scale`` (the scales differ along the mean direction).

    OFT's rotation multiplies the base weight, so its part of dW is not separable from the base:
    OFT (and every other family) returns None and its native variants are marked unavailable.
    """
    if family == "dora":
        plus = dora_parts(Path(positive_dir) / "adapter", base)
        minus = dora_parts(Path(negative_dir) / "adapter", base)
        return {f"dora_{part}": {k: plus[part][k] - minus[part][k] for k in plus[part]} for part in plus}
    if family == "delora":
        plus, minus = delora_parts(Path(positive_dir) / "adapter"), delora_parts(Path(negative_dir) / "adapter")
        direction, scale = {}, {}
        for name, (lambda_plus, d_plus) in plus.items():
            lambda_minus, d_minus = minus[name]
            direction[name] = (lambda_plus + lambda_minus) / 2 * (d_plus - d_minus)
            scale[name] = (lambda_plus - lambda_minus) * (d_plus + d_minus) / 2
        return {"delora_direction": direction, "delora_scale": scale}
    return None
