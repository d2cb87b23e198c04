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

from pathlib import Path

from ..artifacts import check_output_folder, write_json
from ..core.diff import check_fits, load_dw
from ..core.models import DEFAULT_MODEL, load_model
from ..main_job.stages import pairs_of
from .candidates import CANDIDATES, HypothesisError, build_context, score_candidates
from .render import plot_hypotheses, render_hypotheses


def run_hypotheses(dw_path: str | Path, k: int = 8, candidates: list[str] | None = None, null_draws: int = 100,
                   model: str | None = None, out: str = "out", loaded=None, device: str | None = None, dtype: str | None = None) -> dict:
    """Score every candidate subspace (:func:`score_candidates`) for the dW at ``dw_path`` and write
    ``<out>/hypotheses/<dW folder>-k<k>/hypotheses.{json,md,png}``.

    The persona-contrast activations come from the training pairs next to the dW (:func:`weight_steering.main_job.stages.pairs_of`);
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


