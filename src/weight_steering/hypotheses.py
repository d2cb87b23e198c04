"""Which subspace, built from the base model alone, predicts where dW lives?

A *candidate* is a rank-k orthonormal basis Q ``[d_model, k]`` of the residual stream per layer, built without the
trained dW (except the ``ceiling``), from the base weights, the unembedding, the token embeddings or the activations
on the persona contrast. Each is tagged by the side it speaks for: ``write`` (what a layer writes into the residual
stream: o_proj, down_proj), ``read`` (what a layer reads from it: q, k, v, gate, up, the unembedding), ``mixed``
(the stream itself: activation differences, token geometry) or ``ceiling`` (dW's own top left singular vectors, the
most any rank-k subspace can hold of dW's write side).

Scores, each over a null of random rank-k subspaces (QR of Gaussians; the same draws for every candidate of a layer):

* **R_w** (write side): per write tensor t ∈ {o_proj, down_proj}, share_t = ‖Qᵀ dW_t‖² / ‖dW_t‖²; R_w,t = share_t /
  (null mean share, ≈ k/d). The combination weights each tensor equally (the mean of R_w,t), not by its Frobenius
  norm, so one large tensor cannot decide it; it is also given as a percentage of the ceiling's combined share.
* **R_read** (read side, its own table): per read tensor t ∈ {q, k, v, gate, up}, ‖dW_t Q‖² / ‖dW_t‖² over the null.
  A read-side basis is never ranked as if it explained a write-side change.
* **R_act**: the share of the held-out half's persona-contrast activation differences (block output of the layer)
  in span(Q), over the null's; the ``contrast_pca`` candidate is fit on the other half.

z = (share − null mean) / null sd. The reference system's hypothesis sweep (shared/seeds/004) is the source of the
question and of the three pitfalls this avoids: a size-dominated combined score, a ceiling that was not one, and
read-side bases scored against a write-side delta.
"""

from __future__ import annotations

import re
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

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


def run_hypotheses(dw_path: str | Path, k: int = 8, candidates: list[str] | None = None, null_draws: int = 100,
                   model: str | None = None, out: str = "out", loaded=None, device: str | None = None, dtype: str | None = None) -> dict:
    """Score every candidate subspace (:func:`score_candidates`) for the dW at ``dw_path`` and write
    ``<out>/hypotheses/<dW folder>-k<k>/hypotheses.{json,md,png}``.

    The persona-contrast activations come from the training pairs next to the dW (:func:`weight_steering.pipeline.pairs_of`);
    without them R_act is reported unavailable, with the reason.

    Args:
        candidates: names of :data:`CANDIDATES` (None: all). k: rank of every subspace. null_draws: random rank-k
            subspaces per layer. loaded: ``(model, tokenizer)`` already in memory; else ``model`` is loaded.

    Returns:
        The result of :func:`score_candidates` with ``"dw"`` and ``"path"`` (the output folder).

    Raises:
        HypothesisError: an unknown candidate, ``k`` < 1 or ``null_draws`` < 2 (checked before any model is loaded).
        DeltaWeightsError, FileNotFoundError: a damaged or missing dW, or one that does not fit the model.
    """
    from .artifacts import check_output_folder, write_json
    from .diff import check_fits, load_dw
    from .models import DEFAULT_MODEL, load_model
    from .pipeline import pairs_of
    from .report import plot_hypotheses, render_hypotheses

    unknown = [n for n in candidates or [] if n not in CANDIDATES]
    if unknown:
        raise HypothesisError(f"unknown candidate(s) {unknown}; choose from {', '.join(CANDIDATES)}")
    if k < 1 or null_draws < 2:
        raise HypothesisError(f"--k must be ≥ 1 and --null-draws ≥ 2; got {k}, {null_draws}")
    check_output_folder(out)
    delta = load_dw(dw_path)
    dw_dir = Path(dw_path) if Path(dw_path).is_dir() else Path(dw_path).parent
    pairs = pairs_of(dw_dir)
    model_obj, tokenizer = loaded or load_model(model or DEFAULT_MODEL, device, dtype)
    check_fits(delta, model_obj)
    result = {"dw": str(dw_dir), **score_candidates(build_context(model_obj, tokenizer, delta.tensors, pairs), k, candidates, null_draws)}
    if pairs is None:
        result["unavailable"]["R_act"] = f"the training pairs of {dw_dir} are not next to it, so no contrast activations"
    root = Path(out) / "hypotheses" / f"{dw_dir.name}-k{k}"
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "hypotheses.json", result)
    (root / "hypotheses.md").write_text(render_hypotheses(result), encoding="utf-8")
    plot_hypotheses(result, root / "hypotheses.png")
    return {**result, "path": root}


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
    mean over response tokens; :func:`weight_steering.methods.contrast_activations`) split into FIT and HELD halves.
    ``contrast``: those differences already read (then ``pairs`` is not used)."""
    from .methods import contrast_activations, contrast_pairs

    if contrast is None and pairs:
        layers = dw_layers(dw)
        acts = contrast_activations(model, tokenizer, contrast_pairs(tokenizer, pairs), layers)
        contrast = {layer: (acts.positive[layer] - acts.negative[layer]).float() for layer in layers}  # [n_pairs, d_model]
    fit, held = split_contrast(contrast or {}, seed)
    weights = {name: p.detach().float() for name, p in model.named_parameters()}
    return Context(weights, model.config.hidden_size, model.config.num_attention_heads, fit, held, dw)


def candidate_bases(ctx: Context, names: list[str], k: int = 8) -> dict[str, dict[int, torch.Tensor]]:
    """``{candidate: {layer: Q [d_model, k]}}`` at every layer dW touches, for projecting dW's write side onto each
    candidate (the causal check, :func:`weight_steering.ablate.subspace_parts`).

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

