"""Where does dW live? Causal ablation of dW against norm-matched random controls and within-dW nulls.

A *variant* maps dW to dW′ over the same named tensors: keep or drop layers, module families,
projections, or singular directions (of dW itself, or of the pretrained W). Each variant is scored
by one measure on identical rows,

    retained = Δ(variant, α) / Δ(full dW, α),    Δ(x, α) = mean score under α·x − mean score at α = 0,

next to its energy fraction ‖dW′‖² / ‖dW‖². Every "keep" variant has a random control of the same
per-tensor Frobenius norm (cropping shrinks the norm, and the model is not linear in α), so
"retains more than its norm-matched random control" is the claim a researcher can make. There is
no threshold rule. Variants that select no tensor are *unavailable* (not scored as zero).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..evaluation.statistics import paired_cluster_boot_means, stratified_mean

KEY_PATTERN = re.compile(r"layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.weight$")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
READ_SIDE = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
WRITE_SIDE = ("o_proj", "down_proj")
RECONSTRUCTION_TOLERANCE = 5e-3


class AblationError(ValueError):
    """A dW or base-weight dict that a variant cannot be built from (names the tensors)."""


@dataclass(frozen=True)
class Variant:
    """One ablation: ``name``, ``group`` (anchor, layer, module, svd, base_svd), whether it keeps a
    part (``keep``: gets a norm-matched random control), and ``build(tensors, base) -> tensors | None``
    (``None``: unavailable for this dW)."""

    name: str
    group: str
    keep: bool
    build: Callable[[dict, dict], dict | None]


def parse_key(key: str) -> tuple[int, str, str] | None:
    """``(layer, block, projection)`` of a decoder weight name such as ``model.layers.9.mlp.down_proj.weight``."""
    match = KEY_PATTERN.search(key)
    return (int(match.group(1)), match.group(2), match.group(3)) if match else None


def _select(predicate: Callable[[int, str], bool]) -> Callable[[dict, dict], dict | None]:
    def build(tensors: dict, base: dict) -> dict | None:
        kept = {k: v for k, v in tensors.items() if (p := parse_key(k)) and predicate(p[0], p[2])}
        return {k: kept.get(k, torch.zeros_like(v)) for k, v in tensors.items()} if kept else None

    return build


def _indices_top_share(s: torch.Tensor, share: float) -> torch.Tensor:
    """The top ``share`` of the numerical rank (singular values above 1e-4·s_max, above the float32
    rounding floor of a difference of merged weights, which sits near 1e-5·s_max): a rank-64 LoRA dW
    of a 576-wide tensor keeps 16 directions, not 144 (which would be all of it)."""
    rank = int((s > s.max() * 1e-4).sum()) if len(s) and s.max() > 0 else len(s)
    return torch.arange(max(1, round(share * rank)))


def _indices_energy(s: torch.Tensor, target: float) -> torch.Tensor:
    """The smallest prefix of the (descending) spectrum whose share of Σ s² reaches ``target``."""
    cumulative = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
    return torch.arange(min(len(s), int(torch.searchsorted(cumulative, torch.tensor(target, dtype=torch.float64))) + 1))


CROPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "top_25pct_rank": lambda s: _indices_top_share(s, 0.25),
    "top_50pct_energy": lambda s: _indices_energy(s, 0.5),
    "top_90pct_energy": lambda s: _indices_energy(s, 0.9),
}


_SVD_CACHE: dict[int, tuple[torch.Tensor, tuple]] = {}


def _svd(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``w`` in fp64, memoised while a :func:`iter_variants` iterator runs, so each tensor's SVD
    serves every crop (the cache holds the tensor itself, so an id is never reused for another)."""
    hit = _SVD_CACHE.get(id(w))
    if hit is None or hit[0] is not w:
        hit = (w, torch.linalg.svd(w.double(), full_matrices=False))
        _SVD_CACHE[id(w)] = hit
    return hit[1]


def _own_svd(crop: str, keep: bool) -> Callable[[dict, dict], dict]:
    """Keep (or drop) the crop's singular directions of each dW tensor: dW = U diag(S) Vᵀ."""
    def build(tensors: dict, base: dict) -> dict:
        out = {}
        for key, w in tensors.items():
            u, s, vh = _svd(w)
            idx = CROPS[crop](s)
            part = (u[:, idx] * s[idx]) @ vh[idx]
            out[key] = (part if keep else w.double() - part).to(w.dtype)
        return out

    return build


