"""Stage 4, steer: θ = θ_base + α·dW, applied in place and restored bit-exactly."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from .diff import DeltaWeights, DeltaWeightsError


def check_alpha(alpha: float) -> float:
    """Return ``float(alpha)``; raise ``ValueError`` for NaN or ±Inf."""
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"steering strength α must be finite, got {alpha}; pass a real number such as 1.0")
    return alpha


def check_alpha_grid(alphas, why: str = "the unsteered reference of every contrast") -> tuple[float, ...]:
    """The α grid as finite floats (:func:`check_alpha`); raise ``ValueError`` if it lacks 0 (``why`` says what 0 is for)."""
    alphas = tuple(check_alpha(a) for a in alphas)
    if 0.0 not in alphas:
        raise ValueError(f"the α grid {list(alphas)} must include 0 ({why}), e.g. -1,0,1")
    return alphas


@contextlib.contextmanager
def steer(model, dw: DeltaWeights | dict[str, torch.Tensor], alpha: float) -> Iterator[object]:
    """Add α·dW to the model's weights inside the ``with`` block (Fierro & Roger 2025, Eq. 1).

    Each touched parameter is backed up before any is changed; the sum is formed in fp32 and cast
    to the parameter's dtype. On exit, normal or by exception, every backed-up tensor is copied
    back, so the weights are restored bit-exactly. α = 0 changes nothing.

    Args:
        model: a transformers model whose parameter names match ``dw``'s keys.
        dw: a :class:`DeltaWeights` or a plain ``{name: tensor}`` dict.
        alpha: steering strength (dimensionless); +α moves toward the positive persona.

    Raises:
        ValueError: non-finite α.
        DeltaWeightsError: a dW key that is not a parameter of the model, or a shape mismatch.
    """
    alpha = check_alpha(alpha)
    tensors = dw.tensors if isinstance(dw, DeltaWeights) else dw
    params = dict(model.named_parameters())
    missing = [k for k in tensors if k not in params]
    if missing:
        raise DeltaWeightsError(f"dW keys are not parameters of this model: {missing[:5]}; load the model the dW was made for")
    bad_shape = [k for k in tensors if tuple(params[k].shape) != tuple(tensors[k].shape)]
    if bad_shape:
        raise DeltaWeightsError(f"dW shapes do not match the model for {bad_shape[:5]}")
    if alpha == 0.0:
        yield model
        return
    backups = {k: params[k].detach().clone() for k in tensors}
    try:
        with torch.no_grad():
            for key, delta in tensors.items():
                param = params[key]
                steered = param.detach().float() + alpha * delta.to(param.device, torch.float32)
                param.data.copy_(steered.to(param.dtype))
        yield model
    finally:
        with torch.no_grad():
            for key, saved in backups.items():
                params[key].data.copy_(saved)


