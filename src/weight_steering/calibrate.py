"""Stage 5, calibrate: how far a steer moves the model from its base, in KL on neutral prompts.

:func:`kl_from_base` is the measurement behind iso-KL calibration (weight_steering_spec §6) and the
KL columns of the degradation table: greedy-generate ``n_tokens`` under the steer, score the same
tokens under the unsteered base with teacher forcing, and take per position

    KL(steered ‖ base) = Σ_v p_steered(v) · (log p_steered(v) − log p_base(v))   [nats]

over the full vocabulary, in fp32. Positions after the first stop token are excluded. The
statistics are the mean, the 95th percentile (p95 over all (prompt, position) pairs, the iso-KL
statistic) and the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .data import render_chat, stop_token_ids
from .steer import steer


@dataclass(frozen=True)
class KLStats:
    """KL(steered ‖ base) over (prompt, position) pairs, in nats.

    Attributes:
        mean, p95, max: statistics over all kept positions.
        per_position: ``[n_positions]`` the kept values (prompt-major).
        n_prompts, n_positions: counts; ``n_forward_passes``: model forward passes spent (generation
            steps counted one per token, plus the two teacher-forced passes per batch).
    """

    mean: float
    p95: float
    max: float
    per_position: np.ndarray
    n_prompts: int
    n_positions: int
    n_forward_passes: int


@torch.inference_mode()
def kl_from_base(model, tokenizer, dw, alpha: float, prompts: list[str], n_tokens: int = 32, batch_size: int = 16) -> KLStats:
    """KL(steered ‖ base) per generated position on ``prompts`` under α·dW (see the module docstring).

    Args:
        model, tokenizer: the base model (restored bit-exactly after each steered pass).
        dw: a :class:`~weight_steering.diff.DeltaWeights` or ``{name: tensor}``; α = 0 gives KL = 0.
        prompts: user messages, rendered with the chat template and a generation prompt.
        n_tokens: greedy tokens generated per prompt.

    Raises:
        ValueError: no prompts, or ``n_tokens < 1``.
    """
    if not prompts or n_tokens < 1:
        raise ValueError("kl_from_base needs at least one prompt and n_tokens >= 1")
    stops = torch.tensor(sorted(stop_token_ids(tokenizer)))
    values, passes = [], 0
    texts = [render_chat(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        width = batch["input_ids"].shape[1]
        with steer(model, dw, alpha):
            sequences = model.generate(**batch, do_sample=False, max_new_tokens=n_tokens, min_new_tokens=n_tokens,
                                       pad_token_id=tokenizer.pad_token_id)
            mask = torch.cat([batch["attention_mask"], torch.ones_like(sequences[:, width:])], dim=1)
            steered = _log_probs(model, sequences, mask, width)
        base = _log_probs(model, sequences, mask, width)
        passes += n_tokens + 2
        kl = (steered.exp() * (steered - base)).sum(-1)  # [batch, n_generated]
        generated = sequences[:, width:].cpu()
        is_stop = torch.isin(generated, stops)
        after_stop = (is_stop.cumsum(1) - is_stop.long()) > 0  # keep the stop position itself, drop what follows
        for row, drop in zip(kl.cpu(), after_stop):
            values.append(row[~drop].numpy())
    flat = np.concatenate(values).astype(np.float64)
    flat = np.clip(flat, 0.0, None)  # tiny negative values are fp32 rounding
    return KLStats(float(flat.mean()), float(np.percentile(flat, 95)), float(flat.max()), flat, len(prompts), flat.size, passes)


def _log_probs(model, sequences: torch.Tensor, mask: torch.Tensor, width: int) -> torch.Tensor:
    """fp32 log-softmax ``[batch, n_generated, vocab]`` of the distributions that produced each generated token."""
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=sequences, attention_mask=mask, position_ids=positions).logits[:, width - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1)
