"""Stage 1, data: sample persona-contrast responses from the model itself.

For each (train prompt, persona pair, sample) the model answers the same user prompt twice, once
under the positive persona system prompt and once under the negative one (Fierro & Roger 2025 §3).
The rows are later used with the system prompt removed, so the adapters learn the behaviour
unconditionally.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..artifacts import check_number
from .behaviors import Behavior
from .chat import answer_tokens, render_chat, stop_token_ids, thinking_enabled
from .decoding import Sampling, decode
from .models import model_name

log = logging.getLogger(__name__)


class DataGateError(RuntimeError):
    """Generated pairs failed the sanity gate (empty responses, or positive == negative)."""


# Generation settings per sampler name (`--sampler` on run, compare and sweep). "cached" (the default) runs the cached
# decoder in batches of 200: four times the rows per forward. "transformers" is what every archived data stage was
# sampled with; stages sampled so keep the keys they had before the sampler field existed (generation_key).
SAMPLER_SETTINGS = {"cached": {"sampler": "cached", "batch_size": 200},
                    "transformers": {"sampler": "transformers", "batch_size": 50}}
SAMPLERS = tuple(SAMPLER_SETTINGS)


@dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings for persona-contrast data.

    Attributes:
        n_samples: responses per (prompt, persona, sign).
        n_prompts: use only the first n training prompts (None: all).
        n_personas: use only the first n persona pairs (None: all).
        max_new_tokens / min_new_tokens: response length bounds in tokens.
        temperature, top_p, top_k: nucleus sampling parameters (Holtzman et al. 2020), applied in that order.
        batch_size: generations per forward batch (left-padded).
        seed: torch seed; same seed, same model and same machine give the same rows.
        max_identical_fraction: the gate fails if more pairs than this have positive == negative.
        sampler: ``"cached"`` (:func:`weight_steering.core.decoding.decode`: a preallocated KV cache, stopped rows leave
            the batch, top-k before top-p) or ``"transformers"`` (``model.generate``, as every archived stage was
            sampled; left out of stage keys and rows at this value, :func:`generation_key`). Both sample the same
            distribution; the draws differ. :func:`sampler_settings` gives each one's batch size.

    The field order is that of the rows' ``generation_config``, on which archived ``pairs.jsonl`` bytes depend.
    """

    n_samples: int = 2
    n_prompts: int | None = None
    n_personas: int | None = None
    max_new_tokens: int = 64
    min_new_tokens: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 50
    batch_size: int = 200
    seed: int = 0
    max_identical_fraction: float = 0.2
    sampler: str = "cached"

    def __post_init__(self):
        for name in ("n_samples", "max_new_tokens", "batch_size", "top_k"):
            check_number("generation", name, getattr(self, name), minimum=1, integer=True)
        for name in ("n_prompts", "n_personas"):
            check_number("generation", name, getattr(self, name), minimum=1, integer=True, optional=True)
        check_number("generation", "min_new_tokens", self.min_new_tokens, minimum=0, integer=True)
        check_number("generation", "seed", self.seed, minimum=0, integer=True)
        check_number("generation", "temperature", self.temperature, above=0)
        if not (0 < self.top_p <= 1):
            raise ValueError(f"generation.top_p must lie in (0, 1]; got {self.top_p!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"generation.sampler must be one of {', '.join(SAMPLERS)}; got {self.sampler!r}")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"generation.min_new_tokens ({self.min_new_tokens}) exceeds max_new_tokens ({self.max_new_tokens})")


def sampler_settings(name: str) -> dict:
    """Generation settings for a sampler name (a copy of its :data:`SAMPLER_SETTINGS` entry).

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return dict(SAMPLER_SETTINGS[name])


def generation_key(config: GenerationConfig) -> dict:
    """The generation settings that enter a data stage's key: every field, except ``sampler`` at
    ``"transformers"``, the field's value before it existed, so stages sampled then keep their keys."""
    fields = asdict(config)
    if fields["sampler"] == "transformers":
        del fields["sampler"]
    return fields


@torch.inference_mode()
def sample_responses(model, tokenizer, texts: list[str], config: GenerationConfig, desc: str = "sampling") -> list[tuple[str, bool]]:
    """Sample one continuation per rendered prompt, in batches of ``config.batch_size``.

    Returns:
        ``(response, hit_stop)`` per prompt: the text cut at the first stop token, decoded without
        special tokens and right-stripped, and whether a stop token was produced. With thinking on
        (:func:`weight_steering.core.chat.set_thinking`) the response holds the think block as sampled; the answer after it is
        :func:`sample_answers`' business.
    """
    return [(text, stop) for text, stop, _ in _sample(model, tokenizer, texts, config, desc)]


def _sample(model, tokenizer, texts: list[str], config: GenerationConfig, desc: str) -> list[tuple[str, bool, str]]:
    """``(response, hit_stop, answer)`` per prompt; ``answer`` is the text after the last ``</think>`` token (thinking on)."""
    stops = stop_token_ids(tokenizer, model)
    decode_answer = lambda tokens: tokenizer.decode(answer_tokens(tokenizer, tokens), skip_special_tokens=True).strip()
    results: list[tuple[str, bool, str]] = []
    if config.sampler == "cached":
        sampling = Sampling(config.temperature, config.top_k, config.top_p)
        for start in tqdm(range(0, len(texts), config.batch_size), desc=desc, unit="batch"):
            prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts[start : start + config.batch_size]]
            # whole-prompt prefill: sharing the prefix changes logits at rounding level, which flipped 2 of 480 sampled
            # replies of the sycophancy data at seed 0 (a few tokens from their end), and this stage's bytes are archived
            for row in decode(model, prompts, config.max_new_tokens, stops, tokenizer.pad_token_id,
                              min_new_tokens=config.min_new_tokens, sampling=sampling, share_prefix=False):
                results.append((tokenizer.decode(row.tokens, skip_special_tokens=True).rstrip(), row.hit_stop, decode_answer(row.tokens)))
        return results
    for start in tqdm(range(0, len(texts), config.batch_size), desc=desc, unit="batch"):
        chunk = texts[start : start + config.batch_size]
        batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        output = model.generate(
            **batch,
            do_sample=True,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            max_new_tokens=config.max_new_tokens,
            min_new_tokens=config.min_new_tokens,
            eos_token_id=sorted(stops),
            pad_token_id=tokenizer.pad_token_id,
        )
        for row in output[:, batch["input_ids"].shape[1] :].tolist():
            cut = next((i for i, t in enumerate(row) if t in stops), None)
            kept = row if cut is None else row[:cut]
            results.append((tokenizer.decode(kept, skip_special_tokens=True).rstrip(), cut is not None, decode_answer(kept)))
    return results


