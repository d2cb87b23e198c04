"""Where dW lines up with the base model: the overlap of dW's top singular directions with the base weights' and with the persona contrast's activation subspace, against random nulls."""

from __future__ import annotations

import numpy as np
import torch

from .variants import WRITE_SIDE, AblationError, parse_key


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
