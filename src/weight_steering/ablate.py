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
from pathlib import Path

import numpy as np
import torch

from .statistics import spearman_permutation

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


def dora_parts(adapter_dir: str | Path, base: dict) -> dict[str, dict]:
    """One DoRA adapter's merged update split into its direction and magnitude parts.

    DoRA (Liu et al. 2024, eq. 5) merges to W′ = (m / ‖V‖) ⊙ V with V = W + s·BA, s = lora_alpha / r
    and ‖·‖ the norm of each output row (PEFT's convention; ``m`` and the norms are ``[out]``). With
    the base norms n = ‖W‖:

    * direction = (n / ‖V‖) ⊙ V − W: the new direction at the base magnitudes;
    * magnitude = ((m − n) / n) ⊙ W: the new magnitudes along the base directions;
    * interaction = W′ − W − direction − magnitude = (m − n) ⊙ (V/‖V‖ − W/n), second order.

    Args:
        adapter_dir: a PEFT DoRA adapter saved with ``save_pretrained`` (safetensors + JSON config only).
        base: ``{parameter name: W [out, in]}`` of the base model (e.g. ``model.layers.9.mlp.down_proj.weight``).

    Returns:
        ``{"direction", "magnitude", "interaction"}``, each ``{parameter name: [out, in]}`` in fp64.

    Raises:
        AblationError: the adapter is not DoRA, uses rsLoRA / fan_in_fan_out, or names a weight missing from ``base``.
    """
    import json

    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if not config.get("use_dora") or config.get("use_rslora") or config.get("fan_in_fan_out"):
        raise AblationError(f"{adapter_dir} is not a plain DoRA adapter (use_dora={config.get('use_dora')}, "
                            f"use_rslora={config.get('use_rslora')}, fan_in_fan_out={config.get('fan_in_fan_out')})")
    scaling = config["lora_alpha"] / config["r"]
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    parts: dict[str, dict] = {"direction": {}, "magnitude": {}, "interaction": {}}
    for key in sorted(k for k in state if k.endswith(".lora_magnitude_vector")):
        module = key[: -len(".lora_magnitude_vector")]
        name = module.removeprefix("base_model.model.") + ".weight"
        if name not in base:
            raise AblationError(f"the base model has no weight {name} (named by {adapter_dir})")
        w = base[name].double()
        v = w + scaling * state[f"{module}.lora_B.weight"].double() @ state[f"{module}.lora_A.weight"].double()
        m, n, norm_v = state[key].double(), w.norm(dim=1), v.norm(dim=1)
        merged = (m / norm_v)[:, None] * v - w
        parts["direction"][name] = (n / norm_v)[:, None] * v - w
        parts["magnitude"][name] = ((m - n) / n)[:, None] * w
        parts["interaction"][name] = merged - parts["direction"][name] - parts["magnitude"][name]
    if not parts["direction"]:
        raise AblationError(f"{adapter_dir} has no DoRA magnitude vectors")
    return parts


