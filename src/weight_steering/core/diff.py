"""Stage 3, diff: dW = Δ⁺ − Δ⁻ = θ⁺ − θ⁻ (Fierro & Roger 2025, Eq. 1), saved as safetensors + JSON.

``dW.safetensors`` holds fp32 tensors keyed by base parameter name; the sidecar ``dW.json`` holds
the model name and base-weight hash, family and training config, seeds, data hash, per-tensor and
total Frobenius norms and cos(Δ⁺, −Δ⁻). :func:`load_dw` checks hash, keys, shapes and finiteness.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..artifacts import atomic_save_path, commit_path, read_json, tensors_sha256, write_json
from .models import base_weights_hash

log = logging.getLogger(__name__)


class DeltaWeightsError(ValueError):
    """A dW is empty, non-finite, or does not fit the model it is applied to."""


@dataclass
class DeltaWeights:
    """A weight-space steering direction.

    Attributes:
        tensors: ``{parameter name: fp32 CPU tensor}``, each with the base parameter's shape.
        metadata: provenance and norms (see module docstring).
    """

    tensors: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)

    def norm(self) -> float:
        """Total Frobenius norm ‖dW‖_F = sqrt(Σ_k ‖dW_k‖²)."""
        return float(torch.sqrt(sum((t.double() ** 2).sum() for t in self.tensors.values())))

    def __len__(self) -> int:
        return len(self.tensors)


def _total_norm(tensors: dict[str, torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors.values()))) if tensors else 0.0


def compute_dw(delta_positive: dict[str, torch.Tensor], delta_negative: dict[str, torch.Tensor], metadata: dict | None = None) -> DeltaWeights:
    """dW = Δ⁺ − Δ⁻ over the tensors both adapters touched, in fp32.

    Also records ‖Δ⁺‖, ‖Δ⁻‖, ‖dW‖ (Frobenius, summed over tensors), per-tensor ‖dW_k‖ and
    cos(Δ⁺, −Δ⁻) = −⟨Δ⁺, Δ⁻⟩ / (‖Δ⁺‖‖Δ⁻‖) (1 = the two adapters moved in exactly opposite directions).

    Raises:
        DeltaWeightsError: no common tensor, or a non-finite result.
    """
    common = sorted(set(delta_positive) & set(delta_negative))
    only_one = sorted(set(delta_positive) ^ set(delta_negative))
    if only_one:
        log.warning("%d tensors were touched by only one adapter and are left out of dW: %s", len(only_one), only_one[:5])
    if not common:
        raise DeltaWeightsError("the positive and negative adapters touched no common tensor; train longer or check the family's targets")
    tensors = {k: (delta_positive[k].float() - delta_negative[k].float()).contiguous() for k in common}
    check_finite(tensors)
    inner = sum(float((delta_positive[k].double() * delta_negative[k].double()).sum()) for k in common)
    norm_pos, norm_neg = _total_norm({k: delta_positive[k] for k in common}), _total_norm({k: delta_negative[k] for k in common})
    meta = dict(metadata or {})
    meta.update({
        "n_tensors": len(common),
        "norm_dw": _total_norm(tensors),
        "norm_delta_positive": norm_pos,
        "norm_delta_negative": norm_neg,
        "cos_delta_positive_minus_delta_negative": -inner / (norm_pos * norm_neg) if norm_pos and norm_neg else float("nan"),
        "tensor_norms": {k: float(v.norm()) for k, v in tensors.items()},
    })
    return DeltaWeights(tensors, meta)


def dw_identity(dw: DeltaWeights) -> str:
    """The name under which stages computed from ``dw`` are cached (calibrations, evaluations, vignettes, monitor cells).

    A dW that :func:`weight_steering.main_job.run.dw_stage` made records ``source_key`` in its metadata: the hash of its
    inputs (the data's SHA-256, the training config, both signs, the base weights). Its bytes are not an input: fp32
    sums round differently under AVX2, AVX-512 and ``ATEN_CPU_CAPABILITY=default`` (docs/engineering.md §1), so a stage keyed
    on them would be recomputed when a committed archive is resumed on another CPU. A dW without that record (made
    by other code) is named by the SHA-256 of its tensors (:func:`~weight_steering.artifacts.tensors_sha256`).

    Returns:
        ``"inputs:<source_key>"`` or ``"bytes:<sha256>"``.
    """
    source = dw.metadata.get("source_key")
    return f"inputs:{source}" if source else f"bytes:{tensors_sha256(dw.tensors)}"


def check_finite(tensors: dict[str, torch.Tensor]) -> None:
    """Raise :class:`DeltaWeightsError` naming every tensor with NaN or Inf."""
    bad = [k for k, t in tensors.items() if not torch.isfinite(t).all()]
    if bad:
        raise DeltaWeightsError(f"dW has NaN or Inf in {len(bad)} tensors ({bad[:5]}); retrain the adapters (lower the learning rate)")


def save_dw(dw: DeltaWeights, path: str | Path) -> Path:
    """Write ``dW.safetensors`` and its ``.json`` sidecar atomically; returns the safetensors path.

    The same dW gives the same bytes: the safetensors header carries one metadata key (a JSON string
    with sorted keys), because safetensors writes several metadata keys in a random order.
    """
    path = Path(path)
    tmp = atomic_save_path(path)
    header = json.dumps({"format": "weight_steering.dW", "base_weights_hash": str(dw.metadata.get("base_weights_hash", ""))}, sort_keys=True)
    save_file(dw.tensors, str(tmp), metadata={"weight_steering": header})
    write_json(path.with_suffix(".json"), dw.metadata)
    commit_path(tmp, path)
    return path


def load_dw(path: str | Path, model=None, base_hash: str | None = None) -> DeltaWeights:
    """Load a dW and, when ``model`` is given, check that it fits that model.

    Checks: every tensor finite; with ``model``: the base-weight hash matches the sidecar, every
    key is a parameter of the model and every shape matches. ``base_hash`` is the model's
    :func:`~weight_steering.core.models.base_weights_hash` when the caller already has it (saves hashing
    the weights again).

    Raises:
        FileNotFoundError: the file or its sidecar is missing.
        DeltaWeightsError: non-finite values, a hash mismatch (both hashes named), or missing /
            mismatched keys (named).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "dW.safetensors"
    sidecar = path.with_suffix(".json")
    if not path.exists() or not sidecar.exists():
        raise FileNotFoundError(f"no dW at {path} (needs {path.name} and {sidecar.name}); run `wsteer run` first")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for a truncated or non-safetensors file
        raise DeltaWeightsError(f"{path} is not a readable safetensors file ({err}); it is truncated, damaged or another format "
                                "(only safetensors is loaded, never pickle). Re-create it with `wsteer run`.") from err
    dw = DeltaWeights(tensors, read_json(sidecar))
    check_finite(dw.tensors)
    if model is not None:
        check_fits(dw, model, base_hash)
    return dw


def check_fits(dw: DeltaWeights, model, base_hash: str | None = None) -> None:
    """Raise :class:`DeltaWeightsError` if ``dw`` was not made for ``model`` (hash, keys, shapes)."""
    params = dict(model.named_parameters())
    missing = sorted(k for k in dw.tensors if k not in params)
    shapes = sorted(k for k in dw.tensors if k in params and tuple(params[k].shape) != tuple(dw.tensors[k].shape))
    expected = dw.metadata.get("base_weights_hash")
    actual = (base_hash or base_weights_hash(model)) if expected else None
    if missing or shapes or (expected and expected != actual):
        raise DeltaWeightsError(
            f"this dW does not fit the model: dW was made for '{dw.metadata.get('model', '?')}' with base-weight hash "
            f"{expected}, the model has hash {actual}; keys missing from the model: {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}; shape mismatches: {shapes[:5]}. Load the model the dW was trained on."
        )