RANKED_SIDES = ("write", "mixed")  # the candidates ranked on dW's write side (the ceiling and read side are not)


def load_hypotheses(paths: list) -> list[dict]:
    """The ``hypotheses.json`` of each ``wsteer hypotheses`` folder (or the file itself), with ``family`` and ``dw_seed`` read
    from the dW folder it scored (:func:`weight_steering.artifacts.read_dw_results`).

    Raises:
        HypothesisError: a missing or non-JSON file, a result that names no family and seed or holds no summary, two
            results for the same (family, seed), or results made with different k.
    """
    from .artifacts import read_dw_results

    results = read_dw_results(paths, "hypotheses.json", "wsteer hypotheses", HypothesisError)
    for result in results:
        if "summary" not in result or "k" not in result:
            raise HypothesisError(f"{result['path']} is not a `wsteer hypotheses` result (no summary or k); run it again")
    if len({r["k"] for r in results}) > 1:
        raise HypothesisError(f"the results use different k ({sorted({r['k'] for r in results})}); compare results of one k")
    return results


def summarize_hypotheses(results: list[dict], n_permutations: int = 2000, seed: int = 0) -> dict:
    """Across dWs (families × seeds): the write-side ranking with seed-level intervals, and whether dWs rank alike.

    Args:
        results: :func:`load_hypotheses` output (each a :func:`score_candidates` result with ``family`` and ``dw_seed``).
        n_permutations: draws of the rank-agreement null (:func:`weight_steering.statistics.mean_rank_agreement`).

    Returns:
        ``{"k", "dws": ["family seed s", …], "ranking": [...], "agreement": {...}}``. ``ranking`` has one entry per
        write-side or mixed candidate scored on every dW, sorted by the mean R_w over dWs: per family the per-seed R_w,
        % of the ceiling and R_act, and a Student-t interval over that family's seeds (the seed is the unit); the ceiling's
        R_w is given alongside. ``agreement``: the mean Spearman ρ of R_w over those candidates for pairs of seeds of one
        family (``within_family``) and for pairs of dWs of different families (``across_families``), each against a null
        that permutes every dW's values independently.

    Raises:
        HypothesisError: no results, or no candidate scored on every dW.
    """
    from .statistics import mean_rank_agreement, seed_interval

    if not results:
        raise HypothesisError("no hypotheses results to summarise; give the folders `wsteer hypotheses` wrote")
    results = sorted(results, key=lambda r: (r["family"], r["dw_seed"]))
    tables = [{e["candidate"]: e for e in r["summary"]} for r in results]
    names = [n for n in tables[0] if tables[0][n]["side"] in RANKED_SIDES and all("r_w" in t.get(n, {}) for t in tables)]
    if not names:
        raise HypothesisError("no write-side candidate is scored on every dW; score them with the same candidates")
    families = list(dict.fromkeys(r["family"] for r in results))
    ranking = []
    for name in names:
        entry = {"candidate": name, "side": tables[0][name]["side"], "mean_r_w": float(np.mean([t[name]["r_w"] for t in tables])), "families": {}}
        for family in families:
            mine = [(r, t) for r, t in zip(results, tables) if r["family"] == family]
            values = {field: [t[name].get(field, float("nan")) for _, t in mine] for field in ("r_w", "pct_ceiling", "r_act")}
            entry["families"][family] = {"seeds": [r["dw_seed"] for r, _ in mine], **values, "r_w_interval": seed_interval(values["r_w"])}
        ranking.append(entry)
    ranking.sort(key=lambda e: -e["mean_r_w"])
    def ceiling_r_w(table: dict) -> float:
        return next((e["r_w"] for e in table.values() if e["side"] == "ceiling" and "r_w" in e), float("nan"))

    ceiling = {f: [ceiling_r_w(t) for r, t in zip(results, tables) if r["family"] == f] for f in families}
    scores = np.array([[t[n]["r_w"] for n in names] for t in tables])  # [n_dws, n_candidates]
    within = [(i, j) for i in range(len(results)) for j in range(i + 1, len(results)) if results[i]["family"] == results[j]["family"]]
    across = [(i, j) for i in range(len(results)) for j in range(i + 1, len(results)) if results[i]["family"] != results[j]["family"]]
    agreement = {"within_family": mean_rank_agreement(scores, within, n_permutations, seed),
                 "across_families": mean_rank_agreement(scores, across, n_permutations, seed), "n_candidates": len(names)}
    return {"k": results[0]["k"], "dws": [f"{r['family']} seed {r['dw_seed']}" for r in results], "ranking": ranking,
            "ceiling_r_w": ceiling, "agreement": agreement}
