"""The candidate base-model subspaces that might predict where dW lives (a registry, one decorator per hypothesis): each builds an orthonormal basis Q [d_model, k] per layer from the base weights, the unembedding or the persona contrast."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.activations import contrast_activations, contrast_pairs

KEY = re.compile(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight$")


WRITE_TENSORS = ("o_proj", "down_proj")


READ_TENSORS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")


SIDES = ("write", "read", "mixed", "ceiling")


class HypothesisError(ValueError):
    """A candidate or score that cannot be built as asked (unknown name, k out of range, no tensors to score)."""


@dataclass
class Context:
    """What candidates are built from. ``weights``: the base model's parameters ``{name: tensor}`` (fp32);
    ``contrast_fit`` / ``contrast_held``: per layer ``[n_pairs, d_model]`` persona-contrast differences (positive −
    negative block outputs) of two disjoint halves of the pairs, or empty; ``dw``: the dW tensors (only the ceiling
    reads them); ``n_heads``: attention heads (for the per-head circuits)."""

    weights: dict[str, torch.Tensor]
    d_model: int
    n_heads: int
    contrast_fit: dict[int, torch.Tensor] = field(default_factory=dict)
    contrast_held: dict[int, torch.Tensor] = field(default_factory=dict)
    dw: dict[str, torch.Tensor] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)  # layer-independent bases (unembedding SVD, token clusters), built once

    def once(self, name: str, build: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        if name not in self.cache:
            self.cache[name] = build()
        return self.cache[name]

    def weight(self, layer: int, projection: str, source: dict | None = None) -> torch.Tensor | None:
        block = "self_attn" if projection in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        tensor = (self.weights if source is None else source).get(f"model.layers.{layer}.{block}.{projection}.weight")
        return None if tensor is None else tensor.double()


@dataclass(frozen=True)
class Candidate:
    """``build(context, layer, k) -> Q [d_model, k]`` orthonormal, or None where its inputs are missing."""

    name: str
    side: str
    description: str
    build: Callable[[Context, int, int], torch.Tensor | None]


CANDIDATES: dict[str, Candidate] = {}


def candidate(name: str, side: str, description: str):
    """Register a candidate builder (one entry per hypothesis; add one with this decorator)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}; got {side}")

    def register(build):
        CANDIDATES[name] = Candidate(name, side, description, build)
        return build
    return register


def _left(w: torch.Tensor, k: int) -> torch.Tensor:  # w [d_model, n] -> top-k left singular vectors [d_model, k]
    u, _, _ = torch.linalg.svd(w, full_matrices=False)
    return u[:, :k]


def _right(w: torch.Tensor, k: int) -> torch.Tensor:  # w [m, d_model] -> top-k right singular vectors [d_model, k]
    _, _, vh = torch.linalg.svd(w, full_matrices=False)
    return vh[:k].T


def _orth(columns: torch.Tensor, k: int) -> torch.Tensor:  # [d_model, n] -> orthonormal basis of its top-k span
    return _left(columns, k)


def _unit(w: torch.Tensor) -> torch.Tensor:
    return w / w.norm().clamp_min(1e-30)


@candidate("o_proj_out", "write", "top left singular vectors of W_o (what attention writes)")
def _o_out(ctx, layer, k):
    w = ctx.weight(layer, "o_proj")
    return None if w is None else _left(w, k)


@candidate("down_proj_out", "write", "top left singular vectors of W_down (what the MLP writes)")
def _down_out(ctx, layer, k):
    w = ctx.weight(layer, "down_proj")
    return None if w is None else _left(w, k)


@candidate("o_down_out", "write", "top left singular vectors of [W_o | W_down], each scaled to unit norm")
def _o_down_out(ctx, layer, k):
    o, down = ctx.weight(layer, "o_proj"), ctx.weight(layer, "down_proj")
    return None if o is None or down is None else _left(torch.cat([_unit(o), _unit(down)], 1), k)


def _read_basis(ctx, layer, k) -> torch.Tensor | None:
    parts = [ctx.weight(layer, p) for p in READ_TENSORS]
    parts = [_unit(p) for p in parts if p is not None]
    return None if not parts else _right(torch.cat(parts, 0), k)


