"""Batched autoregressive decoding with a KV cache: greedy, or temperature / top-k / top-p sampling.

One loop serves the greedy replies of :func:`weight_steering.core.chat.generate_text` (the main job's generations,
``wsteer generate``), the steered distributions of calibration's KL measurement
(:func:`weight_steering.evaluation.calibrate.kl_from_base`, greedy with every step's logits kept) and the persona-contrast
data (sampling). It does the same arithmetic as transformers' ``generate`` (left padding, positions from the
attention mask, the LM head on the last position only), so greedy decoding gives ``generate``'s tokens, and differs
only in what it skips:

* keys and values go into a preallocated cache (``StaticCache``), one slot per step, instead of being
  concatenated anew every step;
* the token prefix common to all prompts (the chat template's system turn) is prefilled once and its cache rows
  copied (:func:`prefill`; the persona data's seeded sampling opts out, see ``share_prefix``), and identical
  prompts (a prompt sampled ``n_samples`` times) are prefilled once;
* rows that have produced a stop token leave the batch once they are a quarter of it;
* sampling filters on the top-k logits only (``torch.topk``, then top-p on those k), instead of sorting the whole
  vocabulary every step. The sampling distribution is ``generate``'s (temperature, then top-k, then top-p,
  Holtzman et al. 2020); the random draws differ, so sampled text differs from ``generate``'s at the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import StaticCache


@dataclass(frozen=True)
class Sampling:
    """Nucleus-sampling settings; ``temperature`` > 0, ``top_k`` ≥ 1, ``top_p`` in (0, 1]."""

    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0


@dataclass(frozen=True)
class Decoded:
    """One continuation: its tokens up to (not including) the first stop token, and whether a stop token came.

    ``logits`` (only with ``keep_logits``): ``[len(tokens) + hit_stop, V]`` fp32, the raw next-token logits of each
    step that chose a token, the stop token's step included (what ``generate(output_logits=True)`` returns for it).
    """

    tokens: list[int]
    hit_stop: bool
    logits: torch.Tensor | None = None


def pad_batch(seqs: list[list[int]], pad_value: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """The one batch-padding helper: token lists as ``ids [B, T]`` (long, ``pad_value`` where a row is shorter) and
    ``mask [B, T]`` (1 on real tokens), T the longest row (at least 1). ``side="left"`` puts the padding first, as
    decoding needs; labels pad with ``pad_value=-100`` (ignored by the loss).

    Raises:
        ValueError: an unknown side.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right'; got {side!r}")
    width = max(1, max((len(s) for s in seqs), default=0))
    ids = torch.full((len(seqs), width), pad_value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        span = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask = pad_batch(prompts, pad_id, side="left")
    return ids.to(device), mask.to(device)


def common_prefix_length(prompts: list[list[int]]) -> int:
    """The number of leading tokens that all ``prompts`` share (0 for no prompts)."""
    if not prompts:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts)
    for i in range(n):
        if any(p[i] != first[i] for p in prompts[1:]):
            return i
    return n


