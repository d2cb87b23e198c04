"""Adapters: the training config, the registry of PEFT adapter families (as PEFT registers its tuners) and the PEFT config each one builds, and which modules of a model it adapts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from ..artifacts import check_number

log = logging.getLogger(__name__)


LINEAR_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdapterFamilyError(ValueError):
    """Unknown adapter family, or a family whose PEFT config rejects the target modules."""


@dataclass(frozen=True)
class TrainConfig:
    """Adapter training settings (LoRA defaults follow the reference's Axolotl-style config).

    Attributes:
        family: adapter family name in :data:`ADAPTER_FAMILIES`.
        rank, lora_alpha: adapter rank r and scaling lora_alpha (LoRA scale = lora_alpha / r; LoHa and LoKr take it as
            their ``alpha``). Not the steering strength α. Families without a
            rank (IA3, RoAd, VeRA, OFT, BOFT) take their own size from the family defaults instead.
        learning_rate: AdamW learning rate; ``None`` takes the family's default
            (:func:`resolve_train_config`), which for LoRA is 2e-4.
        warmup_steps, weight_decay: linear warm-up then linear decay; AdamW weight decay.
        epochs: passes over the training split.
        batch_size: examples per optimiser step.
        max_length: tokens per example (longer examples are cut on the right).
        layer_fraction: adapt layers ``range(round(lo·L), round(hi·L))`` of L decoder layers.
        target_modules: linear projections to adapt.
        validation_fraction: share of rows held out for the validation loss.
        seed: seeds adapter initialisation, the split and the batch order.
        options: extra keyword arguments for the family's PEFT config (override the family defaults,
            e.g. ``{"oft_block_size": 16}``).
    """

    # the adapter
    family: str = "lora"
    rank: int = 32
    lora_alpha: int = 64
    options: dict = field(default_factory=dict)
    # the optimiser
    learning_rate: float | None = None
    warmup_steps: int = 5
    weight_decay: float = 0.01
    # where it adapts
    layer_fraction: tuple[float, float] = (0.3, 0.8)
    target_modules: tuple[str, ...] = field(default=LINEAR_TARGETS)
    # the data
    epochs: float = 1.0
    batch_size: int = 4
    max_length: int = 192
    validation_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        for name in ("rank", "lora_alpha", "batch_size", "max_length"):
            check_number("train", name, getattr(self, name), minimum=1, integer=True)
        check_number("train", "learning_rate", self.learning_rate, above=0, optional=True)
        check_number("train", "epochs", self.epochs, above=0)
        check_number("train", "warmup_steps", self.warmup_steps, minimum=0, integer=True)
        check_number("train", "weight_decay", self.weight_decay, minimum=0)
        check_number("train", "seed", self.seed, minimum=0, integer=True)
        if not (0 < self.validation_fraction < 1):
            raise ValueError(f"train.validation_fraction must lie in (0, 1); got {self.validation_fraction!r}")
        lo, hi = self.layer_fraction
        if not (0 <= lo < hi <= 1):
            raise ValueError(f"train.layer_fraction must be (lo, hi) with 0 ≤ lo < hi ≤ 1; got {self.layer_fraction!r}")


@dataclass(frozen=True)
class AdapterFamily:
    """One PEFT adapter family: its config class, default learning rate and PEFT keyword arguments.

    Attributes:
        config_class: name of the PEFT config class (``peft.<config_class>``).
        learning_rate: default AdamW learning rate for the main job's ~54 steps per sign.
        kwargs: ``(TrainConfig, layer indices) -> dict`` of PEFT config arguments (``target_modules``
            and ``task_type`` are added).
        notes: what the family adapts and how it starts (Δ at initialisation), for the docs.
        rewrites_base: the family changes the adapted base weights when it is attached (PiSSA), so training keeps
            their originals (on the CPU) to take Δ against and to restore.
    """

    config_class: str
    learning_rate: float
    kwargs: Callable[[TrainConfig, list[int]], dict]
    notes: str
    rewrites_base: bool = False  # PEFT rewrites the adapted base weights at initialisation (their originals are kept)


def train_key(train: TrainConfig | dict) -> dict:
    """The training settings as they enter a stage key: every field, with the adapter scale under ``alpha``, its name
    when the archived stages were keyed (``lora_alpha`` since), so a stage trained then keeps its key. Takes a
    :class:`TrainConfig` or the ``train_config`` dict of a dW sidecar of either age."""
    fields = asdict(train) if isinstance(train, TrainConfig) else dict(train)
    if "lora_alpha" in fields:
        fields["alpha"] = fields.pop("lora_alpha")
    return fields


def _rank_alpha(cfg: TrainConfig, **extra) -> dict:
    return {"r": cfg.rank, "lora_alpha": cfg.lora_alpha, "lora_dropout": 0.0, "bias": "none", **extra}


# Adding a family touches only this table. Learning rates: LoRA's 2e-4 for the rank-based and
# orthogonal families; IA3 (1e-2) and RoAd (2e-3) are 2 × the rates the PEFT method-comparison
# benchmark (MetaMathQA) uses against its LoRA 1e-4; VeRA 1e-2 because 4e-3 barely moved the
# validation loss in a 9-step probe (1.626 -> 1.620); LoHa and LoKr 2e-3 because at 2e-4 the same
# probe left them near the start (LoHa ‖Δ‖ = 0.05, validation 1.626 -> 1.624; LoKr 1.626 -> 1.617,
# against 1.558 for LoRA). Nothing was tuned on the evaluation rows.
# Δ at initialisation was measured on SmolLM2-135M (docs/RESULTS.md §6).
ADAPTER_FAMILIES: dict[str, AdapterFamily] = {
    "lora": AdapterFamily("LoraConfig", 2e-4, lambda c, layers: _rank_alpha(c), "W + (α/r)·B·A, B = 0 at init (Δ₀ = 0)."),
    "dora": AdapterFamily("LoraConfig", 2e-4, lambda c, layers: _rank_alpha(c, use_dora=True),
                          "magnitude · (W + BA)/‖W + BA‖ column-wise; Δ₀ = 0."),
    "pissa": AdapterFamily("LoraConfig", 2e-4, lambda c, layers: _rank_alpha(c, init_lora_weights="pissa"),
                           "A, B from the top-r SVD of W, base rewritten to the residual; merged Δ₀ = 0 "
                           "(Δ is taken against the original W).", rewrites_base=True),
    # PEFT's default λ = 15 gave ‖Δ‖ = 145 after 9 steps on SmolLM2 and raised the validation loss
    # 1.63 -> 2.88: with B = 0 at init, the first step already has the full norm λ·‖w‖/r per term.
    # λ = 0.2 puts the bound at the scale LoRA's Δ reaches here (docs/RESULTS.md §6).
    "delora": AdapterFamily("DeloraConfig", 2e-4, lambda c, layers: {"r": c.rank, "delora_lambda": 0.2, "bias": "none"},
                            "(λ/r)·Σ bᵢaᵢᵀ/(‖aᵢ‖‖bᵢ‖) scaled by W's column norms; B = 0 at init (Δ₀ = 0), "
                            "the norm of Δ is bounded by λ from the first step."),
    "oft": AdapterFamily("OFTConfig", 2e-4, lambda c, layers: {"r": 0, "oft_block_size": 32, "bias": "none"},
                         "block-diagonal orthogonal rotation (32×32 blocks, Cayley–Neumann) of the input side; "
                         "identity at init (Δ₀ = 0)."),
    "boft": AdapterFamily("BOFTConfig", 2e-4, lambda c, layers: {"boft_block_size": 8, "boft_n_butterfly_factor": 2, "bias": "none"},
                          "butterfly product of 8×8 orthogonal blocks (2 factors); identity at init (Δ₀ = 0). Without "
                          "PEFT's CUDA extension (any CPU) PEFT itself drops to 1 factor (block-diagonal 8×8 rotations; "
                          "recorded in the train log). The slowest family on CPU (~9 s per step against 2.5 s for LoRA)."),
    "ia3": AdapterFamily("IA3Config", 1e-2, lambda c, layers: {"feedforward_modules": _target_regex(layers, ("down_proj",))},
                         "learned per-feature scales: output side of q/k/v/o/gate/up, input side of down; "
                         "ones at init (Δ₀ = 0). Same layer slice as the others (by module-name pattern)."),
    "vera": AdapterFamily("VeraConfig", 1e-2, lambda c, layers: {"r": 256, "d_initial": 0.1, "bias": "none"},
                          "frozen shared random A, B (r = 256) with trained scaling vectors b, d; b = 0 at init (Δ₀ = 0)."),
    # r = 8 (PEFT's default), not the rank: the r reflections are applied one after another, and
    # r = 32 cost 16.7 s per step on 2 CPU cores against 2.5 s for LoRA.
    "hra": AdapterFamily("HRAConfig", 2e-4, lambda c, layers: {"r": 8, "bias": "none"},
                         "product of 8 Householder reflections on the input side, initialised in identical pairs "
                         "(identity up to rounding: ‖Δ₀‖ = 3e-4 over 105 tensors)."),
    "road": AdapterFamily("RoadConfig", 2e-3, lambda c, layers: {"variant": "road_1", "group_size": 64},
                          "2×2 rotations with scales on output-feature pairs (group 64); identity at init (Δ₀ = 0)."),
    "miss": AdapterFamily("MissConfig", 2e-4, lambda c, layers: {"r": 64, "bias": "none"},
                          "a trained block of r = 64 columns shared across the weight (MiSS); zero at init (Δ₀ = 0)."),
    "loha": AdapterFamily("LoHaConfig", 2e-3, lambda c, layers: {"r": c.rank, "alpha": c.lora_alpha},
                          "(B₁A₁) ⊙ (B₂A₂)·α/r, one factor zero at init (Δ₀ = 0)."),
    "lokr": AdapterFamily("LoKrConfig", 2e-3, lambda c, layers: {"r": c.rank, "alpha": c.lora_alpha},
                          "Kronecker product C ⊗ (BA)·α/r, B = 0 at init (Δ₀ = 0)."),
}


def resolve_train_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with ``learning_rate=None`` replaced by the family's default.

    Raises:
        AdapterFamilyError: unknown family (lists the known ones).
    """
    family = adapter_family(cfg.family)
    return cfg if cfg.learning_rate is not None else replace(cfg, learning_rate=family.learning_rate)


