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
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..artifacts import SafetensorsSpool
from .adapters import (
    AdapterFamilyError,
    TrainConfig,
    adapted_targets,
    adapter_family,
    base_parameter_name,
    layer_slice,
    make_peft_config,
    resolve_train_config,
)
from .chat import training_ids
from .decoding import pad_batch

log = logging.getLogger(__name__)


def tokenize_example(tokenizer, prompt: str, response: str, max_length: int, system: str | None = None) -> dict:
    """Token ids and labels for one ``[system?, user, assistant]`` example; labels are −100 on the prompt.

    The prompt is the text the response was sampled after, with the persona removed (no ``system`` here: the template's
    own default system prompt, if it has one, stays), and the loss covers the response and the template's end of turn
    (:func:`weight_steering.core.chat.training_ids`, the chat contract).

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
        rows: pairs from :func:`weight_steering.core.data.generate_pairs`.
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


def adapter_delta(peft_model, originals: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """:func:`iter_adapter_delta` as a dict: ``{parameter name: fp32 CPU tensor}`` with the base parameter's shape."""
    return dict(iter_adapter_delta(peft_model, originals))