def prefill(model, prompts: list[list[int]], pad_id: int, *, room: int = 0, logits_to_keep: int = 1, share_prefix: bool = True):
    """Run N prompts through ``model`` into a fresh ``StaticCache``, their common token prefix once.

    The cache holds ``[prefix P][left-padded suffixes S][room]`` slots per row: the prefix is computed for one row and
    its keys and values copied to the N rows, then the suffixes (each prompt after the prefix) run as one left-padded
    batch. Positions come from the attention mask, so every real token has the position it has in its own prompt and
    attends to the same tokens as in ``generate``'s left-padded layout ``[pads][prompt]``: the arithmetic is the same,
    in a different order (results agree to fp32 rounding, not bit for bit). Models with sliding-window layers see
    the same window as long as a row fits in it (the pads count toward a window, as in ``generate``).

    Args:
        prompts: N ≥ 1 token-id lists, each at least ``logits_to_keep`` long (not padded).
        room: cache slots to leave after the prompts (the tokens a decoder will append).
        logits_to_keep: how many final positions of each row go through the LM head; the prefix stops short of
            them, so they are always real tokens of every row.
        share_prefix: False runs every prompt whole (``generate``'s layout and rounding; P = 0).

    Returns:
        ``(logits, mask, last_position, cache)``: ``logits`` ``[N, logits_to_keep, V]``; ``mask`` ``[N, T + room]``
        the attention mask (1 on real tokens, 0 on pads and on the room, T the longest prompt); ``last_position``
        ``[N]`` the position of each row's last token; ``cache`` the filled ``StaticCache``.

    Raises:
        ValueError: no prompts, ``logits_to_keep`` < 1, or a prompt shorter than ``logits_to_keep``.
    """
    if not prompts or logits_to_keep < 1 or min(len(p) for p in prompts) < logits_to_keep:
        raise ValueError(f"prefill needs at least one prompt, each at least logits_to_keep = {logits_to_keep} (≥ 1) "
                         "tokens long; pass fewer logits_to_keep or longer prompts")
    device = model.device
    shared = 0 if len(prompts) == 1 or not share_prefix else min(common_prefix_length(prompts), min(len(p) for p in prompts) - logits_to_keep)
    suffix_ids, suffix_mask = _left_pad([list(p[shared:]) for p in prompts], pad_id, device)   # [N, S]
    width = shared + suffix_ids.shape[1]                                                      # T: the longest prompt
    cache = StaticCache(config=model.config, max_cache_len=width + room)
    mask = torch.zeros((len(prompts), width + room), dtype=torch.long, device=device)        # [N, T + room]
    mask[:, :shared] = 1
    mask[:, shared:width] = suffix_mask
    if shared:   # one row's prefix, then its keys and values copied to every row
        model(input_ids=torch.tensor([list(prompts[0][:shared])], device=device), attention_mask=mask[:1],
              position_ids=torch.arange(shared, device=device)[None], cache=cache, use_cache=True, logits_to_keep=1)
        cache.reorder_cache(torch.zeros(len(prompts), dtype=torch.long, device=device))
    positions = shared + (suffix_mask.cumsum(-1) - 1).masked_fill(suffix_mask == 0, 0)       # [N, S] as in generate
    out = model(input_ids=suffix_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=logits_to_keep)
    return out.logits, mask, positions[:, -1], cache


