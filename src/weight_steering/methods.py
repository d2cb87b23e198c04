"""Steering methods on one protocol: for a signed strength, a context in which the model is steered.

Weight steering (α·dW), prompting (a persona system prompt per sign) and activation steering
(a steering vector added to the residual stream through the maintained ``steering-vectors``
library) all become a :class:`SteeringMethod`, so KL measurement and calibration
(:mod:`weight_steering.calibrate`) take any of them.

Why steering-vectors (0.12.2) and not repeng (0.4.0): it is maintained, HF-native (hooks found by
layer name, removed on exit), has mean-difference (CAA) and PCA (RepE) aggregators built in, and
does not pin ``numpy<2`` as repeng does. Its metadata pins ``transformers<5``; it works with
transformers 5.23 on Llama-family models (checked in the tests), so it is installed with
``--no-deps``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from .steer import steer


@dataclass(frozen=True)
class SteeringMethod:
    """A steering method.

    Attributes:
        name: label used in tables.
        apply: ``(model, strength) -> context manager`` that steers the model inside the ``with``
            block and restores it after (weights or hooks); a no-op for prompt methods.
        system_prompt: ``strength -> system prompt or None`` (prompt methods); None for the others.
        continuous: whether the strength is a continuous knob (calibratable). Prompt methods have
            one setting per sign; their KL is reported instead of calibrated.
    """

    name: str
    apply: Callable[[object, float], contextlib.AbstractContextManager]
    system_prompt: Callable[[float], str | None] = lambda strength: None
    continuous: bool = True


def weight_method(dw, name: str = "dW") -> SteeringMethod:
    """α·dW added to the weights (:func:`weight_steering.steer.steer`; bit-exact restore)."""
    return SteeringMethod(name, lambda model, alpha: steer(model, dw, alpha))


def prompt_method(name: str, positive: str, negative: str) -> SteeringMethod:
    """A system prompt per sign: ``positive`` for strength > 0, ``negative`` for < 0, none at 0.

    Raises:
        ValueError: an empty prompt.
    """
    if not positive.strip() or not negative.strip():
        raise ValueError(f"prompt method '{name}' needs a non-empty positive and negative system prompt")
    return SteeringMethod(name, lambda model, strength: contextlib.nullcontext(),
                          lambda strength: positive if strength > 0 else negative if strength < 0 else None, continuous=False)


def persona_method(behavior, index: int = 0) -> SteeringMethod:
    """The behaviour's ``index``-th persona pair as a prompt baseline (the positive persona for +)."""
    return prompt_method(f"persona prompt ({behavior.name})", behavior.positive_system_prompts[index],
                         behavior.negative_system_prompts[index])


def activation_method(model, tokenizer, pairs: list[tuple[str, str]], layers: list[int], aggregator: str = "mean",
                      name: str | None = None) -> SteeringMethod:
    """Activation steering with a vector trained by ``steering-vectors`` on (positive, negative) texts.

    Args:
        pairs: rendered (positive text, negative text) pairs; activations are read at the last token.
        layers: decoder layers to read and steer.
        aggregator: ``"mean"`` (mean difference, CAA; Rimsky et al. 2024) or ``"pca"`` (first principal
            component of the differences, RepE; Zou et al. 2023).

    Raises:
        ImportError: steering-vectors is not installed (says how to install it).
        ValueError: unknown aggregator or no pairs.
    """
    try:
        from steering_vectors import mean_aggregator, pca_aggregator, train_steering_vector
    except ImportError as err:
        raise ImportError("activation baselines need steering-vectors: pip install --no-deps 'steering-vectors==0.12.2' "
                          "scikit-learn (its transformers<5 pin is stale; see weight_steering.methods)") from err
    aggregators = {"mean": mean_aggregator, "pca": pca_aggregator}
    if aggregator not in aggregators:
        raise ValueError(f"unknown aggregator '{aggregator}'; choose one of {', '.join(aggregators)}")
    if not pairs:
        raise ValueError("activation_method needs at least one (positive, negative) pair")
    vector = train_steering_vector(model, tokenizer, pairs, layers=layers, layer_type="decoder_block",
                                   read_token_index=-1, aggregator=aggregators[aggregator](), show_progress=False)
    label = name or f"activation {'CAA' if aggregator == 'mean' else 'PCA'} (layers {layers[0]}–{layers[-1]})"
    return SteeringMethod(label, lambda model, strength: vector.apply(model, multiplier=strength))