def _base_svd(crop: str, keep: bool) -> Callable[[dict, dict], dict]:
    """Keep (or drop) the block of dW inside the crop of the pretrained W's singular subspaces:
    (U₀, S₀, V₀ᵀ) = svd(W), dS = U₀ᵀ dW V₀, keep = U₀ (dS ⊙ m mᵀ) V₀ᵀ with m the crop of S₀."""
    def build(tensors: dict, base: dict) -> dict:
        missing = [k for k in tensors if k not in base]
        if missing:
            raise AblationError(f"base weights missing for {missing[:3]}; pass the model's parameters")
        out = {}
        for key, w in tensors.items():
            u0, s0, v0h = _svd(base[key])
            idx = CROPS[crop](s0)
            block = u0[:, idx].T @ w.double() @ v0h[idx].T
            part = u0[:, idx] @ block @ v0h[idx]
            out[key] = (part if keep else w.double() - part).to(w.dtype)
        return out

    return build


def variants_for(tensors: dict) -> list[Variant]:
    """Every variant for the layers and projections present in ``tensors``: the anchors, per layer, per module and per singular-direction group."""
    layers = sorted({p[0] for k in tensors if (p := parse_key(k))})
    found = [
        Variant("full", "anchor", False, lambda t, b: dict(t)),
        Variant("zero", "anchor", False, lambda t, b: {k: torch.zeros_like(v) for k, v in t.items()}),
        Variant("attention", "module", True, _select(lambda layer, proj: proj in ATTENTION)),
        Variant("mlp", "module", True, _select(lambda layer, proj: proj in MLP)),
        Variant("read_side", "module", True, _select(lambda layer, proj: proj in READ_SIDE)),
        Variant("write_side", "module", True, _select(lambda layer, proj: proj in WRITE_SIDE)),
    ]
    for proj in ATTENTION + MLP:
        found.append(Variant(f"{proj}_only", "module", True, _select(lambda layer, p, proj=proj: p == proj)))
    for layer in layers:
        found.append(Variant(f"layer_{layer}_only", "layer", True, _select(lambda lay, p, layer=layer: lay == layer)))
        found.append(Variant(f"without_layer_{layer}", "layer", False, _select(lambda lay, p, layer=layer: lay != layer)))
    for crop in CROPS:
        found.append(Variant(f"{crop}_S", "svd", True, _own_svd(crop, True)))
        found.append(Variant(f"not_{crop}_S", "svd", False, _own_svd(crop, False)))
        found.append(Variant(f"{crop}_S_base", "base_svd", True, _base_svd(crop, True)))
        found.append(Variant(f"not_{crop}_S_base", "base_svd", False, _base_svd(crop, False)))
    return found


VARIANT_NAMES_WITH_DROP = {f"not_{crop}_S{suffix}" for crop in CROPS for suffix in ("", "_base")}


def random_like(tensors: dict, seed: int = 0) -> dict:
    """Per-tensor Gaussian directions with each tensor's Frobenius norm (seed + 1009·index over sorted keys)."""
    out = {}
    for index, key in enumerate(sorted(tensors)):
        w = tensors[key]
        generator = torch.Generator().manual_seed(seed + 1009 * index)
        noise = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        norm = float(w.double().norm())
        out[key] = (noise * (norm / float(noise.norm())) if norm > 0 else torch.zeros_like(noise)).to(w.dtype)
    return out


def energy_fraction(part: dict, full: dict) -> float:
    """‖part‖² / ‖full‖² summed over tensors (Frobenius)."""
    return sum(float(v.double().pow(2).sum()) for v in part.values()) / sum(float(v.double().pow(2).sum()) for v in full.values())


