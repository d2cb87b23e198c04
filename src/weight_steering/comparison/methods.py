"""The registry of comparison methods (as PEFT registers its tuners): key -> how to build the method from one :class:`MethodContext`. A new method is one function plus one `@register_method` line; `wsteer compare --methods` and :func:`weight_steering.comparison.run.run_comparison` then calibrate, evaluate and table it like every other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from ..core.activations import (
    ContrastActivations,
    contrast_activations,
    contrast_pairs,
    direction_agreement,
    s_space_vector,
    separation_by_layer,
    steering_vector,
    vector_method,
)
from ..core.chat import default_system_prompt
from ..core.diff import dw_identity
from ..core.methods import SteeringMethod, engineered_method, persona_method, weight_method
from ..main_job.stages import recipe_dw


@dataclass
class MethodContext:
    """What a comparison method is built from: the model, the persona-contrast pairs dW was trained on, dW itself.

    Attributes:
        pair_rows: rows of ``pairs.jsonl``; ``data_sha`` and ``base_hash`` identify them and the base weights.
        slice_layers: dW's decoder layers (the adapters' layer slice).
        dw, dw_label: the comparison's dW and its label in tables.
        n_contrast_pairs, reading, s_space_rank: as in :class:`weight_steering.comparison.run.CompareConfig`.
        job: the comparison's main job (:class:`weight_steering.main_job.stages.Job`), for methods that train their own dW.
    """

    model: object
    tokenizer: object
    behavior: object
    pair_rows: list[dict]
    data_sha: str
    base_hash: str
    slice_layers: list[int]
    dw: object
    dw_label: str
    n_contrast_pairs: int = 64
    reading: str = "response_mean"
    s_space_rank: int = 8
    job: object = None

    @cached_property
    def pairs(self) -> list[tuple[str, str, str]]:
        """The persona contrast as text pairs (:func:`contrast_pairs`)."""
        return contrast_pairs(self.tokenizer, self.pair_rows, self.n_contrast_pairs)

    @cached_property
    def activations(self) -> ContrastActivations:
        """The contrast's block outputs on every layer, read once for every activation method."""
        return contrast_activations(self.model, self.tokenizer, self.pairs, list(range(self.model.config.num_hidden_layers)),
                                    reading=self.reading)

    @property
    def common(self) -> dict:
        """The identity shared by the activation methods' stage keys (the data, the base, how the pairs were read)."""
        return {"data": self.data_sha, "base": self.base_hash, "n_pairs": len(self.pairs), "reading": self.reading}

    @property
    def span(self) -> str:
        return f"layers {self.slice_layers[0]}–{self.slice_layers[-1]}"


@dataclass(frozen=True)
class RegisteredMethod:
    """One entry of :data:`COMPARISON_METHODS`: ``build(context) -> (method, spec)``; ``spec`` names the method in
    stage keys (what it was built from), so a changed input recomputes its stages. ``in_all``: part of
    ``--methods all`` (False for a method that costs a training run of its own, such as ``dW_paper``)."""

    key: str
    description: str
    build: Callable[[MethodContext], tuple[SteeringMethod, dict]]
    in_all: bool = True


COMPARISON_METHODS: dict[str, RegisteredMethod] = {}


MEASURED_SPEC_FIELDS = ("direction_agreement", "separation")  # reported with the method, not in its stage keys


def keyed_spec(spec: dict) -> dict:
    """The part of a method's spec that names it in stage keys: what it was built from. Measured diagnostics
    (:data:`MEASURED_SPEC_FIELDS`: cos(CAA, PCA) per layer, d′ per layer) are left out: they are floats computed on
    this machine, whose low bits differ across CPU kernel paths, so keying on them would recompute an archived
    comparison on another CPU (the chosen layers, which they decide, stay in the key)."""
    return {k: v for k, v in spec.items() if k not in MEASURED_SPEC_FIELDS}


def register_method(key: str, description: str, in_all: bool = True):
    """Decorator: register ``build(context) -> (SteeringMethod, spec)`` under ``key`` in :data:`COMPARISON_METHODS`
    (``in_all``: included in ``--methods all``, :func:`all_methods`).

    Raises:
        ValueError: ``key`` is already registered.
    """
    def add(build):
        if key in COMPARISON_METHODS:
            raise ValueError(f"a comparison method named {key!r} is already registered; choose another key")
        COMPARISON_METHODS[key] = RegisteredMethod(key, description, build, in_all)
        return build
    return add