def sample_from_logits(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from temperature-scaled logits restricted to the top-k, then to the top-p nucleus.

    Args:
        logits: ``[B, V]`` fp32 next-token logits (−inf where a token is forbidden).
        generator: the random stream (default: torch's global one, seeded by ``torch.manual_seed``).

    Returns:
        ``[B]`` token ids. The kept set is the smallest prefix of the k most probable tokens whose mass reaches
        ``top_p`` (a token is kept while the mass of the tokens above it is below ``top_p``), the same set as
        transformers' ``TopPLogitsWarper`` after ``TopKLogitsWarper``.
    """
    k = min(sampling.top_k, logits.shape[-1])
    values, indices = torch.topk(logits, k, dim=-1)                           # [B, k] descending (as after T: T > 0)
    probs = torch.softmax(values / sampling.temperature, dim=-1)              # [B, k]
    mass_above = torch.cumsum(probs, dim=-1) - probs                          # [B, k] mass of more probable tokens
    keep = mass_above < sampling.top_p
    keep[:, 0] = True
    probs = torch.where(keep, probs, torch.zeros_like(probs))
    choice = torch.multinomial(probs, 1, generator=generator)                # [B, 1] (multinomial renormalises)
    return indices.gather(1, choice).squeeze(1)                               # [B]


@torch.inference_mode()
def decode(
    model, prompts: list[list[int]], max_new_tokens: int, stop_ids: set[int], pad_id: int, *,
    min_new_tokens: int = 0, sampling: Sampling | None = None, generator: torch.Generator | None = None,
    keep_logits: bool = False, share_prefix: bool = True,
) -> list[Decoded]:
    """Continue each prompt until a stop token or ``max_new_tokens``; greedy when ``sampling`` is None.

    Args:
        model: a transformers causal LM (any decoder with a KV cache and ``logits_to_keep``).
        prompts: N prompts as token ids (not padded; they are left-padded here as one batch).
        stop_ids: token ids that end a continuation (EOS, end of turn); they are forbidden for the first
            ``min_new_tokens`` steps, as in ``generate``'s ``min_new_tokens``.
        sampling: temperature / top-k / top-p settings; None decodes greedily (argmax).
        keep_logits: also return each row's per-step logits (:attr:`Decoded.logits`; about 0.2 MB per token for a
            49k vocabulary).
        share_prefix: prefill the prompts' common token prefix once (:func:`prefill`). It changes logits at fp32
            rounding only, but a sampled token can flip on such a change: seeded sampling that must reproduce archived
            bytes passes False.

    Returns:
        N :class:`Decoded`, in the order of ``prompts``.

    Raises:
        ValueError: an empty prompt, or ``max_new_tokens`` < 1.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("a prompt has no tokens; every prompt needs at least one token to continue")
    if not prompts:
        return []
    device = model.device
    unique = list(dict.fromkeys(tuple(p) for p in prompts))
    slot_of = {p: i for i, p in enumerate(unique)}
    # A preallocated cache: each step writes one slot instead of re-concatenating every layer's keys and values.
    logits, mask, last_position, cache = prefill(model, [list(p) for p in unique], pad_id, room=max_new_tokens,
                                                 share_prefix=share_prefix)
    logits = logits[:, -1].float()                                                       # [U, V]
    width = mask.shape[1] - max_new_tokens                                               # T: the longest prompt
    rows = torch.tensor([slot_of[tuple(p)] for p in prompts], device=device)             # [N] unique slot of each row
    if len(unique) < len(prompts):
        cache.reorder_cache(rows)                                                        # copy shared prefills
    logits, mask, last_position = logits[rows], mask[rows], last_position[rows]
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    active = torch.arange(len(prompts), device=device)   # [b] the output row of each batch row
    running = torch.ones(len(prompts), dtype=torch.bool, device=device)                  # [b] not yet stopped
    tokens: list[list[int]] = [[] for _ in prompts]
    hit_stop = [False] * len(prompts)
    kept: list[list[torch.Tensor]] = [[] for _ in prompts]   # per row, the [V] logits of its steps
    for step in range(max_new_tokens):
        if keep_logits:   # the raw logits, before min_new_tokens forbids the stops (as generate's output_logits)
            for i, (row, live) in enumerate(zip(active.tolist(), running.tolist())):
                if live:
                    kept[row].append(logits[i].clone())
        if step < min_new_tokens and len(stops):
            logits[:, stops] = float("-inf")
        chosen = logits.argmax(-1) if sampling is None else sample_from_logits(logits, sampling, generator)  # [b]
        done = torch.isin(chosen, stops)                                                 # [b]
        for row, token, live, finished in zip(active.tolist(), chosen.tolist(), running.tolist(), done.tolist()):
            if not live:
                continue
            if finished:
                hit_stop[row] = True
            else:
                tokens[row].append(token)
        running &= ~done
        if step == max_new_tokens - 1 or not bool(running.any()):
            break
        if 4 * int((~running).sum()) >= len(running):   # a quarter of the batch has stopped: drop those rows
            keep = torch.nonzero(running).squeeze(1)                                     # [b']
            cache.reorder_cache(keep)
            active, chosen, mask, last_position, running = active[keep], chosen[keep], mask[keep], last_position[keep], running[keep]
        mask[:, width + step] = 1
        last_position = last_position + 1
        out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=last_position[:, None],
                    cache=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1].float()                                               # [b, V]
    if not keep_logits:
        return [Decoded(t, s) for t, s in zip(tokens, hit_stop)]
    return [Decoded(t, s, torch.stack(k)) for t, s, k in zip(tokens, hit_stop, kept)]