def energy_matched_subsets(tensors: dict, part: dict, seed: int) -> dict:
    """A within-dW null for an SVD keep variant: per tensor, a random subset of dW's *own* singular
    directions whose energy matches the variant's (directions drawn in random order until their share
    of ‖dW‖² reaches the share the variant keeps in that tensor). It asks whether the variant's
    particular directions matter, beyond keeping that much of dW's own energy."""
    out = {}
    for index, key in enumerate(sorted(tensors)):
        w = tensors[key]
        u, s, vh = _svd(w)
        total = float((s ** 2).sum())
        target = float(part[key].double().pow(2).sum()) / total if total > 0 else 0.0
        order = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed + 1009 * index))
        cumulative = torch.cumsum(s[order] ** 2, 0) / max(total, 1e-300)
        take = order[: min(len(s), int(torch.searchsorted(cumulative, torch.tensor(target - 1e-12, dtype=torch.float64))) + 1)]
        out[key] = ((u[:, take] * s[take]) @ vh[take]).to(w.dtype) if target > 0 else torch.zeros_like(w)
    return out


def subspace_parts(tensors: dict, bases: dict[int, torch.Tensor], keep: bool) -> dict | None:
    """dW's write side projected onto a candidate subspace of the residual stream, or onto its complement.

    Per write tensor W (o_proj, down_proj: ``[d_model, n]``, they write into the residual stream) of a layer with a basis
    Q ``[d_model, k]`` (orthonormal columns): Q Qᵀ W (``keep``) or W − Q Qᵀ W; every other tensor is zero. The two
    parts add up to the write side. Returns None when no write tensor has a basis (the variant is unavailable).
    """
    out, found = {}, False
    for key, w in tensors.items():
        parsed = parse_key(key)
        if parsed and parsed[2] in WRITE_SIDE and parsed[0] in bases:
            q = bases[parsed[0]].to(torch.float64)  # [d_model, k]
            inside = q @ (q.T @ w.double())  # [d_model, n]
            out[key] = (inside if keep else w.double() - inside).to(w.dtype)
            found = True
        else:
            out[key] = torch.zeros_like(w)
    return out if found else None


def build_variants(tensors: dict, base: dict, seed: int = 0, groups: tuple[str, ...] | None = None,
                   native: dict[str, dict] | None = None, n_controls: int = 1, n_within: int = 0,
                   subspaces: dict[str, dict[int, torch.Tensor]] | None = None) -> dict[str, dict]:
    """``name -> {"group", "tensors" or None, "energy_fraction", "control_of"}``, with a
    ``<name>_random`` norm-matched control after every available keep variant.

    Every variant is held in memory at once (about 90 copies of dW with every group); for a real
    model use :func:`iter_variants`, which builds them one at a time.

    Args:
        native: adapter-native parts of dW (:func:`native_dw_parts`); their sum must reconstruct dW.
            None: the ``native`` group is listed as unavailable.
        subspaces: ``{candidate: {layer: Q [d_model, k]}}`` (e.g. :func:`weight_steering.hypotheses.candidates.candidate_bases`):
            the ``subspace`` group, dW's write side inside (``in_<candidate>``) and outside (``outside_<candidate>``)
            each span(Q) (:func:`subspace_parts`); the inside part gets the norm-matched and within-dW controls.

    Raises:
        AblationError: an unknown group; keep + drop of an SVD crop, or the sum of the native parts,
            does not reconstruct dW within 5e-3 (relative); base weights are missing for a base-SVD variant.
    """
    return dict(iter_variants(tensors, base, seed, groups, native, n_controls, n_within, subspaces))