def adapter_family(name: str) -> AdapterFamily:
    """The registered :class:`AdapterFamily` called ``name``.

    Raises:
        AdapterFamilyError: unknown family (lists the known ones).
    """
    if name not in ADAPTER_FAMILIES:
        raise AdapterFamilyError(f"unknown adapter family '{name}'. Known families: {', '.join(ADAPTER_FAMILIES)}")
    return ADAPTER_FAMILIES[name]


def layer_slice(n_layers: int, fraction: tuple[float, float]) -> list[int]:
    """Decoder layer indices ``range(round(lo·n), round(hi·n))``; e.g. 9..23 of 30 for (0.3, 0.8)."""
    lo, hi = round(fraction[0] * n_layers), round(fraction[1] * n_layers)
    if not 0 <= lo < hi <= n_layers:
        raise ValueError(f"layer_fraction {fraction} selects no layers of {n_layers}; use 0 <= lo < hi <= 1")
    return list(range(lo, hi))


def _target_regex(layers: list[int], modules: tuple[str, ...]) -> str:
    """PEFT full-match pattern for ``modules`` inside decoder layers ``layers``.

    A pattern (not ``layers_to_transform``) gives every family, IA3 and RoAd included, the same
    layer slice.
    """
    return rf".*\.layers\.({'|'.join(map(str, layers))})\.(.*\.)?({'|'.join(modules)})"