def generate_pairs(model, tokenizer, behavior: Behavior, config: GenerationConfig = GenerationConfig()) -> list[dict]:
    """Generate the persona-contrast dataset for ``behavior``.

    Each row: ``prompt, response_positive, response_negative, system_prompt_positive,
    system_prompt_negative, prompt_index, persona_index, sample_index, behavior, model,
    generation_config``. Rows are ordered by (prompt, persona, sample).

    Raises:
        DataGateError: via :func:`check_pairs`.
    """
    chosen = behavior.prompt_indices(config.n_prompts)
    prompts = [behavior.train_prompts[i] for i in chosen]
    n_personas = min(config.n_personas or behavior.n_personas, behavior.n_personas)
    specs = [(p, q, s) for p in range(len(prompts)) for q in range(n_personas) for s in range(config.n_samples)]
    texts = []
    for p, q, _ in specs:
        for system in (behavior.positive_system_prompts[q], behavior.negative_system_prompts[q]):
            texts.append(render_chat(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": prompts[p]}]))
    torch.manual_seed(config.seed)
    responses = _sample(model, tokenizer, texts, config, desc=f"generating {behavior.name} pairs")
    thinking = thinking_enabled(tokenizer)
    rows = []
    for i, (p, q, s) in enumerate(specs):
        (positive, positive_stop, positive_answer), (negative, negative_stop, negative_answer) = responses[2 * i], responses[2 * i + 1]
        rows.append({
            "prompt": prompts[p],
            "response_positive": positive,
            "response_negative": negative,
            "system_prompt_positive": behavior.positive_system_prompts[q],
            "system_prompt_negative": behavior.negative_system_prompts[q],
            "prompt_index": chosen[p],
            "persona_index": q,
            "sample_index": s,
            "hit_stop_positive": positive_stop,
            "hit_stop_negative": negative_stop,
            "behavior": behavior.name,
            "model": model_name(model),
            "generation_config": generation_key(config),
            **({"thinking": True, "answer_positive": positive_answer, "answer_negative": negative_answer} if thinking else {}),
        })
    check_pairs(rows, config.max_identical_fraction)
    return rows


def check_pairs(rows: list[dict], max_identical_fraction: float = 0.2) -> dict:
    """Sanity gate on generated pairs; logs and returns the counts.

    Raises:
        DataGateError: no rows; any empty response; more than ``max_identical_fraction`` of pairs
            with identical positive and negative responses; or all positive (or all negative)
            responses identical. The message gives the counts and what to change.
    """
    if not rows:
        raise DataGateError("no pairs were generated: the behaviour has no training prompts or n_samples is 0")
    n = len(rows)
    empty = [i for i, r in enumerate(rows) if not r["response_positive"].strip() or not r["response_negative"].strip()]
    identical = sum(r["response_positive"] == r["response_negative"] for r in rows)
    counts = {
        "pairs": n,
        "empty": len(empty),
        "identical_pairs": identical,
        "unique_positive": len({r["response_positive"] for r in rows}),
        "unique_negative": len({r["response_negative"] for r in rows}),
        "hit_stop_positive": sum(r.get("hit_stop_positive", False) for r in rows),
        "hit_stop_negative": sum(r.get("hit_stop_negative", False) for r in rows),
    }
    log.info("pair gate: %s", counts)
    if empty:
        raise DataGateError(f"{len(empty)} of {n} pairs have an empty response (rows {empty[:10]}); raise min_new_tokens or check the chat template")
    if identical > max_identical_fraction * n:
        raise DataGateError(
            f"{identical} of {n} pairs have identical positive and negative responses: the persona prompts do not "
            "change the model's answers. Use stronger persona prompts or a higher temperature."
        )
    if n > 1 and (counts["unique_positive"] == 1 or counts["unique_negative"] == 1):
        raise DataGateError("all positive (or all negative) responses are the same text; sampling is degenerate")
    return counts
