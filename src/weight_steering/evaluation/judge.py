"""Judge the generated data: does each response show the behaviour? Rates per persona and sign, pair filter, agreement.

A behaviour's ``judge`` block is a Yes/No question about one response (``{prompt}``: the user
message, ``{response}``: the reply). The judge model answers it in one forward pass, scored like
every other Yes/No row (:func:`weight_steering.evaluation.scoring.score_answer_sets`): the response shows the
behaviour when logratio = log P(Yes set) − log P(No set) > ``threshold``. A small judge's Yes bias
makes the absolute threshold 0 meaningless (SmolLM2-135M answers Yes to every hand-labelled response:
κ = 0), so the threshold is calibrated: ``"labels"`` (the pipeline's default) takes the threshold
that best reproduces the behaviour's shipped hand labels (:func:`label_threshold`), ``"median"`` the
median score of the responses being judged (which fixes the overall judged rate at one half, so its
per-sign rates are only relative), and a float (e.g. 0.0 for a large judge) is used as given. The judge is pluggable: any loaded causal LM (the
embedded model by default; any Hugging Face model on a GPU). How far to trust it is measured, not
assumed: :func:`judge_agreement` scores it against hand-labelled responses shipped in
``resources/judge_labels/<behaviour>.jsonl`` (AUC, accuracy, Cohen's kappa).

The filter follows Fierro & Roger 2025 §3: keep a pair only when the positive response shows the
behaviour and the negative one does not. Its judge is the model's Yes/No answer or, for a behaviour whose model judge
is weak, the behaviour's judge-free metric (:func:`pair_scorer`), thresholded by the same rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.behaviors import Behavior, BehaviorError
from ..core.chat import render_chat
from .scoring import YES_NO, answer_sets, score_answer_sets


class JudgeError(ValueError):
    """The behaviour has no judge, or a hand-label file is malformed; the message names the fix."""


def judge_logratios(model, tokenizer, behavior: Behavior, items: list[tuple[str, str]], batch_size: int = 16) -> np.ndarray:
    """The judge's log-odds that each ``(prompt, response)`` shows the behaviour.

    Returns:
        ``[N]`` float array, log P(Yes set) − log P(No set) in nats (> 0: judged to show it).
    Raises:
        JudgeError: the behaviour declares no ``judge``.
    """
    if behavior.judge is None:
        raise JudgeError(f"behaviour '{behavior.name}' has no 'judge' block; add one (a Yes/No question with {{response}}) to judge its data")
    if not items:
        return np.zeros(0)
    texts = [render_chat(tokenizer, [{"role": "user", "content": behavior.judge.question(p, r)}], prefill=behavior.judge.prefill)
             for p, r in items]
    scored = score_answer_sets(model, tokenizer, texts, answer_sets(tokenizer, YES_NO), batch_size=batch_size, progress="judging")
    return (scored.log_probs[:, 0] - scored.log_probs[:, 1]).numpy().astype(float)


def label_threshold(label_scores, labels) -> float:
    """The judge threshold (nats) that classifies hand-labelled responses best: the midpoint between
    consecutive sorted scores that maximises accuracy (the lowest such midpoint on ties).

    Args:
        label_scores: ``[N]`` judge log-odds of the labelled responses; labels: ``[N]`` 0 / 1.
    """
    scores, truth = np.asarray(label_scores, float), np.asarray(labels) == 1
    ordered = np.sort(scores)
    candidates = np.r_[ordered[0] - 1.0, (ordered[1:] + ordered[:-1]) / 2, ordered[-1] + 1.0]
    accuracy = [((scores > c) == truth).mean() for c in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def resolve_threshold(scores: np.ndarray, threshold: float | str, label_scores=None, labels=None) -> float:
    """``threshold`` as a number: a float as given, ``"median"`` the median of ``scores``, ``"labels"``
    :func:`label_threshold` on the hand labels (``label_scores``, ``labels``).

    Raises:
        JudgeError: ``"labels"`` without labels, any other string, or a non-finite number.
    """
    if threshold == "labels":
        if label_scores is None or labels is None or len(labels) == 0:
            raise JudgeError("threshold 'labels' needs hand-labelled responses; ship them or use 'median' or a number")
        return label_threshold(label_scores, labels)
    if threshold == "median":
        return float(np.median(scores)) if len(scores) else 0.0
    if isinstance(threshold, str) or not np.isfinite(threshold):
        raise JudgeError(f"judge threshold must be a finite number of nats, 'labels' or 'median'; got {threshold!r}")
    return float(threshold)


PAIR_JUDGES = ("model", "metric")


def pair_scorer(model, tokenizer, behavior: Behavior, kind: str = "model") -> Callable[[list[tuple[str, str]]], np.ndarray]:
    """The scores a pair filter thresholds: ``[(prompt, response)] -> [N]`` floats, higher = shows the behaviour more.

    ``kind``: ``"model"``, the behaviour's Yes/No ``judge`` asked of ``model`` (:func:`judge_logratios`, log-odds in
    nats); ``"metric"``, the behaviour's judge-free ``generation_metric`` of the response alone
    (:data:`weight_steering.evaluation.generations.GENERATION_METRICS`: VADER compound valence in [−1, 1] for upbeat,
    the register score for tone), for behaviours whose model judge is weak (upbeat's: AUC 0.61 on its hand labels,
    VADER's 0.92).

    Raises:
        JudgeError: an unknown ``kind``; ``"model"`` for a behaviour without a ``judge`` block; ``"metric"`` for one
            without a ``generation_metric``.
    """
    if kind == "model":
        if behavior.judge is None:
            raise JudgeError(f"behaviour '{behavior.name}' has no 'judge' block; add one or use the pair judge 'metric'")
        return lambda items: judge_logratios(model, tokenizer, behavior, items)
    if kind == "metric":
        from .generations import GENERATION_METRICS

        if behavior.generation_metric is None:
            raise JudgeError(f"behaviour '{behavior.name}' has no 'generation_metric' to judge pairs with; use the pair judge 'model'")
        metric = GENERATION_METRICS[behavior.generation_metric]
        return lambda items: np.array([metric(response) for _, response in items], dtype=float)
    raise JudgeError(f"unknown pair judge {kind!r}; choose one of {', '.join(PAIR_JUDGES)}")


def judge_pairs(scorer: Callable[[list[tuple[str, str]]], np.ndarray], pairs: list[dict], threshold: float | str = "median",
                labels: list[dict] | None = None, label_scores=None) -> tuple[list[dict], float]:
    """Judge both responses of every generated pair.

    Args:
        scorer: ``[(prompt, response)] -> [N]`` scores (:func:`pair_scorer`: the model judge's log-odds in nats, or a
            judge-free metric).
        labels, label_scores: hand labels and (optionally, to score them once) the scorer's scores of them; needed
            for ``threshold="labels"``.

    Returns:
        ``(judged, threshold)``: the numeric threshold used (the scorer's units) and, one dict per pair, in order:
        ``judge_positive`` / ``judge_negative`` (scores) and ``shows_positive`` / ``shows_negative`` (score >
        ``threshold``), ``keep`` (the positive response shows the behaviour and the negative one does not).
    """
    # with thinking on the judge reads the answer after </think> (data.generate_pairs), not the reasoning
    items = ([(p["prompt"], p.get("answer_positive", p["response_positive"])) for p in pairs]
             + [(p["prompt"], p.get("answer_negative", p["response_negative"])) for p in pairs])
    scores = scorer(items)
    if threshold == "labels" and labels and label_scores is None:
        label_scores = scorer([(r["prompt"], r["response"]) for r in labels])
    threshold = resolve_threshold(scores, threshold, label_scores, None if labels is None else [r["label"] for r in labels])
    n = len(pairs)
    out = []
    for i in range(n):
        plus, minus = float(scores[i]), float(scores[n + i])
        out.append({"judge_positive": plus, "judge_negative": minus, "shows_positive": plus > threshold,
                    "shows_negative": minus > threshold, "keep": plus > threshold >= minus})
    return out, threshold


def behavior_rates(pairs: list[dict], judged: list[dict], behavior: Behavior | None = None) -> dict:
    """The behaviour rate (share of responses judged to show it) per sign, per persona and sign, and per
    answer word of the prompt (``behavior_answer`` where the behaviour file records it).

    Returns:
        ``{"positive", "negative", "kept", "n_pairs", "by_persona": [{persona_index, positive, negative, n}],
        "by_answer": {"yes": {...}, "no": {...}}}`` (rates in [0, 1]).
    """
    shows_pos = np.array([j["shows_positive"] for j in judged], bool)
    shows_neg = np.array([j["shows_negative"] for j in judged], bool)
    keep = np.array([j["keep"] for j in judged], bool)
    personas = np.array([p["persona_index"] for p in pairs])
    out = {"positive": float(shows_pos.mean()), "negative": float(shows_neg.mean()), "kept": int(keep.sum()), "n_pairs": len(pairs),
           "by_persona": [{"persona_index": int(q), "positive": float(shows_pos[personas == q].mean()),
                           "negative": float(shows_neg[personas == q].mean()), "n": int((personas == q).sum())} for q in np.unique(personas)]}
    recorded = behavior.behavior_answers if behavior is not None else ()
    answers = np.array([(recorded[p["prompt_index"]] if p["prompt_index"] < len(recorded) else None) or "" for p in pairs])
    out["by_answer"] = {a: {"positive": float(shows_pos[answers == a].mean()), "negative": float(shows_neg[answers == a].mean()),
                            "kept": int(keep[answers == a].sum()), "n": int((answers == a).sum())}
                        for a in ("yes", "no") if (answers == a).any()}
    return out


def load_hand_labels(behavior: Behavior | str, path: str | Path | None = None) -> list[dict]:
    """Hand-labelled responses for a behaviour's judge: ``{"prompt", "response", "label"}`` rows (label 1:
    shows the behaviour, 0: does not). Default: the shipped ``resources/judge_labels/<set>.jsonl``, where
    ``<set>`` is the judge's ``labels`` field, else the behaviour's name.

    Raises:
        JudgeError: no shipped labels for the behaviour, or a row misses a field / has a label other than 0 or 1.
    """
    name = behavior if isinstance(behavior, str) else (behavior.judge.labels if behavior.judge and behavior.judge.labels else behavior.name)
    if path is None:
        source = resources.files("weight_steering") / "resources" / "judge_labels" / f"{name}.jsonl"
        if not source.is_file():
            raise JudgeError(f"no hand labels are shipped for '{name}'; pass a JSONL file of {{prompt, response, label}} rows")
        text, where = source.read_text(encoding="utf-8"), f"resources/judge_labels/{name}.jsonl"
    else:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise JudgeError(f"{where} line {line_no}: not JSON ({err.msg})") from err
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "response")) or row.get("label") not in (0, 1):
            raise JudgeError(f"{where} line {line_no}: needs string fields prompt and response and a label of 0 or 1")
        rows.append(row)
    return rows


def hand_label_rates(labels: list[dict]) -> dict:
    """The behaviour rate of the hand-labelled responses per persona sign (``generated_under`` starts with
    positive / negative), with Wilson 95% intervals: the judge-free estimate of how often each persona's
    responses show the behaviour. ``{sign: {"rate", "ci_low", "ci_high", "n"}}``."""
    out = {}
    for sign in ("positive", "negative"):
        chosen = [r["label"] for r in labels if str(r.get("generated_under", "")).startswith(sign)]
        if chosen:
            low, high = wilson_interval(sum(chosen), len(chosen))
            out[sign] = {"rate": sum(chosen) / len(chosen), "ci_low": low, "ci_high": high, "n": len(chosen)}
    return out


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (Wilson 1927)."""
    p = successes / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(centre - half), float(centre + half)


def judge_agreement(model, tokenizer, behavior: Behavior, labels: list[dict], threshold: float | str = "median", scores=None) -> dict:
    """How often the judge agrees with hand labels.

    Returns:
        ``{"n", "auc", "accuracy", "kappa", "true_positive", "false_positive", "true_negative", "false_negative",
        "accuracy_ci_low", "accuracy_ci_high", "threshold", "scores"}``: the threshold-free AUC (the
        probability that a labelled-1 response scores above a labelled-0 one, Mann–Whitney), and at
        ``threshold`` (``"median"``: the median score of the labelled responses; ``"labels"``: the best
        threshold on these same labels, so its accuracy is in-sample and optimistic) the accuracy with a
        Wilson 95% interval (Wilson 1927) and Cohen's kappa (agreement beyond chance, Cohen 1960).
        A number is used as given (e.g. the threshold the judge applied to the data). ``scores``: the
        judge's log-odds on ``labels`` when already computed (else they are computed here).
    Raises:
        JudgeError: no labels, or the behaviour has no judge.
    """
    if not labels:
        raise JudgeError("no hand labels to compare the judge with")
    from scipy.stats import mannwhitneyu

    if scores is None:
        scores = judge_logratios(model, tokenizer, behavior, [(r["prompt"], r["response"]) for r in labels])
    scores = np.asarray(scores, dtype=float)
    truth = np.array([r["label"] == 1 for r in labels])
    threshold = resolve_threshold(scores, threshold, scores, truth.astype(int))
    predicted = scores > threshold
    auc = (float(mannwhitneyu(scores[truth], scores[~truth]).statistic / (truth.sum() * (~truth).sum()))
           if truth.any() and (~truth).any() else float("nan"))
    n = len(labels)
    tp, fp = int((predicted & truth).sum()), int((predicted & ~truth).sum())
    tn, fn = int((~predicted & ~truth).sum()), int((~predicted & truth).sum())
    accuracy = (tp + tn) / n
    chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
    kappa = (accuracy - chance) / (1 - chance) if chance < 1 else float("nan")
    low, high = wilson_interval(tp + tn, n)
    return {"n": n, "auc": auc, "accuracy": accuracy, "accuracy_ci_low": low, "accuracy_ci_high": high,
            "kappa": float(kappa), "true_positive": tp, "false_positive": fp, "true_negative": tn, "false_negative": fn,
            "threshold": threshold, "scores": scores.tolist()}


def has_hand_labels(behavior: Behavior) -> bool:
    """Whether a hand-label set is shipped for the behaviour's judge."""
    try:
        load_hand_labels(behavior)
    except JudgeError:
        return False
    return True


def check_judgeable(behavior: Behavior, pair_judge: str = "model") -> None:
    """Raise :class:`~weight_steering.core.behaviors.BehaviorError` when pair filtering is asked for a behaviour that
    lacks what ``pair_judge`` reads: a ``judge`` block (``"model"``) or a ``generation_metric`` (``"metric"``)."""
    if pair_judge == "model" and behavior.judge is None:
        raise BehaviorError(f"behaviour '{behavior.name}': filtering pairs needs a 'judge' block in the behaviour file; "
                            "add one, filter with --pair-judge metric (its generation_metric), or run without --filter-pairs")
    if pair_judge == "metric" and behavior.generation_metric is None:
        raise BehaviorError(f"behaviour '{behavior.name}': --pair-judge metric needs a 'generation_metric' in the behaviour file; "
                            "add one, filter with --pair-judge model, or run without --filter-pairs")