def make_peft_config(cfg: TrainConfig, n_layers: int):
    """Build the PEFT config of ``cfg.family`` on the layer slice and target modules of ``cfg``.

    Raises:
        AdapterFamilyError: unknown family (lists the known ones), or PEFT rejects the arguments.
    """
    import peft

    family = adapter_family(cfg.family)
    layers = layer_slice(n_layers, cfg.layer_fraction)
    try:
        return getattr(peft, family.config_class)(
            target_modules=_target_regex(layers, tuple(cfg.target_modules)), task_type="CAUSAL_LM",
            **{**family.kwargs(cfg, layers), **cfg.options},
        )
    except (TypeError, ValueError) as err:
        raise AdapterFamilyError(f"adapter family '{cfg.family}' rejects its config (options {cfg.options}): {err}") from err


def check_targets(model, cfg: TrainConfig) -> None:
    """Before any work: the target module names must name something in the adapted layers of ``model``.

    A fused expert parameter (``gate_up_proj``) counts for ``gate_proj`` and ``up_proj``. Names that match nothing are
    logged as a warning when others match (the adapter then covers part of the request; :func:`adapted_targets` says
    what exactly once it is attached).

    Raises:
        AdapterFamilyError: no target name matches any module or parameter in those layers (names the model, the
            names it has there, and the fix).
    """
    layers = {str(i) for i in layer_slice(model.config.num_hidden_layers, cfg.layer_fraction)}
    names = set()
    for full, _ in model.named_parameters():
        parts = full.split(".")
        if "layers" in parts and parts[parts.index("layers") + 1] in layers:
            names.update(parts[parts.index("layers") + 2:])
    if "gate_up_proj" in names:
        names |= {"gate_proj", "up_proj"}
    missing = [t for t in cfg.target_modules if t not in names]
    model_id = getattr(model.config, "_name_or_path", "this model")
    if len(missing) == len(cfg.target_modules):
        present = sorted(n for n in names if n.endswith("proj") or n.endswith("_a") or n.endswith("_b"))
        raise AdapterFamilyError(f"target modules {list(cfg.target_modules)} match nothing in layers {sorted(map(int, layers))} of "
                                 f"{model_id}; its projections there are {present}. Pass --target-modules with some of them")
    if missing:
        log.warning("target modules %s match nothing in %s (its layers have %s); the adapter covers the others only",
                    missing, model_id, sorted(n for n in names if n.endswith("proj")))


