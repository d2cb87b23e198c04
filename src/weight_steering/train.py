"""Stage 2, train: one parameter-efficient adapter per sign, then its merged weight delta Δ.

The adapter is trained on ``[user: prompt, assistant: response_<sign>]`` with the persona system
prompt removed (the chat template's own default system prompt, if it has one, stays), with the
loss on assistant tokens only (Fierro & Roger 2025 §3).

No copy of the model is made: the adapter is attached to the loaded model (PEFT injects its layers in place), trained,
and removed again (``unload``), also when training fails, so the model comes back bit-exactly. Δ = W_merged − W_original
is taken one adapted module at a time: an fp32 copy of that module alone is merged (PEFT's own ``merge``, the
arithmetic of a whole-model ``merge_and_unload``) and compared with the *original* base weight. A family that rewrites
the base at initialisation (PiSSA: the residual W − A₀B₀) keeps the originals of the modules it adapts, on the CPU, and
they are restored after.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .artifacts import SafetensorsSpool, check_number
from .chat import training_ids
from .decoding import pad_batch

log = logging.getLogger(__name__)

LINEAR_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class AdapterFamilyError(ValueError):
    """Unknown adapter family, or a family whose PEFT config rejects the target modules."""


@dataclass(frozen=True)
class TrainConfig:
    """Adapter training settings (LoRA defaults follow the reference's Axolotl-style config).

    Attributes:
        family: adapter family name in :data:`ADAPTER_FAMILIES`.
        rank, alpha: adapter rank r and scaling alpha (LoRA scale = alpha / r). Families without a
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
    alpha: int = 64
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
        for name in ("rank", "alpha", "batch_size", "max_length"):
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


def _rank_alpha(cfg: TrainConfig, **extra) -> dict:
    return {"r": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": 0.0, "bias": "none", **extra}


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
    "loha": AdapterFamily("LoHaConfig", 2e-3, lambda c, layers: {"r": c.rank, "alpha": c.alpha},
                          "(B₁A₁) ⊙ (B₂A₂)·α/r, one factor zero at init (Δ₀ = 0)."),
    "lokr": AdapterFamily("LoKrConfig", 2e-3, lambda c, layers: {"r": c.rank, "alpha": c.alpha},
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


def tokenize_example(tokenizer, prompt: str, response: str, max_length: int, system: str | None = None) -> dict:
    """Token ids and labels for one ``[system?, user, assistant]`` example; labels are −100 on the prompt.

    The prompt is the text the response was sampled after, with the persona removed (no ``system`` here: the template's
    own default system prompt, if it has one, stays), and the loss covers the response and the template's end of turn
    (:func:`weight_steering.chat.training_ids`, the chat contract).

    Raises:
        ValueError: the rendered prompt is not a token prefix of the rendered example.
    """
    head = ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": prompt}]
    return training_ids(tokenizer, head, response, max_length)


def _collate(examples: list[dict], pad_id: int, device) -> dict:
    ids, mask = pad_batch([e["input_ids"] for e in examples], pad_id)
    labels, _ = pad_batch([e["labels"] for e in examples], -100)
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def split_rows(n_rows: int, validation_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/validation split of row indices (the same split for both signs)."""
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(validation_fraction * n_rows)) if validation_fraction > 0 and n_rows > 1 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])


@torch.no_grad()
def _mean_loss(model, examples: list[dict], batch_size: int, pad_id: int) -> float:
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = _collate(examples[start : start + batch_size], pad_id, model.device)
        n_tokens = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * n_tokens
        count += n_tokens
    return total / max(count, 1)


def train_adapter(model, tokenizer, rows: list[dict], sign: str, cfg: TrainConfig = TrainConfig(),
                  adapter_dir: str | Path | None = None, delta_path: str | Path | None = None) -> tuple[dict | Path, dict]:
    """Train one adapter on the ``sign`` responses, attached to ``model`` itself, and return its merged delta.

    Args:
        model: the base model. The adapter is attached in place and removed after (also on an exception); the model
            comes back with its weights, ``requires_grad`` flags and train/eval mode as they were (no copy is made).
        rows: pairs from :func:`weight_steering.data.generate_pairs`.
        sign: ``"positive"`` (θ⁺) or ``"negative"`` (θ⁻).
        adapter_dir: where to save the trained adapter (PEFT's ``save_pretrained``), before it is removed.
        delta_path: write Δ to this safetensors file one module at a time (the bytes of ``save_file`` on the dict;
            :class:`weight_steering.artifacts.SafetensorsSpool`) instead of returning it, so that Δ, as large as every
            adapted weight in fp32, is never held in memory whole.

    Returns:
        ``(delta, log)``: ``delta`` maps parameter names to fp32 CPU tensors Δ = W_merged − W_original (touched tensors
        only, shapes of the base weights; :func:`iter_adapter_delta`), or is ``delta_path`` when given; ``log`` holds
        losses, steps, the wall time and its parts ``step_loop_seconds`` (the optimiser steps) and ``delta_seconds``
        (the Δ extraction), in seconds.

    Raises:
        AdapterFamilyError, ValueError: bad family, sign or layer fraction.
    """
    from peft import get_peft_model

    if sign not in ("positive", "negative"):
        raise ValueError(f"sign must be 'positive' or 'negative', got {sign!r}")
    started = time.perf_counter()
    cfg = resolve_train_config(cfg)
    peft_config = make_peft_config(cfg, model.config.num_hidden_layers)
    train_idx, val_idx = split_rows(len(rows), cfg.validation_fraction, cfg.seed)
    examples = [tokenize_example(tokenizer, r["prompt"], r[f"response_{sign}"], cfg.max_length) for r in rows]
    train_examples = [examples[i] for i in train_idx]
    val_examples = [examples[i] for i in val_idx]
    pad_id = tokenizer.pad_token_id

    originals = _adapted_originals(model, peft_config) if adapter_family(cfg.family).rewrites_base else {}
    base_params = {name: param.dim() for name, param in model.named_parameters()}
    torch.manual_seed(cfg.seed)
    describe = (f"adapter family '{cfg.family}' on {getattr(model.config, '_name_or_path', 'the model')} (target modules {list(cfg.target_modules)} in layers "
                f"{layer_slice(model.config.num_hidden_layers, cfg.layer_fraction)})")
    with attached_adapter(model, lambda m: get_peft_model(m, peft_config), originals, describe) as peft_model:
        targets = adapted_targets(peft_model, cfg, base_params)  # said before the first step: what the adapter covers, what it left out
        effective = _effective_options(peft_model, cfg)
        norm_delta_at_init = math.sqrt(sum(float(d.pow(2).sum()) for _, d in iter_adapter_delta(peft_model, originals)))
        peft_model.train()
        trainable = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(train_examples) / cfg.batch_size)
        total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
        warmup = min(cfg.warmup_steps, total_steps - 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: (step + 1) / (warmup + 1) if step < warmup else max(0.0, (total_steps - step) / max(1, total_steps - warmup))
        )
        generator = torch.Generator().manual_seed(cfg.seed)
        order: list[int] = []
        losses = []
        val_before = _mean_loss(peft_model, val_examples, cfg.batch_size, pad_id) if val_examples else float("nan")
        _synchronise(model)
        loop_started = time.perf_counter()
        for step in tqdm(range(total_steps), desc=f"training {cfg.family} {sign}", unit="step"):
            if len(order) < cfg.batch_size:
                order += torch.randperm(len(train_examples), generator=generator).tolist()
            batch_idx, order = order[: cfg.batch_size], order[cfg.batch_size :]
            batch = _collate([train_examples[i] for i in batch_idx], pad_id, peft_model.device)
            loss = peft_model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        _synchronise(model)
        loop_seconds = time.perf_counter() - loop_started
        del optimizer, trainable, scheduler
        peft_model.eval()
        val_after = _mean_loss(peft_model, val_examples, cfg.batch_size, pad_id) if val_examples else float("nan")
        delta_started = time.perf_counter()
        if delta_path is None:
            delta = adapter_delta(peft_model, originals)
        else:
            spool = SafetensorsSpool(delta_path)
            for name, diff in iter_adapter_delta(peft_model, originals):
                spool.add(name, diff)
            delta = spool.commit()
        delta_seconds = time.perf_counter() - delta_started
        if adapter_dir is not None:
            peft_model.save_pretrained(str(adapter_dir))
    train_log = {
        "sign": sign,
        "family": cfg.family,
        "config": asdict(cfg),
        "n_train": len(train_examples),
        "n_validation": len(val_examples),
        "steps": total_steps,
        "train_loss": losses,
        "validation_loss_before": val_before,
        "validation_loss_after": val_after,
        "norm_delta_at_init": norm_delta_at_init,
        "effective_options": effective,
        "targets": targets,
        "wall_seconds": time.perf_counter() - started,
        "step_loop_seconds": loop_seconds,
        "delta_seconds": delta_seconds,
    }
    log.info("%s %s: %d steps, val loss %.4f -> %.4f", cfg.family, sign, total_steps, val_before, val_after)
    return delta, train_log


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


@contextlib.contextmanager
def attached_adapter(model, attach: Callable, originals: dict[str, torch.Tensor] | None = None, describe: str = "the adapter"):
    """Attach an adapter to ``model`` in place and yield the PEFT model; on exit, normal or by exception, remove it
    (PEFT's ``unload``: the original modules back, nothing merged) and put back what attaching changed: the parameters
    in ``originals`` (base weights a family rewrote, :func:`_adapted_originals`), every ``requires_grad`` flag and the
    train/eval mode.

    Args:
        attach: ``model -> PeftModel`` (``get_peft_model(m, config)`` or ``PeftModel.from_pretrained(m, path)``).
        describe: how the error message names the adapter.

    Raises:
        AdapterFamilyError: PEFT rejects the adapter's target modules (the model is left as it was).
    """
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    training = model.training
    try:
        peft_model = attach(model)
    except ValueError as err:
        _restore(model, originals or {}, requires_grad, training)
        raise AdapterFamilyError(f"{describe} cannot be attached to this model: {err}. Choose other --target-modules or set the "
                                 "family's options (e.g. block or group size).") from err
    try:
        yield peft_model
    finally:
        peft_model.unload()
        _restore(model, originals or {}, requires_grad, training)


def _synchronise(model) -> None:
    """Wait for the model's device, so that a timing covers the work queued on a GPU."""
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def _adapted_originals(model, peft_config) -> dict[str, torch.Tensor]:
    """CPU copies of the parameters of every module ``peft_config`` will adapt (for families that rewrite them)."""
    from peft.tuners.tuners_utils import check_target_module_exists

    return {f"{name}.{key}": param.detach().to("cpu", copy=True) for name, module in model.named_modules()
            if name and check_target_module_exists(peft_config, name) for key, param in module.named_parameters(recurse=False)}


@torch.no_grad()
def _restore(model, originals: dict[str, torch.Tensor], requires_grad: dict[str, bool], training: bool) -> None:
    """Put back what attaching an adapter changed: rewritten base weights, ``requires_grad`` flags, the train/eval mode."""
    params = dict(model.named_parameters())
    for name, saved in originals.items():
        params[name].copy_(saved)
    for name, flag in requires_grad.items():
        params[name].requires_grad_(flag)
    model.train(training)


def _effective_options(peft_model, cfg: TrainConfig) -> dict:
    """Settings PEFT changed on its own, with a warning. PEFT 0.21 drops BOFT's butterfly factor to 1
    when its CUDA extension cannot be built (always on CPU): BOFT is then block-diagonal rotations."""
    if cfg.family == "boft" and any(getattr(m, "fbd_cuda_available", True) is False for m in peft_model.modules()):
        log.warning("BOFT: PEFT could not build its CUDA extension and uses boft_n_butterfly_factor=1 "
                    "(block-diagonal orthogonal blocks, no butterfly); the requested factor applies only on CUDA")
        return {"boft_n_butterfly_factor": 1}
    return {}


@torch.no_grad()
def iter_adapter_delta(peft_model, originals: dict[str, torch.Tensor] | None = None):
    """Yield ``(parameter name, Δ)`` for every base parameter an attached adapter changes, one module at a time.

    Δ = W_merged − W_original in fp32 on the CPU: for each adapted module (a PEFT tuner layer), an fp32 copy of that
    module alone is merged with PEFT's ``merge`` (the arithmetic of ``merge_and_unload`` on an fp32 copy of the whole
    model, without the copy) and its base parameters are compared with the originals: ``originals[name]`` where given
    (a family that rewrote the base at initialisation, PiSSA), else the base layer's current parameter. Unchanged
    tensors are skipped; the order is the model's parameter order. ``peft_model`` is left unmerged and unchanged, and
    at most one module's Δ is held at a time.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    originals = originals or {}
    seen: set[str] = set()
    for name, module in peft_model.get_base_model().named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        merged = copy.deepcopy(module).to(torch.float32)  # one module: [out, in] base weight (or [E, ·, ·] experts) + its adapter
        merged.merge()
        for key, param in merged.get_base_layer().named_parameters():
            # the model's own name: PEFT nests one ParamWrapper per fused expert parameter (…experts.base_layer.gate_up_proj)
            full = base_parameter_name(f"{name}.{key}")
            base = originals.get(full, module.get_base_layer().get_parameter(key)).detach().to("cpu", torch.float32)
            diff = param.detach().to("cpu", torch.float32) - base
            if torch.any(diff != 0):
                if full in seen:
                    raise RuntimeError(f"adapter delta: {full} changed under two adapter layers; this PEFT layout is not supported")
                seen.add(full)
                yield full, diff.contiguous()
        del merged


def base_parameter_name(name: str) -> str:
    """A parameter's name in the base model, from its name inside a PEFT-wrapped module (``.base_layer`` removed)."""
    return name.replace(".base_layer", "")


def adapter_delta(peft_model, originals: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """:func:`iter_adapter_delta` as a dict: ``{parameter name: fp32 CPU tensor}`` with the base parameter's shape."""
    return dict(iter_adapter_delta(peft_model, originals))