def all_methods() -> tuple[str, ...]:
    """The keys ``--methods all`` means: every registered method but those that train a dW of their own."""
    return tuple(k for k, entry in COMPARISON_METHODS.items() if entry.in_all)


def _prompts_spec(method: SteeringMethod) -> dict:
    return {"prompts": [method.system_prompt(1.0), method.system_prompt(-1.0)]}


@register_method("dW", "weight steering α·dW")
def _dw(context: MethodContext):

    return weight_method(context.dw, context.dw_label), {"dw": dw_identity(context.dw)}


@register_method("dW_paper", "weight steering α·dW, dW trained on the paper's recipe at 2-core size (preset paper_2core: "
                 "LoRA r 32 / lora_alpha 16 on every layer and linear module, ≥ 500 pairs per sign, 128-token replies; "
                 "trains its own dW, so it is named, not part of --methods all)", in_all=False)
def _dw_paper(context: MethodContext):

    dw = recipe_dw(context.job, "paper_2core")
    return weight_method(dw, "dW (paper recipe)"), {"dw": dw_identity(dw)}


@register_method("persona", "persona prompt (positive / negative persona as system prompt)")
def _persona(context: MethodContext):
    method = persona_method(context.behavior, base_system=default_system_prompt(context.tokenizer))
    return method, _prompts_spec(method)


@register_method("engineered", "engineered prompt (AxBench style, resources/prompts)")
def _engineered(context: MethodContext):
    method = engineered_method(context.behavior.name, default_system_prompt(context.tokenizer))
    return method, _prompts_spec(method)


@register_method("caa_slice", "activation mean-difference (CAA) on the dW layer slice")
def _caa_slice(context: MethodContext):
    return (vector_method(steering_vector(context.activations, "mean", context.slice_layers), f"CAA ({context.span})"),
            {**context.common, "layers": context.slice_layers})


@register_method("pca_slice", "activation PCA (RepE) on the dW layer slice")
def _pca_slice(context: MethodContext):
    agreement = {str(k): v for k, v in direction_agreement(context.activations).items()}  # cos(CAA, PCA), per-pair sign agreement
    return (vector_method(steering_vector(context.activations, "pca", context.slice_layers), f"PCA/RepE ({context.span})"),
            {**context.common, "layers": context.slice_layers, "aggregator": "pca", "direction_agreement": agreement})


@register_method("caa_all", "activation mean-difference (CAA) on all layers")
def _caa_all(context: MethodContext):
    n_layers = context.model.config.num_hidden_layers
    return vector_method(steering_vector(context.activations, "mean"), f"CAA (all {n_layers} layers)"), {**context.common, "layers": "all"}


@register_method("caa_increments", "CAA on all layers, each layer's increment d^l − d^(l−1) of the mean difference (Fierro & Roger 2025)")
def _caa_increments(context: MethodContext):
    n_layers = context.model.config.num_hidden_layers
    return (vector_method(steering_vector(context.activations, "mean", increments=True), f"CAA increments (all {n_layers} layers)"),
            {**context.common, "layers": "all", "increments": True})


@register_method("caa_best", "activation mean-difference (CAA) at the best single layer (largest d′ on the training contrast)")
def _caa_best(context: MethodContext):
    separation = separation_by_layer(context.activations)
    best = max(separation, key=separation.get)
    return (vector_method(steering_vector(context.activations, "mean", [best]), f"CAA (layer {best})"),
            {**context.common, "layers": [best], "separation": separation})


@register_method("s_space", "CAA on the dW layer slice projected onto the top-r left singular vectors of [W_o | W_down]")
def _s_space(context: MethodContext):
    projected = s_space_vector(context.model, steering_vector(context.activations, "mean", context.slice_layers), context.s_space_rank)
    return (vector_method(projected, f"S-space CAA r={context.s_space_rank} ({context.span})"),
            {**context.common, "layers": context.slice_layers, "rank": context.s_space_rank})