def iter_variants(tensors: dict, base: dict, seed: int = 0, groups: tuple[str, ...] | None = None,
                  native: dict[str, dict] | None = None, n_controls: int = 1, n_within: int = 0,
                  subspaces: dict[str, dict[int, torch.Tensor]] | None = None,
                  names: tuple[str, ...] | None = None) -> Iterator[tuple[str, dict]]:
    """The variants of :func:`build_variants` as ``(name, entry)`` pairs, built lazily.

    ``groups`` keeps the variants of those groups, ``names`` (optional) only the variants so named among them, each
    with its controls; the anchors ``full`` and ``zero`` and the norm-matched random draws of ``full`` are always kept.

    Controls: each keep variant gets ``n_controls`` norm-matched random draws (``<name>_random`` for the
    first, seed ``seed``; ``<name>_random_<d>`` for draw d, seed ``seed + 7919·d``), and each own-SVD keep
    variant ``n_within`` energy-matched random subsets of dW's own singular directions
    (``<name>_subset_<d>``, :func:`energy_matched_subsets`). Every control entry names its variant in
    ``control_of`` and its kind in ``control_kind`` (``random`` / ``within_dw``).

    Only the variant being yielded (and, for a keep variant, until its ``not_`` partner has been
    checked against it) is held, so memory stays at a few copies of dW instead of one per variant
    (on SmolLM2-135M a dW over 15 layers is 212 MB; all groups together held 17 GB). SVDs are
    memoised until the iterator ends. Errors are those of :func:`build_variants`, raised when the
    variant concerned is reached.
    """
    check_ablation_options(groups, n_controls, n_within)
    if native is not None and (not groups or "native" in groups):
        total = {k: sum((part[k].double() for part in native.values() if k in part), torch.zeros_like(v, dtype=torch.float64))
                 for k, v in tensors.items()}
        check_reconstruction(total, {k: torch.zeros_like(v) for k, v in total.items()}, tensors, "the native parts")
    known = {v.name for v in variants_for(tensors) if not groups or v.group in groups}
    if names and set(names) - known:
        raise AblationError(f"unknown variant name(s) {sorted(set(names) - known)} in groups {groups or 'all'}; "
                            f"choose from {', '.join(sorted(known))}")
    return _iter_variants(tensors, base, seed, groups, native, n_controls, n_within, subspaces, names)


VARIANT_GROUPS = ("anchor", "layer", "module", "svd", "base_svd", "native", "subspace")


def check_ablation_options(groups: tuple[str, ...] | None, n_controls: int, n_within: int) -> None:
    """Raise :class:`AblationError` for a variant group outside :data:`VARIANT_GROUPS`, ``n_controls`` < 1 or ``n_within`` < 0."""
    unknown = [g for g in groups or () if g not in VARIANT_GROUPS]
    if unknown:
        raise AblationError(f"unknown variant group(s) {unknown}; choose from {', '.join(VARIANT_GROUPS)}")
    if n_controls < 1 or n_within < 0:
        raise AblationError(f"n_controls (--n-controls) must be ≥ 1 and n_within (--n-within) ≥ 0; got {n_controls}, {n_within}")


def _controls(name: str, part: dict, tensors: dict, seed: int, n_controls: int, n_within: int, own_svd: bool):
    for d in range(n_controls):
        control = random_like(part, seed + 7919 * d)
        yield (f"{name}_random" if d == 0 else f"{name}_random_{d}"), control, "random"
    for d in range(n_within if own_svd else 0):
        yield f"{name}_subset_{d}", energy_matched_subsets(tensors, part, seed + 7919 * d), "within_dw"


def _iter_variants(tensors: dict, base: dict, seed: int, groups: tuple[str, ...] | None,
                   native: dict[str, dict] | None, n_controls: int = 1, n_within: int = 0,
                   subspaces: dict[str, dict[int, torch.Tensor]] | None = None,
                   names: tuple[str, ...] | None = None) -> Iterator[tuple[str, dict]]:
    kept: dict[str, dict] = {}  # keep variants whose not_ partner is still to come
    try:
        for variant in variants_for(tensors):
            anchor = variant.name in ("full", "zero")
            if not anchor and ((groups and variant.group not in groups) or (names and variant.name not in names)):
                continue
            built = variant.build(tensors, base)
            if variant.name.startswith("not_") and built is not None and variant.name[4:] in kept:
                check_reconstruction(kept.pop(variant.name[4:]), built, tensors, variant.name[4:])
            yield variant.name, {"group": variant.group, "tensors": built, "control_of": None,
                                 "energy_fraction": energy_fraction(built, tensors) if built is not None else None}
            if variant.keep and built is not None:
                if f"not_{variant.name}" in VARIANT_NAMES_WITH_DROP:
                    kept[variant.name] = built
                for name, control, kind in _controls(variant.name, built, tensors, seed, n_controls, n_within, variant.group == "svd"):
                    yield name, {"group": variant.group, "tensors": control, "control_of": variant.name, "control_kind": kind,
                                 "energy_fraction": energy_fraction(control, tensors)}
            del built
        if not groups or "native" in groups:
            if native is None:
                yield "native", {"group": "native", "tensors": None, "control_of": None, "energy_fraction": None}
            else:
                for name, part in native.items():
                    padded = {k: part.get(k, torch.zeros_like(v)).to(v.dtype) for k, v in tensors.items()}
                    yield name, {"group": "native", "tensors": padded, "control_of": None, "energy_fraction": energy_fraction(padded, tensors)}
                    for control_name, control, kind in _controls(name, padded, tensors, seed, n_controls, 0, False):
                        yield control_name, {"group": "native", "tensors": control, "control_of": name, "control_kind": kind,
                                             "energy_fraction": energy_fraction(control, tensors)}
        if subspaces is not None or (groups and "subspace" in groups):
            yield from _subspace_variants(tensors, subspaces, seed, n_controls, n_within)
        for d in range(n_controls):
            yield ("random_norm_matched" if d == 0 else f"random_norm_matched_{d}"), {
                "group": "anchor", "tensors": random_like(tensors, seed + 7919 * d), "control_of": "full", "control_kind": "random",
                "energy_fraction": 1.0}
    finally:
        _SVD_CACHE.clear()


