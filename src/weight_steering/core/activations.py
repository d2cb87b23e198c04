"""Activation steering from the persona contrast (steering-vectors): the contrast's block outputs per layer, CAA (mean difference), PCA/RepE, increments, the best layer by d′, and the S-space projection; each a :class:`~weight_steering.core.methods.SteeringMethod`."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import torch

from .chat import render_chat
from .decoding import pad_batch
from .methods import SteeringMethod


def contrast_pairs(tokenizer, pair_rows: list[dict], limit: int = 64) -> list[tuple[str, str, str]]:
    """(positive text, negative text, prefix) for activation steering from the same persona contrast as dW.

    Each pair is one generated training pair without its system prompt, exactly as θ⁺ and θ⁻ see it
    (:func:`weight_steering.core.chat.training_ids`): ``prefix`` is the text the response was sampled after (the
    template's generation prompt for ``[user: prompt]``), and each text is that prefix followed by the response as
    sampled, left open; :func:`contrast_activations` reads the response tokens (their mean, the default) or the
    response's last token.

    Args:
        pair_rows: rows of ``pairs.jsonl`` (``prompt``, ``response_positive``, ``response_negative``).
        limit: use at most ``limit`` pairs, evenly spaced over the rows (so every prompt and persona is represented).
    """
    step = max(1, len(pair_rows) // limit) if limit > 0 else 1
    out = []
    for row in pair_rows[::step][:limit]:
        prefix = render_chat(tokenizer, [{"role": "user", "content": row["prompt"]}])
        out.append((prefix + row["response_positive"], prefix + row["response_negative"], prefix))
    return out


def _steering_vectors():
    try:
        import steering_vectors
    except ImportError as err:
        raise ImportError("activation baselines need steering-vectors: pip install --no-deps 'steering-vectors==0.12.2' "
                          "scikit-learn (its transformers<5 pin is stale; see weight_steering.core.methods)") from err
    return steering_vectors


READINGS = ("response_mean", "last")


@dataclass(frozen=True)
class ContrastActivations:
    """Decoder-block outputs read from each contrast text: ``{layer: [n_pairs, hidden]}`` per side, and how
    they were read (``reading``: the mean over the response tokens, or the last token)."""

    positive: dict[int, torch.Tensor]
    negative: dict[int, torch.Tensor]
    reading: str = "response_mean"


def contrast_token_ids(tokenizer, pairs: list[tuple], reading: str = "response_mean") -> tuple[list[list[int]], list[int]]:
    """Token ids of every pair text, (positive, negative) interleaved, and where reading starts in each.

    The response is tokenized on its own after the prefix's tokens, as it was sampled and trained
    (:func:`weight_steering.core.chat.training_ids`): tokenizing the whole text instead may merge the prompt's last
    characters into the response's first token (a SentencePiece tokenizer), so the model would read tokens it never saw.

    Returns:
        ``(ids, starts)``: ``2·n_pairs`` id lists, and the first read position of each (the response's first token for
        ``"response_mean"``, the last token for ``"last"``).
    Raises:
        ValueError: a prefix that is not a prefix of its text, or leaves no response.
    """
    texts, starts = [], []
    for pair in pairs:
        prefix = pair[2] if len(pair) > 2 else ""
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        for text in pair[:2]:
            if not text.startswith(prefix) or len(text) == len(prefix):
                raise ValueError("a contrast pair's prefix is not a prefix of its text, or leaves no response; build pairs with contrast_pairs")
            ids = prefix_ids + tokenizer(text[len(prefix):], add_special_tokens=False)["input_ids"]
            texts.append(ids)
            starts.append(len(prefix_ids) if reading == "response_mean" else len(ids) - 1)
    return texts, starts


@torch.inference_mode()
def contrast_activations(model, tokenizer, pairs: list[tuple], layers: list[int], batch_size: int = 8,
                         reading: str = "response_mean") -> ContrastActivations:
    """Read the block outputs of ``layers`` (the decoder layer's output hidden state) from every pair text.

    ``reading="response_mean"`` (default, the persona-vectors convention): the mean over the response's
    tokens, which start after the pair's ``prefix`` (third element, :func:`contrast_pairs`; a pair without
    one is all response), tokenized as :func:`contrast_token_ids` says. ``reading="last"``: the text's last token only (a 64-token response that hit the
    length limit is usually cut mid-sentence there). One pass over the pairs serves every direction and
    layer choice (:func:`steering_vector`, :func:`separation_by_layer`). Rows are right-padded in batches,
    so padding never precedes a real token.

    Raises:
        ValueError: no pairs, an unknown reading, or a prefix that is not a prefix of its text.
    """
    if not pairs:
        raise ValueError("activation steering needs at least one (positive, negative) pair")
    if reading not in READINGS:
        raise ValueError(f"unknown reading '{reading}'; choose one of {', '.join(READINGS)}")
    texts, starts = contrast_token_ids(tokenizer, pairs, reading)
    blocks = model.get_decoder().layers
    captured: dict[int, torch.Tensor] = {}
    hooks = [blocks[layer].register_forward_hook(lambda module, args, output, layer=layer: captured.__setitem__(
        layer, output[0] if isinstance(output, tuple) else output)) for layer in layers]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    read: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    try:
        for begin in range(0, len(texts), batch_size):
            chunk = texts[begin : begin + batch_size]
            ids, mask = pad_batch(chunk, pad_id)  # [B, T], right-padded
            span = torch.zeros(ids.shape)  # [B, T] weights: 1/len over the read tokens
            for i, row in enumerate(chunk):
                start = starts[begin + i]
                span[i, start : len(row)] = 1.0 / (len(row) - start)
            model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device))
            for layer in layers:
                read[layer].append(torch.einsum("bt,bth->bh", span, captured[layer].float().cpu()))  # [B, hidden]
    finally:
        for hook in hooks:
            hook.remove()
    stacked = {layer: torch.cat(parts) for layer, parts in read.items()}  # [2·n_pairs, hidden], (positive, negative) interleaved
    return ContrastActivations({k: v[0::2] for k, v in stacked.items()}, {k: v[1::2] for k, v in stacked.items()}, reading)


def direction_agreement(activations: ContrastActivations) -> dict[int, dict]:
    """Per layer: cos(CAA, PCA) and how consistently the pairs point along each direction.

    CAA is the mean difference d̄ = mean(h⁺ − h⁻); PCA is steering-vectors' first principal component
    of the differences (uncentred, Zou et al. 2023), whose sign the library aligns with d̄ (sign of
    mean(dᵢ·v)). So cos(CAA, PCA) ≥ 0 by construction and a "right sign" of PCA is no evidence by
    itself; what tells is how many pairs agree: ``sign_agreement_caa`` / ``sign_agreement_pca`` are
    the shares of pairs whose difference dᵢ projects positively on the direction.

    Returns:
        ``{layer: {"cos_caa_pca", "sign_agreement_caa", "sign_agreement_pca", "n_pairs"}}``.
    """
    library = _steering_vectors()
    out = {}
    for layer, plus in activations.positive.items():
        diffs = plus - activations.negative[layer]  # [n_pairs, hidden]
        caa = diffs.mean(0)
        pca = library.pca_aggregator()(plus, activations.negative[layer])
        out[layer] = {"cos_caa_pca": float(torch.nn.functional.cosine_similarity(caa, pca, dim=0)),
                      "sign_agreement_caa": float((diffs @ caa > 0).float().mean()),
                      "sign_agreement_pca": float((diffs @ pca > 0).float().mean()), "n_pairs": len(diffs)}
    return out


def steering_vector(activations: ContrastActivations, aggregator: str = "mean", layers: list[int] | None = None,
                    increments: bool = False):
    """A ``steering_vectors.SteeringVector`` (decoder-block outputs, ``[hidden]`` per layer) from contrast activations.

    ``mean``: mean of (positive − negative) activations (CAA; Rimsky et al. 2024). ``pca``: first
    principal component of the differences, sign-aligned with them (RepE; Zou et al. 2023); the library
    returns it with unit norm, and it is rescaled per layer to the mean-difference norm so that strength 1
    means the same activation scale for both aggregators.

    ``increments`` (mean only; the all-layer variant of Fierro & Roger 2025): each layer l gets what it adds to the
    contrast, d^l − d^(l−1) with d^l the mean difference of the block outputs at l (layer 0 keeps d^0: the stream before
    it, the token embeddings, is not read). Steering every layer by its increment adds up to d^l at layer l.

    Raises:
        ValueError: unknown aggregator, increments with PCA, increments over layers that are not consecutive from 0,
            or a layer that was not read.
    """
    library = _steering_vectors()
    if aggregator not in ("mean", "pca"):
        raise ValueError(f"unknown aggregator '{aggregator}'; choose one of mean, pca")
    layers = sorted(activations.positive) if layers is None else layers
    missing = [layer for layer in layers if layer not in activations.positive]
    if missing:
        raise ValueError(f"layers {missing} were not read; pass them to contrast_activations")
    out = {}
    for layer in layers:
        plus, minus = activations.positive[layer], activations.negative[layer]
        mean = library.mean_aggregator()(plus, minus)
        if aggregator == "pca":
            direction = library.pca_aggregator()(plus, minus)
            mean = direction * (mean.norm() / direction.norm().clamp(min=1e-12))
        out[layer] = mean
    if increments:
        if aggregator != "mean" or layers != list(range(len(layers))):
            raise ValueError(f"increments need the mean aggregator and every layer from 0 (got {aggregator}, layers {layers})")
        out = {layer: out[layer] - (out[layer - 1] if layer > 0 else 0) for layer in layers}  # d^l − d^(l−1)
    return library.SteeringVector(layer_activations=out, layer_type="decoder_block")


def train_activation_vector(model, tokenizer, pairs: list[tuple[str, str]], layers: list[int], aggregator: str = "mean"):
    """:func:`contrast_activations` then :func:`steering_vector` for ``layers``.

    Raises:
        ImportError: steering-vectors is not installed. ValueError: unknown aggregator or no pairs.
    """
    if aggregator not in ("mean", "pca"):
        raise ValueError(f"unknown aggregator '{aggregator}'; choose one of mean, pca")
    return steering_vector(contrast_activations(model, tokenizer, pairs, layers), aggregator)


def vector_method(vector, name: str) -> SteeringMethod:
    """Steering by α × vector added to every token's block output (steering-vectors' ``multiplier`` is α; hooks removed
    on exit)."""
    return SteeringMethod(name, lambda model, alpha: vector.apply(model, multiplier=alpha))


def activation_method(model, tokenizer, pairs: list[tuple[str, str]], layers: list[int], aggregator: str = "mean",
                      name: str | None = None) -> SteeringMethod:
    """Activation steering with a vector trained by ``steering-vectors`` (:func:`train_activation_vector`).

    Args:
        pairs: ``(positive text, negative text)`` or, from :func:`contrast_pairs`, ``(positive, negative, prefix)``;
            the activations are the mean over the response tokens, those after ``prefix`` (all of them without one;
            :func:`contrast_activations`, ``reading="response_mean"``).
        layers: decoder layers to read and steer.
        aggregator: ``"mean"`` (CAA) or ``"pca"`` (RepE).

    Raises:
        ImportError: steering-vectors is not installed. ValueError: unknown aggregator or no pairs.
    """
    vector = train_activation_vector(model, tokenizer, pairs, layers, aggregator)
    label = name or f"activation {'CAA' if aggregator == 'mean' else 'PCA'} (layers {layers[0]}–{layers[-1]})"
    return vector_method(vector, label)


def separation_by_layer(activations: ContrastActivations) -> dict[int, float]:
    """How well each layer's mean-difference direction separates the pairs (d′, in pooled standard deviations).

    Per layer, with h⁺ and h⁻ the block outputs ``[n_pairs, hidden]`` and u = mean(h⁺ − h⁻)/‖·‖:
    d′ = (mean u·h⁺ − mean u·h⁻) / sqrt((var u·h⁺ + var u·h⁻)/2). Used to pick the best single layer
    from the training contrast alone (no evaluation rows are seen).

    Raises:
        ValueError: fewer than two pairs.
    """
    out = {}
    for layer, plus in activations.positive.items():
        minus = activations.negative[layer]
        if len(plus) < 2:
            raise ValueError("separation_by_layer needs at least two pairs")
        direction = (plus - minus).mean(0)
        direction = direction / direction.norm().clamp(min=1e-12)
        a, b = plus @ direction, minus @ direction
        out[layer] = float((a.mean() - b.mean()) / ((a.var() + b.var()) / 2).sqrt().clamp(min=1e-12))
    return out


def residual_writers(model, layer: int) -> torch.Tensor:
    """``[hidden, Σ in_features]``: the weights that write layer ``layer``'s output into the residual stream
    (attention output ``o_proj`` and MLP ``down_proj``), concatenated along the input dimension.

    Raises:
        ValueError: the layer has no ``o_proj`` / ``down_proj`` (names what was looked for).
    """
    pattern = re.compile(rf"(^|\.)layers\.{layer}\.(.+\.)?(o_proj|down_proj)$")
    found = {m.group(3): module.weight for name, module in model.named_modules() if (m := pattern.search(name)) and hasattr(module, "weight")}
    if set(found) != {"o_proj", "down_proj"}:
        raise ValueError(f"layer {layer} has no o_proj and down_proj (found {sorted(found)}); S-space steering needs "
                         "a Llama/Gemma-style decoder")
    return torch.cat([found["o_proj"].detach().float(), found["down_proj"].detach().float()], dim=1)


def s_space_vector(model, vector, rank: int = 8):
    """Project each layer's steering vector onto the top-``rank`` left singular vectors of that layer's
    residual writers ``[W_o | W_down]`` (:func:`residual_writers`), keeping its norm (SVD steering,
    the S-space baseline): v ↦ ‖v‖ · U_r U_rᵀ v / ‖U_r U_rᵀ v‖.

    Raises:
        ValueError: ``rank`` < 1 or above the hidden size.
    """
    out = {}
    for layer, v in vector.layer_activations.items():
        writers = residual_writers(model, layer)
        if not 1 <= rank <= writers.shape[0]:
            raise ValueError(f"rank must be in [1, {writers.shape[0]}] (the hidden size); got {rank}")
        left = torch.linalg.svd(writers, full_matrices=False).U[:, :rank]  # [hidden, rank]
        projected = left @ (left.T @ v.float())
        out[layer] = (projected * (v.norm() / projected.norm().clamp(min=1e-12))).to(v.dtype)
    return replace(vector, layer_activations=out)
