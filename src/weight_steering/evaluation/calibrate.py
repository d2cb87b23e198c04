"""Stage 5, calibrate: how far a steering method moves the model from its base, in KL on neutral prompts.

:func:`kl_from_base` is the measurement behind iso-KL calibration (every method set to the same p95 KL, steering-lite's convention) and the
KL columns of the degradation table: greedy-decode ``n_tokens`` under the steer with the cached decoder
(:func:`weight_steering.core.decoding.decode`, keeping the raw logits of each step as the steered distributions), score the same tokens under the unsteered base
with teacher forcing, and take per position

    KL(steered ‖ base) = Σ_v p_steered(v) · (log p_steered(v) − log p_base(v))   [nats]

over the full vocabulary, in fp32. The steered generation stops where the model stops (its EOS or
end-of-turn token; no minimum length is forced), and positions after that stop are excluded, so
text the model would not have written never enters the statistics. The
statistics are the mean, the 95th percentile (p95 over all (prompt, position) pairs, the iso-KL
statistic) and the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.chat import render_chat, stop_token_ids
from ..core.decoding import decode, prefill
from ..core.methods import as_method


@dataclass(frozen=True)
class KLStats:
    """KL(steered ‖ base) over (prompt, position) pairs, in nats.

    Attributes:
        mean, p95, max: statistics over all kept positions.
        per_position: ``[n_positions]`` the kept values (prompt-major).
        prompt_index: ``[n_positions]`` the prompt each value comes from (for bootstrap CIs over prompts).
        n_prompts, n_positions: counts; ``n_forward_passes``: model forward passes spent per batch (one
            per generated token, plus the base's teacher-forced pass).
    """

    mean: float
    p95: float
    max: float
    per_position: np.ndarray
    prompt_index: np.ndarray
    n_prompts: int
    n_positions: int
    n_forward_passes: int


@torch.inference_mode()
def kl_from_base(model, tokenizer, method, alpha: float, prompts: list[str], n_tokens: int = 32, batch_size: int = 128) -> KLStats:
    """KL(steered ‖ base) per generated position on ``prompts`` under a steer (see the module docstring).

    Args:
        model, tokenizer: the base model (restored bit-exactly after each steered pass).
        method: a :class:`~weight_steering.core.methods.SteeringMethod`, or a dW (:class:`~weight_steering.core.diff.DeltaWeights`
            or ``{name: tensor}``) for weight steering; strength 0 gives KL = 0.
        alpha: the signed strength.
        prompts: user messages, rendered with the chat template and a generation prompt. A prompt
            method's system prompt is present in the steered pass only: the base scores the same
            generated tokens after the bare prompt.
        n_tokens: greedy tokens generated per prompt.
        batch_size: prompts decoded together (128 holds the comparison's 65 calibration prompts in one batch:
            a remainder batch of one prompt costs a whole decode at one row per GEMM).

    Raises:
        ValueError: no prompts, or ``n_tokens < 1``.
    """
    if not prompts or n_tokens < 1:
        raise ValueError("kl_from_base needs at least one prompt and n_tokens >= 1")
    method = as_method(method)
    system = method.system_prompt(alpha)
    stops = sorted(stop_token_ids(tokenizer, model))
    values, owners, passes = [], [], 0
    base_texts = [render_chat(tokenizer, [{"role": "user", "content": p}]) for p in prompts]
    steered_texts = base_texts if system is None else [
        render_chat(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": p}]) for p in prompts]
    for start in range(0, len(prompts), batch_size):
        steered_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in steered_texts[start : start + batch_size]]
        with method.apply(model, alpha):  # the steered distributions are the raw logits of each greedy step
            decoded = decode(model, steered_ids, n_tokens, set(stops), tokenizer.pad_token_id, keep_logits=True)
        n_steps = max(d.logits.shape[0] for d in decoded)                  # S: the batch's longest continuation
        # the base scores the same tokens after the bare prompt, teacher-forced, each row's tokens padded to S (what
        # follows a row's stop cannot reach its kept positions); the LM head runs on the last S + 1 positions only
        sequences = [tokenizer(t, add_special_tokens=False)["input_ids"]
                     + d.tokens + [tokenizer.pad_token_id] * (n_steps - len(d.tokens))
                     for t, d in zip(base_texts[start : start + batch_size], decoded)]
        logits, *_ = prefill(model, sequences, tokenizer.pad_token_id, logits_to_keep=n_steps + 1)   # [B, S + 1, V]
        base = torch.log_softmax(logits[:, :-1].float(), dim=-1)          # [B, S, V]
        passes += n_steps + 1
        for offset, d in enumerate(decoded):
            steered = torch.log_softmax(d.logits.float(), dim=-1)         # [s, V], s = its steps up to and with the stop
            kl = (steered.exp() * (steered - base[offset, : steered.shape[0]])).sum(-1)   # [s]
            values.append(kl.cpu().numpy())
            owners.append(np.full(steered.shape[0], start + offset))
    flat = np.concatenate(values).astype(np.float64)
    flat = np.clip(flat, 0.0, None)  # tiny negative values are fp32 rounding
    return KLStats(float(flat.mean()), float(np.percentile(flat, 95)), float(flat.max()), flat, np.concatenate(owners),
                   len(prompts), flat.size, passes)


@dataclass(frozen=True)
class Calibration:
    """Result of :func:`calibrate_alpha` for one sign.

    Attributes:
        alpha: the chosen signed strength (the closest one measured when ``converged`` is False).
        p95, mean, max: KL statistics at ``alpha`` (nats).
        target, tolerance: the p95 target and the accepted |p95 − target| (nats).
        converged: |p95 − target| ≤ tolerance.
        iterations: KL measurements made; ``n_forward_passes``: their forward passes in total.
        history: ``[(alpha, p95), ...]`` in measurement order.
        message: why it stopped when it did not converge ("" otherwise).
    """

    alpha: float
    p95: float
    mean: float
    max: float
    target: float
    tolerance: float
    converged: bool
    iterations: int
    n_forward_passes: int
    history: list
    message: str = ""


def calibrate_alpha(measure, sign: int, target: float = 1.0, tolerance: float = 0.05, start: float = 1.0,
                    max_abs_alpha: float = 64.0, min_abs_alpha: float = 1 / 64, max_iterations: int = 14,
                    exponent: float = 2.0, max_step: float = 16.0) -> Calibration:
    """Find α of the given sign where the p95 KL from the base equals ``target`` (iso-KL calibration).

    The search works on x = log|α| and y = log p95 − log target, where KL grows as a power of |α|
    (p95 ≈ c·|α|^p: KL ≈ ½α²·Fisher for small α, so p ≈ 2). From the first
    measurement it steps by the power law with ``exponent`` as the prior slope; from the second on,
    by the secant through the two measurements nearest the target (slope clamped to [0.25, 8]);
    once the target is bracketed every step stays inside the tightest bracket (regula falsi, with
    bisection when the secant leaves it). A pure power law converges in two measurements, a bent one
    in about three; the old ×2 bracketing took four to six (docs/RESULTS.md §4, "Calibration").

    Args:
        measure: ``α -> KLStats`` (e.g. ``lambda a: kl_from_base(model, tok, dw, a, prompts)``).
        sign: +1 or −1; each sign is calibrated on its own, so α₋ ≠ −α₊ in general.
        target: p95 KL target in nats (> 0, finite). tolerance: accepted |p95 − target| in nats.
        start: the first |α| measured (the other sign's calibrated |α| is a good start).
        exponent: prior power-law slope d log p95 / d log|α| for the first step (> 0).
        max_step: the largest factor by which one step may change |α|.

    Returns:
        :class:`Calibration`. If no α in [min_abs_alpha, max_abs_alpha] reaches the target, the
        closest α measured is returned with ``converged=False`` and a message; if the method leaves
        the model unchanged (p95 ≈ 0 at ``max_abs_alpha``) it says so.

    Raises:
        ValueError: ``target`` ≤ 0 or not finite, ``sign`` not ±1, or a bad tolerance / start / exponent.
    """
    if not np.isfinite(target) or target <= 0:
        raise ValueError(f"the KL target must be a finite number of nats > 0; got {target}")
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1; got {sign}")
    if not (tolerance > 0 and np.isfinite(start) and start > 0 and exponent > 0 and max_step > 1):
        raise ValueError("tolerance, start and exponent must be finite and > 0, max_step > 1")
    start = float(np.clip(start, min_abs_alpha, max_abs_alpha))
    history: list[tuple[float, float]] = []
    stats: dict[float, KLStats] = {}
    points: list[tuple[float, float]] = []  # (x = log|α|, y = log p95 − log target)
    passes = 0

    def done(abs_alpha: float, converged: bool, message: str = "") -> Calibration:
        s = stats[abs_alpha]
        return Calibration(sign * abs_alpha, s.p95, s.mean, s.max, target, tolerance, converged, len(history), passes, history, message)

    def closest() -> float:
        return min(stats, key=lambda a: abs(stats[a].p95 - target))

    x_lo, x_hi = np.log(min_abs_alpha), np.log(max_abs_alpha)
    x = np.log(start)
    while True:
        abs_alpha = float(np.exp(x))
        result = measure(sign * abs_alpha)
        stats[abs_alpha] = result
        passes += result.n_forward_passes
        history.append((sign * abs_alpha, result.p95))
        if abs(result.p95 - target) <= tolerance:
            return done(abs_alpha, True)
        points.append((x, float(np.log(max(result.p95, 1e-12)) - np.log(target))))
        if len(history) >= max_iterations:
            return done(closest(), False, f"no |p95 − target| ≤ {tolerance} within {max_iterations} measurements")
        below = [p for p in points if p[1] < 0]
        above = [p for p in points if p[1] > 0]
        if below and above and max(below)[0] < min(above)[0]:  # bracketed: stay inside the tightest bracket
            (x0, y0), (x1, y1) = max(below), min(above)
            x_new = x0 - y0 * (x1 - x0) / (y1 - y0)
            if not (x0 < x_new < x1) or min(x_new - x0, x1 - x_new) < 1e-3 * (x1 - x0):
                x_new = 0.5 * (x0 + x1)
        else:
            # all measurements on one side: step on from the one nearest the target's side (largest |α| when
            # all are below it), with the secant slope of the two nearest once there are two
            ordered = sorted(points, reverse=not above)
            slope = exponent
            if len(ordered) >= 2 and ordered[0][0] != ordered[1][0]:
                secant = (ordered[0][1] - ordered[1][1]) / (ordered[0][0] - ordered[1][0])
                slope = float(np.clip(secant, 0.25, 8.0)) if secant > 0 else exponent
            x_near, y_near = ordered[0]
            x_new = x_near - float(np.clip(y_near / slope, -np.log(max_step), np.log(max_step)))
        x_new = float(np.clip(x_new, x_lo, x_hi))
        if any(abs(x_new - p[0]) < 1e-9 for p in points):  # pinned at a bound already measured
            value = stats[float(np.exp(x_new))].p95 if float(np.exp(x_new)) in stats else result.p95
            if x_new >= x_hi - 1e-9:
                if value < 1e-6:
                    return done(closest(), False, f"the method does not change the model: p95 KL ≈ {value:.1e} nats at |α| = {max_abs_alpha:g}")
                return done(closest(), False, f"target {target} nats not reached at |α| ≤ {max_abs_alpha:g} (p95 {value:.3f} at |α| = {max_abs_alpha:g})")
            if x_new <= x_lo + 1e-9:
                return done(closest(), False, f"p95 KL stays above {target} nats down to |α| = {min_abs_alpha:g}")
            return done(closest(), False, "the search stalled (p95 KL is not monotone in |α| here)")
        x = x_new