def adapted_targets(peft_model, cfg: TrainConfig, base_params: dict[str, int]) -> dict:
    """What an attached adapter covers, against what ``cfg`` asked for; logged, with a warning where they differ.

    ``base_params``: ``{name: ndim}`` of the model's parameters before the adapter was attached.

    PEFT may rewrite the request for a model type (transformers 5 mixture-of-experts models: fused expert parameters
    become ``target_parameters`` and the layer pattern is dropped), and a module name may exist only in some layers
    or not at all (DeepSeek-V3's attention has no ``q_proj``).

    Returns:
        ``{"adapted": [base parameter names], "modules": {target name: count adapted}, "missing": [asked-for names
        that matched nothing], "left_out": [parameters in the asked-for layers named like a target, not adapted],
        "outside_layers": [adapted parameters outside the asked-for layers], "routed_experts": "adapted" | "left out" |
        "none"}``.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = peft_model.get_base_model()
    layers = set(layer_slice(base.config.num_hidden_layers, cfg.layer_fraction))
    adapted = set()
    for name, module in base.named_modules():
        if isinstance(module, BaseTunerLayer):
            owner = base_parameter_name(name)
            wrapped = getattr(module, "parameter_name", None)  # a ParamWrapper (fused experts) adapts one parameter
            adapted.add(f"{owner}.{wrapped}" if wrapped else f"{owner}.weight")

    def layer_of(name: str) -> int | None:
        parts = name.split(".")
        return int(parts[parts.index("layers") + 1]) if "layers" in parts and parts[parts.index("layers") + 1].isdigit() else None

    def matches(name: str, target: str) -> bool:  # a fused gate_up_proj parameter counts for gate_proj and up_proj
        parts = name.split(".")
        return target in parts or (target in ("gate_proj", "up_proj") and parts[-1] == "gate_up_proj")

    asked = {n for n, ndim in base_params.items() if layer_of(n) in layers and ndim >= 2 and any(matches(n, t) for t in cfg.target_modules)}
    modules = {t: sum(matches(n, t) for n in adapted) for t in cfg.target_modules}
    experts = [n for n, ndim in base_params.items() if ndim == 3]
    report = {
        "adapted": sorted(adapted),
        "modules": modules,
        "missing": [t for t, count in modules.items() if count == 0],
        "left_out": sorted(asked - adapted),
        "outside_layers": sorted(n for n in adapted if layer_of(n) not in layers),
        "routed_experts": "none" if not experts else ("adapted" if any(n in adapted for n in experts) else "left out"),
    }
    log.info("adapter %s covers %d parameters: %s; routed experts: %s", cfg.family, len(adapted),
             ", ".join(f"{t} ×{c}" for t, c in modules.items()), report["routed_experts"])
    if report["missing"] or report["left_out"] or report["outside_layers"]:
        log.warning("the adapter covers only part of what was asked for (target modules %s, layers %s): no match for %s; "
                    "left out %d parameters (e.g. %s); %d adapted outside those layers (e.g. %s). Check --target-modules for "
                    "this architecture", list(cfg.target_modules), sorted(layers), report["missing"] or "none",
                    len(report["left_out"]), report["left_out"][:3], len(report["outside_layers"]), report["outside_layers"][:3])
    return report


def base_parameter_name(name: str) -> str:
    """A parameter's name in the base model, from its name inside a PEFT-wrapped module (``.base_layer`` removed)."""
    return name.replace(".base_layer", "")
