"""Steering methods on one protocol: for a signed strength α, a context in which the model is steered.

Weight steering (α·dW), prompting (a persona system prompt per sign) and activation steering
(a steering vector added to the residual stream through the maintained ``steering-vectors``
library) all become a :class:`SteeringMethod`, so KL measurement and calibration
(:mod:`weight_steering.evaluation.calibrate`) take any of them.

Why steering-vectors (0.12.2) and not repeng (0.4.0): it is maintained, HF-native (hooks found by
layer name, removed on exit), has mean-difference (CAA) and PCA (RepE) aggregators built in, and
does not pin ``numpy<2`` as repeng does. Its metadata pins ``transformers<5``; it works with
transformers 5.23 on Llama-family models (checked in the tests), so it is installed with
``--no-deps``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from .steer import steer


@dataclass(frozen=True)
class SteeringMethod:
    """A steering method.

    Attributes:
        name: label used in tables.
        apply: ``(model, α) -> context manager`` that steers the model inside the ``with`` block and restores it
            after, exactly, also on an exception (weights bit-exactly, or hooks removed); a no-op for prompt methods.
        system_prompt: ``α -> system prompt or None`` (prompt methods); None for the others.
        continuous: whether α is a continuous knob (calibrated to a KL budget). Prompt methods have
            one setting per sign; their KL is reported instead of calibrated.
    """

    name: str
    apply: Callable[[object, float], contextlib.AbstractContextManager]
    system_prompt: Callable[[float], str | None] = lambda alpha: None
    continuous: bool = True


def weight_method(dw, name: str = "dW") -> SteeringMethod:
    """α·dW added to the weights (:func:`weight_steering.core.steer.steer`; bit-exact restore)."""
    return SteeringMethod(name, lambda model, alpha: steer(model, dw, alpha))


def as_method(steering) -> SteeringMethod:
    """The one conversion at the public boundary: a :class:`SteeringMethod` as it is; a dW (``DeltaWeights`` or a
    ``{parameter: tensor}`` dict) as :func:`weight_method`; ``None`` as the unsteered model (an empty dW)."""
    if isinstance(steering, SteeringMethod):
        return steering
    return weight_method(steering if steering is not None else {})


def prompt_method(name: str, positive: str, negative: str, base_system: str | None = None) -> SteeringMethod:
    """A system prompt per sign: ``positive`` for α > 0, ``negative`` for α < 0, none at 0.

    The arms differ from the unsteered base in one thing only, the persona text: when the chat
    template inserts a default system prompt into a conversation without one (``base_system``, see
    :func:`weight_steering.core.chat.default_system_prompt`; SmolLM2 does), the persona is appended to that
    default rather than replacing it, and α = 0 renders exactly as the base arm (no system turn,
    so the template's default).

    Raises:
        ValueError: an empty prompt.
    """
    if not positive.strip() or not negative.strip():
        raise ValueError(f"prompt method '{name}' needs a non-empty positive and negative system prompt")
    full = {+1: positive, -1: negative} if not base_system else {+1: f"{base_system}\n\n{positive}", -1: f"{base_system}\n\n{negative}"}
    return SteeringMethod(name, lambda model, alpha: contextlib.nullcontext(),
                          lambda alpha: full[+1] if alpha > 0 else full[-1] if alpha < 0 else None, continuous=False)


def persona_method(behavior, index: int = 0, base_system: str | None = None) -> SteeringMethod:
    """The behaviour's ``index``-th persona pair as a prompt baseline (the positive persona for +);
    ``base_system``: the template's default system prompt, kept in every arm (:func:`prompt_method`)."""
    return prompt_method(f"persona prompt ({behavior.name})", behavior.positive_system_prompts[index],
                         behavior.negative_system_prompts[index], base_system)


def engineered_prompts() -> dict[str, dict]:
    """The shipped engineered (AxBench-style) system prompts: ``behaviour -> {"positive", "negative", ...}``.

    How they were written is in ``resources/prompts/README.md``.
    """
    from importlib import resources

    return json.loads((resources.files("weight_steering") / "resources" / "prompts" / "engineered.json").read_text())


def engineered_method(behavior_name: str, base_system: str | None = None) -> SteeringMethod:
    """The engineered prompt baseline of a behaviour (positive prompt for +, negative for −).

    Raises:
        ValueError: no engineered prompt ships for this behaviour (names the ones that do).
    """
    prompts = engineered_prompts()
    if behavior_name not in prompts:
        raise ValueError(f"no engineered prompt for behaviour '{behavior_name}'; shipped: {', '.join(sorted(prompts))}. "
                         "Add one to resources/prompts/engineered.json or use the persona prompt baseline.")
    entry = prompts[behavior_name]
    return prompt_method(f"engineered prompt ({behavior_name})", entry["positive"], entry["negative"], base_system)