def _subspace_variants(tensors: dict, subspaces: dict | None, seed: int, n_controls: int, n_within: int) -> Iterator[tuple[str, dict]]:
    if not subspaces:
        yield "subspace", {"group": "subspace", "tensors": None, "control_of": None, "energy_fraction": None}
        return
    for candidate, bases in subspaces.items():
        for keep in (True, False):
            name = f"in_{candidate}" if keep else f"outside_{candidate}"
            built = subspace_parts(tensors, bases, keep)
            yield name, {"group": "subspace", "tensors": built, "control_of": None,
                         "energy_fraction": energy_fraction(built, tensors) if built is not None else None}
            if keep and built is not None:
                for control_name, control, kind in _controls(name, built, tensors, seed, n_controls, n_within, True):
                    yield control_name, {"group": "subspace", "tensors": control, "control_of": name, "control_kind": kind,
                                         "energy_fraction": energy_fraction(control, tensors)}
            del built


def check_reconstruction(keep: dict, drop: dict, full: dict, name: str) -> float:
    """Relative error ‖keep + drop − full‖ / ‖full‖; raises :class:`AblationError` above 5e-3."""
    error = sum(float((keep[k].double() + drop[k].double() - full[k].double()).pow(2).sum()) for k in full) ** 0.5
    error /= sum(float(v.double().pow(2).sum()) for v in full.values()) ** 0.5
    if error > RECONSTRUCTION_TOLERANCE:
        raise AblationError(f"keep + drop of {name} reconstructs dW only to {error:.2e} (relative); expected ≤ {RECONSTRUCTION_TOLERANCE}")
    return error


def retained(variant_scores: np.ndarray, full_scores: np.ndarray, base_scores: np.ndarray, clusters: np.ndarray,
             n_boot: int = 2000, seed: int = 0, strata: np.ndarray | None = None) -> dict:
    """retained = Δ(variant) / Δ(full) on identical rows, with a paired cluster-bootstrap 95% CI.

    Args:
        variant_scores, full_scores, base_scores: ``[N]`` per-row scores (nats) of the same rows at
            α under the variant, under the full dW, and at α = 0.
        clusters: ``[N]`` cluster ids (the dilemma of a row); clusters are resampled jointly.
        strata: ``[N]`` strata (the action-stratified OOD scores): Δ is the equal-weight mean of the
            stratum means and clusters are resampled within strata.

    Returns:
        ``retained, ci_low, ci_high, delta_variant, delta_full, defined``. When the full effect's
        95% CI contains 0, ``retained`` is NaN and ``defined`` is False: the ratio is undefined.
    """

    variant_delta, full_delta = variant_scores - base_scores, full_scores - base_scores
    boot_variant, boot_full = paired_cluster_boot_means([variant_delta, full_delta], clusters, np.random.default_rng(seed), n_boot, strata)
    d_full, d_variant = stratified_mean(full_delta, strata), stratified_mean(variant_delta, strata)
    low_full, high_full = np.percentile(boot_full, [2.5, 97.5])
    defined = not (low_full <= 0 <= high_full)
    if not defined:
        return {"retained": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "delta_variant": float(d_variant), "delta_full": float(d_full), "defined": False}
    ratio = boot_variant / boot_full
    return {"retained": float(d_variant / d_full), "ci_low": float(np.percentile(ratio, 2.5)), "ci_high": float(np.percentile(ratio, 97.5)),
            "delta_variant": float(d_variant), "delta_full": float(d_full), "defined": True}


