"""What a steered model writes: greedy replies under a steering method, scored judge-free and by the judge.

Teacher-forced paired completions (:mod:`weight_steering.evaluation.scoring`) say which of two given replies the model prefers;
users read what it writes. This module generates greedy replies to the behaviour's ID prompts (the held-out probe)
and OOD prompts (its ``ood_sets``) at each strength of a method, and scores every reply twice:

* a **judge-free** metric named by the behaviour's ``generation_metric`` (:data:`GENERATION_METRICS`):

  - ``register`` (casual register, the ``tone`` behaviour): casual markers per word, i.e. (contractions + exclamation
    marks + words of :data:`CASUAL_WORDS`) / words. A lexical score written for this project; it counts what the
    casual personas add (contractions, "!", slang) and nothing else, so it is transparent and crude.
  - ``valence`` (upbeat outlook): VADER's compound sentiment in [−1, 1] (Hutto & Gilbert 2014, "VADER: A Parsimonious
    Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM; PyPI ``vaderSentiment``, MIT licence).

* the **judge** (the behaviour's Yes/No ``judge`` question, asked of the unsteered model; :mod:`weight_steering.evaluation.judge`):
  its log-odds that the reply shows the behaviour, and whether that exceeds the threshold calibrated on the shipped
  hand labels. How far to trust it is its measured agreement with those labels (reported beside it).

An effect is the per-prompt change against the unsteered reply to the same prompt (α = 0), averaged with a
cluster-bootstrap 95% CI over prompts; OOD prompts are stratified by set, each set weighted equally.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch

from ..core.chat import decode_reply, render_chat, stop_token_ids
from ..core.decoding import decode
from ..core.methods import SteeringMethod, as_method
from .effect_table import Effects
from .statistics import bootstrap_ci

# Slang and interjections the casual personas use (written for this project; lowercase, whole words).
CASUAL_WORDS = frozenset("""
awesome btw chill cool cuz dude gonna gotta guys haha hey hiya kinda lol lots loads nah nope okay ok omg oops pal pumped
super sweet ta-da totally ugh wanna whee wow ya yay yeah yep yo yum
""".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_CONTRACTION = re.compile(r"[A-Za-z](?:'|’)(?:s|re|t|ll|ve|m|d|em)\b", re.IGNORECASE)


def register_score(text: str) -> float:
    """Casual-register markers per word: (contractions + "!" + :data:`CASUAL_WORDS`) / number of words; 0 for no words."""
    words = _WORD.findall(text)
    if not words:
        return 0.0
    casual = sum(w.lower().strip("'’") in CASUAL_WORDS for w in words)
    return (len(_CONTRACTION.findall(text)) + text.count("!") + casual) / len(words)


_VADER = None


def valence_score(text: str) -> float:
    """VADER compound sentiment of ``text`` in [−1, 1] (> 0 positive); see the module docstring for the source."""
    global _VADER
    if _VADER is None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        _VADER = SentimentIntensityAnalyzer()
    return float(_VADER.polarity_scores(text)["compound"])


GENERATION_METRICS: dict[str, Callable[[str], float]] = {"register": register_score, "valence": valence_score}


@torch.inference_mode()
def generate_replies(model, tokenizer, method: SteeringMethod | None, alpha: float, prompts: list[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy replies to ``prompts`` (one user turn each) with ``method`` at strength ``alpha`` (None: the base model).

    Prompt methods put their system prompt for the sign of ``alpha`` in front of each prompt; weight and activation
    methods steer the model inside the call and restore it after (:class:`~weight_steering.core.methods.SteeringMethod`).

    Returns:
        One reply per prompt, decoded without special tokens and stripped; the tokens are transformers' greedy ones.
    """
    method = as_method(method)
    system = method.system_prompt(alpha)
    head = [{"role": "system", "content": system}] if system else []
    ids = [tokenizer(render_chat(tokenizer, [*head, {"role": "user", "content": p}]), add_special_tokens=False)["input_ids"] for p in prompts]
    with method.apply(model, alpha):
        replies = decode(model, ids, max_new_tokens, stop_token_ids(tokenizer, model), tokenizer.pad_token_id)
    return [decode_reply(tokenizer, r.tokens) for r in replies]  # with thinking on, the answer after </think>


def generation_prompts(behavior, ood_limit: int | None = None) -> list[dict]:
    """``{"prompt", "split", "set"}`` for the behaviour's ID prompts (held-out probe; split ``id``) and each OOD set's
    prompts (split ``ood``, ``set`` its name; the first ``ood_limit`` of each, when given)."""
    out = [{"prompt": p, "split": "id", "set": "held_out"} for p in (behavior.held_out.prompts() if behavior.held_out else [])]
    return out + [{"prompt": p, "split": "ood", "set": s.name} for s in behavior.ood_sets for p in s.prompts()[:ood_limit]]


def score_replies(rows: list[dict], metric: str | None, judge_scores: np.ndarray | None, threshold: float | None) -> list[dict]:
    """``rows`` (each with ``reply``) with ``metric`` (the judge-free score), ``judge`` (log-odds, nats) and ``judged``
    (judge log-odds above ``threshold``) added where available."""
    score = GENERATION_METRICS[metric] if metric else None
    out = []
    for i, row in enumerate(rows):
        extra = {}
        if score is not None:
            extra["metric"] = score(row["reply"])
        if judge_scores is not None:
            extra["judge"] = float(judge_scores[i])
            if threshold is not None:
                extra["judged"] = float(judge_scores[i] > threshold)
        out.append({**row, **extra})
    return out


def generation_effects(scored: list[dict], alpha_plus: float, alpha_minus: float) -> Effects:
    """Per split (``id``, ``ood``) and score (``metric``, ``judge``, ``judged``): the change against the base reply to
    the same prompt at each arm, and the spread between the arms, with 95% cluster-bootstrap CIs over prompts (OOD
    stratified by set, each set weighted equally).

    Args:
        scored: :func:`score_replies` rows with ``alpha``, ``prompt``, ``split``, ``set`` at 0, ``alpha_plus`` and
            ``alpha_minus``.

    Returns:
        :class:`~weight_steering.evaluation.effect_table.Effects` with metric ``gen_<split>_<score>`` at arms plus, minus
        and spread (with CIs) and base (the base replies' mean score, no CI).
    """
    out = Effects()
    for split in ("id", "ood"):
        rows = [r for r in scored if r["split"] == split]
        for name in ("metric", "judge", "judged"):
            if not rows or name not in rows[0]:
                continue
            by_alpha = {a: {r["prompt"]: r for r in rows if r["alpha"] == a} for a in (0.0, alpha_plus, alpha_minus)}
            prompts = list(by_alpha[0.0])
            strata = np.array([by_alpha[0.0][p]["set"] for p in prompts])
            value = {a: np.array([by_alpha[a][p][name] for p in prompts], dtype=float) for a in by_alpha}
            out.add(f"gen_{split}_{name}", "base", float(np.mean(value[0.0])))
            for arm, (high, low) in {"plus": (alpha_plus, 0.0), "minus": (alpha_minus, 0.0), "spread": (alpha_plus, alpha_minus)}.items():
                mean, ci_low, ci_high = bootstrap_ci(value[high] - value[low], np.arange(len(prompts)), strata=strata)
                out.add(f"gen_{split}_{name}", arm, mean, ci_low, ci_high)
    return out