def delora_parts(adapter_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One DeLoRA adapter's update split into its learned scale λ and its unit-bounded direction.

    DeLoRA (Bini et al. 2025, arXiv 2503.18225; PEFT ``DeloraLayer._compute_delta``) merges to
    W′ = W + λ · D with D = B · diag(1 / (r ‖A_i‖ ‖B^i‖)) · A · diag(‖W_{:,j}‖): λ is one learned scalar
    per module, D is normalised per rank-one component and scaled by the frozen base column norms.

    Args:
        adapter_dir: a PEFT DeLoRA adapter saved with ``save_pretrained`` (safetensors + JSON config only).

    Returns:
        ``{parameter name: (λ [scalar], D [out, in])}`` in fp64.

    Raises:
        AblationError: the adapter is not DeLoRA or has no DeLoRA tensors.
    """
    import json

    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("peft_type") != "DELORA":
        raise AblationError(f"{adapter_dir} is not a DeLoRA adapter (peft_type={config.get('peft_type')})")
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    out = {}
    for key in sorted(k for k in state if k.endswith(".delora_lambda")):
        module = key[: -len(".delora_lambda")]
        a, b = state[f"{module}.delora_A"].double(), state[f"{module}.delora_B"].double()
        scale = 1.0 / a.shape[0] / (a.norm(dim=1).clamp(min=1e-4) * b.norm(dim=0).clamp(min=1e-4))
        direction = (b * scale) @ a * state[f"{module}.delora_w_norm"].double()[None, :]
        out[module.removeprefix("base_model.model.") + ".weight"] = (state[key].double().reshape(()), direction)
    if not out:
        raise AblationError(f"{adapter_dir} has no DeLoRA tensors")
    return out


def native_dw_parts(positive_dir: str | Path, negative_dir: str | Path, family: str, base: dict) -> dict[str, dict] | None:
    """Adapter-native parts of dW = θ⁺ − θ⁻ (each part of θ⁺ minus the same part of θ⁻), or None when
    the family has no additive native split here.

    DoRA: ``dora_direction``, ``dora_magnitude`` and ``dora_interaction`` (:func:`dora_parts`).

    DeLoRA (:func:`delora_parts`, Δ± = λ± D±): with λ̄ = (λ⁺ + λ⁻)/2 and D̄ = (D⁺ + D⁻)/2,
    dW = λ̄ (D⁺ − D⁻) + (λ⁺ − λ⁻) D̄ exactly: ``delora_direction`` (the directions differ at the mean
    scale) and ``delora_scale`` (the scales differ along the mean direction).

    OFT's rotation multiplies the base weight, so its part of dW is not separable from the base:
    OFT (and every other family) returns None and its native variants are marked unavailable.
    """
    if family == "dora":
        plus = dora_parts(Path(positive_dir) / "adapter", base)
        minus = dora_parts(Path(negative_dir) / "adapter", base)
        return {f"dora_{part}": {k: plus[part][k] - minus[part][k] for k in plus[part]} for part in plus}
    if family == "delora":
        plus, minus = delora_parts(Path(positive_dir) / "adapter"), delora_parts(Path(negative_dir) / "adapter")
        direction, scale = {}, {}
        for name, (lambda_plus, d_plus) in plus.items():
            lambda_minus, d_minus = minus[name]
            direction[name] = (lambda_plus + lambda_minus) / 2 * (d_plus - d_minus)
            scale[name] = (lambda_plus - lambda_minus) * (d_plus + d_minus) / 2
        return {"delora_direction": direction, "delora_scale": scale}
    return None


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
        subspaces: ``{candidate: {layer: Q [d_model, k]}}`` (e.g. :func:`weight_steering.hypotheses.candidate_bases`):
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
    from .statistics import paired_cluster_boot_means, stratified_mean

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


def base_subspace_alignment(tensors: dict, base: dict, top_share: float = 0.1, n_null: int = 50, seed: int = 0) -> list[dict]:
    """Concentration of each dW tensor in the top singular subspaces of its pretrained W (a weight-only null: does dW write where W already writes?).

    With (U, S, Vᵀ) = svd(W), r = rank, k = max(1, round(top_share·r)) and P = Uᵀ dW V:
    energy_top = ‖P[:k, :k]‖² / ‖P‖², null = (k / r)² (a random direction's expected share), ratio =
    energy_top / null, and z = (energy_top − μ) / σ over ``n_null`` random pairs of k-dimensional
    orthonormal subspaces (QR of Gaussians, seeded).

    Returns:
        One dict per tensor: ``key, layer, projection, k, rank, energy_top, null, ratio, z``.
    """
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for key in sorted(tensors):
        if key not in base:
            raise AblationError(f"base weight missing for {key}; pass the model's parameters")
        w = tensors[key].double()
        u, s, vh = torch.linalg.svd(base[key].double(), full_matrices=False)
        rank = len(s)
        k = max(1, round(top_share * rank))
        projected = u.T @ w @ vh.T
        total = float(projected.pow(2).sum())
        if total == 0:
            continue
        energy = float(projected[:k, :k].pow(2).sum()) / total
        null_draws = []
        for _ in range(n_null):
            q_left, _ = torch.linalg.qr(torch.randn(rank, k, generator=generator, dtype=torch.float64))
            q_right, _ = torch.linalg.qr(torch.randn(rank, k, generator=generator, dtype=torch.float64))
            null_draws.append(float((q_left.T @ projected @ q_right).pow(2).sum()) / total)
        mean, std = float(np.mean(null_draws)), float(np.std(null_draws, ddof=1))
        parsed = parse_key(key)
        rows.append({"key": key, "layer": parsed[0] if parsed else None, "projection": parsed[2] if parsed else None,
                     "k": k, "rank": rank, "energy_top": energy, "null": (k / rank) ** 2, "ratio": energy / (k / rank) ** 2,
                     "z": (energy - mean) / std if std > 0 else float("nan")})
    return rows


def contrast_subspace(differences: torch.Tensor, k: int) -> torch.Tensor:
    """``[hidden, k]`` orthonormal basis of the top-k principal directions of the (uncentred) contrast
    differences ``[n_pairs, hidden]`` (positive − negative activations), so the mean-difference
    direction lies inside it. Raises AblationError if k exceeds the rank available."""
    if not 0 < k <= min(differences.shape):
        raise AblationError(f"activation subspace k={k} needs 0 < k ≤ min(n_pairs, hidden) = {min(differences.shape)}")
    _, _, vh = torch.linalg.svd(differences.double(), full_matrices=False)
    return vh[:k].T


def activation_subspace_alignment(tensors: dict, write_contrast: dict[int, torch.Tensor], read_contrast: dict[int, torch.Tensor],
                                  k: int = 4, n_null: int = 200, seed: int = 0) -> list[dict]:
    """Concentration of each dW tensor in the activation-contrast PCA subspace of the stream it touches (issue 6.3).

    Residual-write tensors (o_proj, down_proj; dW ``[hidden, in]``) are measured on their output side,
    ``energy = ‖Qᵀ dW‖² / ‖dW‖²``, with Q = :func:`contrast_subspace` of ``write_contrast[layer]`` (the
    block-output differences of that layer). Attention read tensors (q, k, v; dW ``[out, hidden]``) on
    their input side, ``‖dW Q‖² / ‖dW‖²``, with ``read_contrast[layer]`` (the normalised block input of that
    layer). gate/up read the mid-layer stream, which is not read here: those rows have ``available=False``.
    null = k / hidden (a random k-dim subspace's expected share); ratio = energy / null; z against
    ``n_null`` random orthonormal k-dim subspaces (QR of Gaussians, seeded).

    Returns:
        One dict per decoder tensor: ``key, layer, projection, side, k, hidden, energy, null, ratio, z, available``.
    """
    rows = []
    generator = torch.Generator().manual_seed(seed)
    for key in sorted(tensors):
        parsed = parse_key(key)
        if parsed is None:
            continue
        layer, _, projection = parsed
        side = "write" if projection in WRITE_SIDE else "read" if projection in ("q_proj", "k_proj", "v_proj") else None
        differences = (write_contrast if side == "write" else read_contrast).get(layer) if side else None
        w = tensors[key].double()
        total = float(w.pow(2).sum())
        if differences is None or total == 0:
            rows.append({"key": key, "layer": layer, "projection": projection, "side": side, "available": False})
            continue
        hidden = differences.shape[1]

        def share(q: torch.Tensor) -> float:
            return float((q.T @ w if side == "write" else w @ q).pow(2).sum()) / total

        energy = share(contrast_subspace(differences, k))
        draws = [share(torch.linalg.qr(torch.randn(hidden, k, generator=generator, dtype=torch.float64))[0]) for _ in range(n_null)]
        mean, std = float(np.mean(draws)), float(np.std(draws, ddof=1))
        rows.append({"key": key, "layer": layer, "projection": projection, "side": side, "k": k, "hidden": hidden, "energy": energy,
                     "null": k / hidden, "ratio": energy * hidden / k, "z": (energy - mean) / std if std > 0 else float("nan"),
                     "available": True})
    return rows


DISJOINT_SETS = {
    "single_layers": re.compile(r"^layer_\d+_only$"),
    "single_projections": re.compile(r"^(q|k|v|o|gate|up|down)_proj_only$"),
}


def agreement(tables: dict[str, list[dict]], metric: str, groups: tuple[str, ...] | None = None, n_permutations: int = 2000,
              seed: int = 0, disjoint: str | None = None) -> dict:
    """Do several dW (e.g. adapter families) put their effect in the same places?

    For every pair of dW, the Spearman rank correlation of ``retained`` over the variants that are
    defined in both, on one ``metric`` (e.g. ``"sycophancy"``), with a two-sided permutation p-value
    (``n_permutations`` shuffles of one side, seeded). Anchors (full, zero) and random controls are
    left out: their retained is fixed at 1 / ≈ 0 for every dW and would inflate the correlation.

    Args:
        tables: ``{name: rows}`` with ``rows`` the ``"rows"`` of :func:`weight_steering.assess.run_ablation`.
        metric: the score the retained values belong to.
        groups: only variants of these groups (e.g. ``("layer",)``: do the dW use the same layers?);
            None: every group. Complementary keep / drop variants (an SVD crop and the rest) are
            anti-correlated by construction for any dW, and nested ones (top 25% inside top 50%)
            correlated, so an all-group ρ is partly structural.
        disjoint: ``"single_layers"`` or ``"single_projections"`` (:data:`DISJOINT_SETS`): only variants
            that share no tensor (each layer alone, or each projection alone), the set on which ρ
            measures agreement and nothing built in.

    Returns:
        ``{"retained": DataFrame [variant × name] of retained (NaN where undefined or unavailable),
        "pairs": [{"a", "b", "spearman", "p_value", "n_variants"}]}``. A pair with fewer than three
        shared variants gets ``spearman = NaN``.
    """
    import itertools

    import pandas as pd

    frame = pd.DataFrame({
        name: {r["variant"]: (r["retained"] if r.get("defined", True) else float("nan"))
               for r in rows if r.get("available") and r.get("metric") == metric
               and r["group"] != "anchor" and not r.get("control_of") and (groups is None or r["group"] in groups)
               and (disjoint is None or DISJOINT_SETS[disjoint].match(r["variant"]))}
        for name, rows in tables.items()
    })
    pairs = []
    for a, b in itertools.combinations(frame.columns, 2):
        shared = frame[[a, b]].dropna()
        rho, p_value = spearman_permutation(shared[a], shared[b], n_permutations, seed)  # per pair: its p does not depend on the other pairs
        pairs.append({"a": a, "b": b, "spearman": rho, "p_value": p_value, "n_variants": len(shared)})
    return {"retained": frame, "pairs": pairs}


# Variants whose retained the seed summary tabulates (every one is built by the module and svd groups), and the
# metrics: the framing-controlled agreement effect, the two framings, and the action-stratified OOD honesty score.
SUMMARY_VARIANTS = ("attention", "mlp", "read_side", "write_side", "q_proj_only", "k_proj_only", "v_proj_only", "o_proj_only",
                    "gate_proj_only", "up_proj_only", "down_proj_only", "top_25pct_rank_S", "not_top_25pct_rank_S",
                    "top_50pct_energy_S", "not_top_50pct_energy_S", "top_90pct_energy_S", "not_top_90pct_energy_S")
SUMMARY_METRICS = ("id_controlled", "id", "id_neutral", "dilemmas_honesty")
def load_ablations(paths: list[str | Path]) -> list[dict]:
    """The ``ablation.json`` of each finished ``wsteer ablate`` folder, with ``family`` and ``dw_seed`` (the dW's training
    seed) read from the dW's folder name (``dw-<family>-seed<s>-<hash>``; :func:`weight_steering.artifacts.read_dw_results`).

    Raises:
        AblationError: a folder without ``ablation.json``, a file that is not JSON, a dW path that does not name its
            family and seed, or two ablations of the same (family, seed).
    """
    from .artifacts import read_dw_results

    return read_dw_results(paths, "ablation.json", "wsteer ablate", AblationError)


def summarize_ablation_seeds(results: list[dict], n_permutations: int = 2000) -> list[dict]:
    """Per family, each summary variant's retained at every seed and across seeds, next to its nulls.

    The summary variants are :data:`SUMMARY_VARIANTS` and, where the runs have them, the causal check's subspace
    variants (``in_<candidate>_k<k>``, ``outside_<candidate>_k<k>``; not their controls, which are the nulls).

    The seed is the unit of replication: the across-seed interval is a Student-t interval over the per-seed retained
    (:func:`weight_steering.statistics.seed_interval`). Per seed, the norm-matched random controls and the within-dW
    null (energy-matched random subsets of dW's own singular directions) are given as mean ± sd over their draws.
    Rank agreement between seeds is the Spearman ρ over the projections taken alone (variants that share no tensor,
    :data:`DISJOINT_SETS`), with a permutation p-value.

    Returns:
        ``[{"family", "seeds", "rows": [{"variant", "metric", "per_seed", "row_ci", "random", "within", "mean",
        "ci_low", "ci_high", "n", "energy"}], "agreement": {metric: pairs}}]``. A seed where a variant is undefined
        (Δ(full) ≈ 0) holds NaN and is left out of the interval.
    """
    from .statistics import seed_interval

    by_family: dict[str, list[dict]] = {}
    for result in sorted(results, key=lambda r: (r["family"], r["dw_seed"])):
        by_family.setdefault(result["family"], []).append(result)
    summary = []
    for family, runs in by_family.items():
        index = [{(r["variant"], r.get("metric")): r for r in run["rows"]} for run in runs]
        rows = []
        subspace = dict.fromkeys(r["variant"] for run in runs for r in run["rows"]  # the causal check's candidates
                                 if r.get("group") == "subspace" and r.get("control_of") is None)
        for metric in SUMMARY_METRICS:
            for variant in (*SUMMARY_VARIANTS, *subspace):
                found = [ix.get((variant, metric)) for ix in index]
                if all(r is None for r in found):
                    continue
                defined = [r if r is not None and r.get("available", True) and r.get("defined", True) else None for r in found]
                per_seed = [r["retained"] if r else float("nan") for r in defined]
                values = [v for v in per_seed if np.isfinite(v)]
                interval = seed_interval(values) if values else {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
                rows.append({
                    "variant": variant, "metric": metric, "per_seed": per_seed,
                    "row_ci": [(r["ci_low"], r["ci_high"]) if r else (float("nan"), float("nan")) for r in defined],
                    "random": [(r.get("control_random_mean"), r.get("control_random_sd")) if r else (None, None) for r in defined],
                    "within": [(r.get("control_within_dw_mean"), r.get("control_within_dw_sd")) if r else (None, None) for r in defined],
                    "energy": [r.get("energy_fraction") if r else None for r in defined], **interval,
                })
        agreement_by_metric = {}
        if len(runs) > 1:
            tables = {f"seed {run['dw_seed']}": run["rows"] for run in runs}
            for metric in SUMMARY_METRICS:
                agreement_by_metric[metric] = agreement(tables, metric, n_permutations=n_permutations, disjoint="single_projections")["pairs"]
        summary.append({"family": family, "seeds": [run["dw_seed"] for run in runs], "dw": [run["dw"] for run in runs],
                        "rows": rows, "agreement": agreement_by_metric})
    return summary