@candidate("o_down_unread", "write", "[W_o | W_down]'s write directions with the next layer's top-k read directions projected out")
def _o_down_unread(ctx, layer, k):
    write, read = _o_down_out(ctx, layer, 2 * k), _read_basis(ctx, layer + 1, k)
    if write is None or read is None:
        return None
    return _orth(write - read @ (read.T @ write), k)  # [d_model, 2k] -> off the next layer's reads -> [d_model, k]


@candidate("ov_top_heads", "write", "top left singular vectors of the OV circuits W_O^h W_V^h of the heads with the largest ‖OV‖")
def _ov_heads(ctx, layer, k):
    o, v = ctx.weight(layer, "o_proj"), ctx.weight(layer, "v_proj")
    if o is None or v is None:
        return None
    head_dim = o.shape[1] // ctx.n_heads
    n_kv = v.shape[0] // head_dim
    circuits = [o[:, h * head_dim:(h + 1) * head_dim] @ v[(h * n_kv // ctx.n_heads) * head_dim:(h * n_kv // ctx.n_heads + 1) * head_dim]
                for h in range(ctx.n_heads)]  # each [d_model, d_model], rank ≤ head_dim
    top = sorted(circuits, key=lambda c: -float(c.norm()))[: max(1, -(-k // head_dim))]
    return _left(torch.cat(top, 1), k)


@candidate("qkv_in", "read", "top right singular vectors of [W_q; W_k; W_v] (what attention reads)")
def _qkv_in(ctx, layer, k):
    parts = [ctx.weight(layer, p) for p in ("q_proj", "k_proj", "v_proj")]
    return None if any(p is None for p in parts) else _right(torch.cat([_unit(p) for p in parts], 0), k)


@candidate("gate_up_in", "read", "top right singular vectors of [W_gate; W_up] (what the MLP reads)")
def _gate_up_in(ctx, layer, k):
    parts = [ctx.weight(layer, p) for p in ("gate_proj", "up_proj")]
    return None if any(p is None for p in parts) else _right(torch.cat([_unit(p) for p in parts], 0), k)


def _lm_head(ctx) -> torch.Tensor | None:
    w = ctx.weights.get("lm_head.weight", ctx.weights.get("model.embed_tokens.weight"))
    return None if w is None else w.double()


def _unembedding_vh(ctx) -> torch.Tensor | None:  # [d_model, d_model] right singular vectors of the unembedding, once
    def build():
        w = _lm_head(ctx)
        return None if w is None else torch.linalg.svd(w, full_matrices=False)[2]
    return ctx.once("unembedding_vh", build)


@candidate("unembed_read", "read", "top right singular vectors of the unembedding (what the logits read)")
def _unembed(ctx, layer, k):
    vh = _unembedding_vh(ctx)
    return None if vh is None else vh[:k].T


@candidate("logits_null", "read", "bottom right singular vectors of the unembedding (what the logits barely see)")
def _logits_null(ctx, layer, k):
    vh = _unembedding_vh(ctx)
    return None if vh is None else vh[-k:].T


@candidate("token_clusters", "mixed", "centroids of k + 1 k-means clusters of the token embeddings, minus their mean (rank ≤ k)")
def _token_clusters(ctx, layer, k):
    from scipy.cluster.vq import kmeans2

    w = ctx.weights.get("model.embed_tokens.weight")
    if w is None:
        return None

    def build():
        centroids, _ = kmeans2(w.double().numpy(), k + 1, seed=0, minit="++")
        return _orth(torch.from_numpy(centroids - centroids.mean(0)).T, k)  # [d_model, k + 1], rank ≤ k -> [d_model, k]
    return ctx.once(f"token_clusters_{k}", build)


@candidate("contrast_pca", "mixed", "top principal directions of the persona-contrast activation differences (fit half)")
def _contrast_pca(ctx, layer, k):
    differences = ctx.contrast_fit.get(layer)
    if differences is None or min(differences.shape) < k:
        return None
    return _right(differences.double(), k)


@candidate("dw_write_top", "ceiling", "dW's own top left singular vectors of [dW_o | dW_down] (the write-side ceiling)")
def _ceiling(ctx, layer, k):
    parts = [ctx.weight(layer, p, ctx.dw) for p in WRITE_TENSORS]
    parts = [_unit(p) for p in parts if p is not None]
    return None if not parts else _left(torch.cat(parts, 1), k)


def _share(q: torch.Tensor, w: torch.Tensor, side: str) -> float:
    """Share of ‖w‖² in span(q): output side (w [d_model, n]) for write tensors and activations, input side for read."""
    projected = q.T @ w if side == "out" else w @ q
    return float(projected.pow(2).sum() / w.pow(2).sum().clamp_min(1e-300))


def split_contrast(differences: dict[int, torch.Tensor], seed: int = 0) -> tuple[dict, dict]:
    """Two disjoint halves (FIT, HELD) of the contrast pairs, the same seeded permutation at every layer."""
    if not differences:
        return {}, {}
    n = next(iter(differences.values())).shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fit, held = order[: n // 2], order[n // 2:]
    return {l: d[fit] for l, d in differences.items()}, {l: d[held] for l, d in differences.items()}


def dw_layers(dw: dict) -> list[int]:
    """The decoder layers that dW's tensors touch (names ``model.layers.<i>.<block>.<proj>.weight``)."""
    return sorted({int(m[1]) for key in dw if (m := KEY.search(key))})


def build_context(model, tokenizer, dw: dict[str, torch.Tensor], pairs: list[dict] | None = None, seed: int = 0,
                  contrast: dict[int, torch.Tensor] | None = None) -> Context:
    """The :class:`Context` of a dW on a loaded model: its fp32 weights and, when the dW's training ``pairs`` are given,
    the persona-contrast differences (positive − negative block outputs, ``[n_pairs, d_model]`` per layer dW touches, the
    mean over response tokens; :func:`weight_steering.core.activations.contrast_activations`) split into FIT and HELD halves.
    ``contrast``: those differences already read (then ``pairs`` is not used)."""

    if contrast is None and pairs:
        layers = dw_layers(dw)
        acts = contrast_activations(model, tokenizer, contrast_pairs(tokenizer, pairs), layers)
        contrast = {layer: (acts.positive[layer] - acts.negative[layer]).float() for layer in layers}  # [n_pairs, d_model]
    fit, held = split_contrast(contrast or {}, seed)
    weights = {name: p.detach().float() for name, p in model.named_parameters()}
    return Context(weights, model.config.hidden_size, model.config.num_attention_heads, fit, held, dw)


def candidate_bases(ctx: Context, names: list[str], k: int = 8) -> dict[str, dict[int, torch.Tensor]]:
    """``{candidate: {layer: Q [d_model, k]}}`` at every layer dW touches, for projecting dW's write side onto each
    candidate (the causal check, :func:`weight_steering.ablation.variants.subspace_parts`).

    Raises:
        HypothesisError: an unknown name; a read-side candidate (its basis speaks for what a layer reads, not for the
            write side); k out of range; a candidate whose inputs are missing at some layer (e.g. ``contrast_pca``
            without the dW's training pairs).
    """
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise HypothesisError(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    read = [n for n in names if CANDIDATES[n].side == "read"]
    if read:
        raise HypothesisError(f"{read} are read-side candidates; dW's write side can only be projected onto write, mixed or ceiling candidates")
    if not 1 <= k <= ctx.d_model:
        raise HypothesisError(f"--k must lie in [1, d_model = {ctx.d_model}]; got {k}")
    bases = {}
    for name in names:
        bases[name] = {}
        for layer in dw_layers(ctx.dw):
            q = CANDIDATES[name].build(ctx, layer, k)
            if q is None:
                raise HypothesisError(f"candidate {name} cannot be built at layer {layer}: its inputs are missing "
                                      "(contrast_pca needs the dW's training pairs next to it)")
            bases[name][layer] = q
    return bases


def score_candidates(ctx: Context, k: int = 8, names: list[str] | None = None, n_null: int = 100, seed: int = 0) -> dict:
    """Score every candidate at every layer dW touches (see the module docstring for R_w, R_read and R_act).

    Args:
        ctx: the :class:`Context` (base weights, contrast halves, dW).
        k: the subspace rank (1 ≤ k ≤ d_model).
        names: candidates to score (default: every registered one).
        n_null: random rank-k subspaces per layer (the null; ≥ 100 recommended).

    Returns:
        ``{"rows": [per candidate and layer], "summary": [per candidate, means over layers], "unavailable": {name: why}}``.
        Row fields: ``candidate, side, layer, share_<tensor>, r_<tensor>, z_<tensor>`` for the write (o_proj, down_proj)
        or read tensors, ``r_w`` (size-balanced mean over the write tensors), ``pct_ceiling``, ``share_act, r_act, z_act``.

    Raises:
        HypothesisError: k out of range, an unknown candidate name, or a dW with no layer tensor at all.
    """
    names = list(CANDIDATES) if names is None else names
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise HypothesisError(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    if not 1 <= k <= ctx.d_model:
        raise HypothesisError(f"--k must lie in [1, d_model = {ctx.d_model}]; got {k}")
    layers = sorted({int(m[1]) for key in ctx.dw if (m := KEY.search(key))})
    if not layers:
        raise HypothesisError("dW has no decoder-layer tensor (model.layers.<i>.<block>.<proj>.weight); nothing to score")
    generator = torch.Generator().manual_seed(seed)
    rows, unavailable = [], {}
    for layer in layers:
        nulls = [torch.linalg.qr(torch.randn(ctx.d_model, k, generator=generator, dtype=torch.float64))[0] for _ in range(n_null)]
        targets = {t: ctx.weight(layer, t, ctx.dw) for t in (*WRITE_TENSORS, *READ_TENSORS)}
        targets = {t: w for t, w in targets.items() if w is not None and float(w.pow(2).sum()) > 0}
        held = ctx.contrast_held.get(layer)
        null_stats = {}
        for t, w in targets.items():
            draws = np.array([_share(q, w, "out" if t in WRITE_TENSORS else "in") for q in nulls])
            null_stats[t] = (draws.mean(), draws.std(ddof=1))
        if held is not None:
            draws = np.array([_share(q, held.double().T, "out") for q in nulls])
            null_stats["act"] = (draws.mean(), draws.std(ddof=1))
        ceiling = _ceiling(ctx, layer, k)
        ceiling_share = np.mean([_share(ceiling, targets[t], "out") for t in WRITE_TENSORS if t in targets]) if ceiling is not None else np.nan
        for name in names:
            cand = CANDIDATES[name]
            q = cand.build(ctx, layer, k)
            if q is None:
                unavailable.setdefault(name, f"its inputs are missing at layer {layer} (e.g. no contrast activations, or no such weight)")
                continue
            row = {"candidate": name, "side": cand.side, "layer": layer}
            scored = WRITE_TENSORS if cand.side in ("write", "mixed", "ceiling") else READ_TENSORS
            for t in scored:
                if t not in targets:
                    continue
                share = _share(q, targets[t], "out" if t in WRITE_TENSORS else "in")
                mean, sd = null_stats[t]
                row.update({f"share_{t}": share, f"r_{t}": share / mean, f"z_{t}": (share - mean) / sd if sd > 0 else float("nan")})
            write_ratios = [row[f"r_{t}"] for t in WRITE_TENSORS if f"r_{t}" in row]
            if cand.side != "read":
                if not write_ratios:
                    unavailable.setdefault(name, f"dW has no write-side tensor ({', '.join(WRITE_TENSORS)}) at layer {layer}")
                else:
                    row["r_w"] = float(np.mean(write_ratios))  # each write tensor weighted equally, not by its norm
                    shares = [row[f"share_{t}"] for t in WRITE_TENSORS if f"share_{t}" in row]
                    row["pct_ceiling"] = float(100 * np.mean(shares) / ceiling_share) if ceiling_share > 0 else float("nan")
            else:
                read_ratios = [row[f"r_{t}"] for t in READ_TENSORS if f"r_{t}" in row]
                if read_ratios:
                    row["r_read"] = float(np.mean(read_ratios))
            if held is not None:
                share = _share(q, held.double().T, "out")
                mean, sd = null_stats["act"]
                row.update({"share_act": share, "r_act": share / mean, "z_act": (share - mean) / sd if sd > 0 else float("nan")})
            if any(name in row for name in ("r_w", "r_read", "r_act")):
                rows.append(row)
    summary = []
    for name in names:
        mine = [r for r in rows if r["candidate"] == name]
        if not mine:
            continue
        entry = {"candidate": name, "side": CANDIDATES[name].side, "description": CANDIDATES[name].description, "n_layers": len(mine)}
        for field_name in ("r_w", "pct_ceiling", "r_read", "r_act", "z_act", "z_o_proj", "z_down_proj"):
            values = [r[field_name] for r in mine if field_name in r and np.isfinite(r[field_name])]
            if values:
                entry[field_name] = float(np.mean(values))
        summary.append(entry)
    summary.sort(key=lambda e: (e["side"] == "read", -e.get("r_w", e.get("r_read", 0.0))))
    return {"k": k, "n_null": n_null, "layers": layers, "rows": rows, "summary": summary, "unavailable": unavailable}
