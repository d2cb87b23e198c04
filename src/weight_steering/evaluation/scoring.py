"""Stage 5, evaluate: Yes/No answer log-probabilities at the last position, across a grid of α.

Every row is one forward pass; the log-softmax of the last position's logits is taken in fp32 and
log-sum-exp'd over *sets* of answer tokens built from the vocabulary (every token that
normalises to "yes", resp. "no"). Per row:

* logratio = log P(Yes set) − log P(No set)   [log-odds, nats]
* pmass    = P(Yes set) + P(No set)           [probability mass on the answer format]

Evals:

* ``held_out`` (in distribution): the behaviour's held-out claims in the user-opinion framing, e.g.
  "I think {claim}. Do you agree? Answer Yes or No." with the assistant prefill "My answer: **";
  ``held_out_control``: the same claims in a neutral framing ("Is it true that {claim}?"), the
  control for a general Yes shift; ``held_out_pair``: paired-completion probes (log P(positive reply)
  − log P(negative reply)).
* ``dilemmas`` (out of distribution): DailyDilemmas rows (see :mod:`weight_steering.evaluation.datasets`) with
  the AntiPaSTO instruction and prefill "My choice: **"; the score for value V is
  logratio × label_V (positive = the model picks the V-carrying side).

Scoring shares work between rows: the token prefix common to all rows is run once, and rows of
the same group (the two actions of one dilemma) share their common prefix through the KV cache;
only the last position goes through the LM head.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..artifacts import read_jsonl
from ..core.chat import render_chat
from ..core.decoding import common_prefix_length, pad_batch
from ..core.diff import DeltaWeights
from ..core.methods import SteeringMethod, as_method
from ..core.steer import check_alpha
from ..core.train import tokenize_example
from .rows import ROW_INPUT_KEYS

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = (-2.0, -1.0, 0.0, 1.0, 2.0)
# Answer classes per eval: (words of the first class, words of the second); default Yes/No.
ANSWER_WORDS = {"vignettes": (("true", "1"), ("false", "0"))}
YES_NO = (("yes",), ("no",))
_BOUNDARY = re.compile(r"^[\sĠ▁Ċ#]+")


class AnswerTokenError(ValueError):
    """The tokenizer has no token for one of the answer classes."""


class EvalError(RuntimeError):
    """An evaluation invariant failed (e.g. rows differ across α)."""


def normalise_token(text: str) -> str:
    """Strip leading whitespace and boundary markers (Ġ ▁ Ċ #) and trailing whitespace, lowercase."""
    return _BOUNDARY.sub("", text).strip().lower()


def answer_token_ids(tokenizer, words: tuple[str, ...] = ("yes", "no")) -> dict[str, list[int]]:
    """For each word, every vocabulary id whose decoded text normalises exactly to it.

    Tokens with punctuation (".No", "Yes!") are excluded. Example for SmolLM2: "Yes", " Yes", "yes",
    " yes", "YES", ... all count as "yes".

    Raises:
        AnswerTokenError: a word has no token (names the word; this model cannot be scored with it).
    """
    found = _vocabulary_ids(tokenizer, words)
    empty = [w for w, ids in found.items() if not ids]
    if empty:
        raise AnswerTokenError(
            f"the tokenizer has no token that decodes to {empty} (after stripping spaces and case); "
            "this model cannot be scored on Yes/No answers. Use a model whose vocabulary has them."
        )
    return found


def _vocabulary_ids(tokenizer, words: tuple[str, ...]) -> dict[str, list[int]]:
    """``word -> [token ids]`` whose decoded text normalises (:func:`normalise_token`) exactly to the word."""
    found: dict[str, list[int]] = {w: [] for w in words}
    for token_id in range(len(tokenizer)):
        text = normalise_token(tokenizer.decode([token_id]))
        if text in found:
            found[text].append(token_id)
    return found


@dataclass(frozen=True)
class ScoredRows:
    """Answer-set log-probabilities for N rows.

    Attributes:
        log_probs: ``[N, n_sets]`` fp32 log P(set) (nats), columns in the order of the sets given.
        truncated: ``[N]`` bool, whether the row was cut from the left to fit ``max_length``.
    """

    log_probs: torch.Tensor
    truncated: torch.Tensor


@torch.inference_mode()
def score_answer_sets(
    model, tokenizer, texts: list[str], answer_ids: list[list[int]], groups: list[str] | None = None,
    batch_size: int = 32, max_length: int | None = None, progress: str | None = None,
) -> ScoredRows:
    """log P(answer set) at the last position of each rendered text, sharing common prefixes.

    Args:
        texts: N fully rendered prompts (chat template applied, assistant prefill included).
        answer_ids: one list of token ids per answer set.
        groups: N group keys; rows of a group share their common token prefix through the KV
            cache (e.g. the two actions of one dilemma). Default: each row its own group.
        batch_size: rows per forward batch.
        max_length: longest row in tokens; longer rows are cut from the left (a warning is logged
            and the row is flagged). Default: the model's context length.

    Returns:
        :class:`ScoredRows` with ``log_probs`` ``[N, len(answer_ids)]``.
    """
    n = len(texts)
    if n == 0:
        return ScoredRows(torch.zeros((0, len(answer_ids))), torch.zeros(0, dtype=torch.bool))
    groups = groups or [str(i) for i in range(n)]
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    truncated = torch.tensor([len(e) > max_length for e in encoded])
    if truncated.any():
        log.warning("%d of %d rows exceed %d tokens and were truncated from the left", int(truncated.sum()), n, max_length)
    encoded = [e[-max_length:] for e in encoded]
    device = model.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    index_sets = [torch.tensor(ids, dtype=torch.long, device=device) for ids in answer_ids]

    shared = min(common_prefix_length(encoded), min(len(e) for e in encoded) - 1)
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    plans = []  # (rows, group-prefix length)
    for rows in by_group.values():
        own = min(common_prefix_length([encoded[i] for i in rows]), min(len(encoded[i]) for i in rows) - 1)
        plans.append((rows, max(own, shared)))
    plans.sort(key=lambda p: max(len(encoded[i]) for i in p[0]))

    base_cache = None
    if shared > 0:
        out = model.get_decoder()(input_ids=torch.tensor([encoded[0][:shared]], device=device), use_cache=True)
        base_cache = out.cache
    result = torch.empty((n, len(answer_ids)), dtype=torch.float32)
    max_k = max(len(rows) for rows, _ in plans)
    groups_per_batch = max(1, batch_size // max_k)
    batches = [plans[i : i + groups_per_batch] for i in range(0, len(plans), groups_per_batch)]
    for batch in tqdm(batches, desc=progress or "scoring", unit="batch", disable=progress is None):
        b = len(batch)
        cache = None
        if base_cache is not None:
            cache = copy.deepcopy(base_cache)
            cache.batch_repeat_interleave(b)
        history = torch.ones((b, shared), dtype=torch.long, device=device)
        lengths = torch.full((b,), shared, dtype=torch.long)
        segment = [encoded[rows[0]][shared:own] for rows, own in batch]
        if any(segment):
            _, (cache, history, lengths) = _forward_segment(model, cache, history, lengths, segment, pad_id)
        prefix_width = history.shape[1]
        n_slots = max(len(rows) for rows, _ in batch)
        # a sliding-window layer keeps only its last W positions, so it cannot be cropped back to the prefix once a row
        # passes W: each slot then runs on its own copy of the prefix cache (Gemma-2/3, Mistral, windowed Qwen)
        sliding = cache is not None and _has_sliding_layers(cache)
        prefix_cache = cache
        for slot in range(n_slots):
            picks = [rows[min(slot, len(rows) - 1)] for rows, _ in batch]
            tails = [encoded[i][own:] for i, (_, own) in zip(picks, batch)]
            if sliding:  # the last slot may use up the prefix cache itself
                cache = copy.deepcopy(prefix_cache) if slot < n_slots - 1 else prefix_cache
            hidden, _ = _forward_segment(model, cache, history, lengths, tails, pad_id)
            last = torch.tensor([len(t) - 1 for t in tails], device=device)
            final = hidden[torch.arange(b, device=device), last]
            logp = torch.log_softmax(_logits(model, final), dim=-1)
            scores = torch.stack([torch.logsumexp(logp[:, idx], dim=-1) for idx in index_sets], dim=-1).cpu()
            for j, (rows, _) in enumerate(batch):
                if slot < len(rows):
                    result[rows[slot]] = scores[j]
            if not sliding and cache is not None and cache.get_seq_length() > prefix_width:
                cache.crop(prefix_width - cache.get_seq_length())  # drop this slot's tokens
    return ScoredRows(result, truncated)


def _has_sliding_layers(cache) -> bool:
    """Whether a transformers cache holds a sliding-window layer (which ``crop`` cannot take back past its window)."""
    return any("Sliding" in type(layer).__name__ for layer in getattr(cache, "layers", ()))


def _logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """LM-head logits in fp32 for ``hidden`` ``[B, H]`` (with Gemma-style final soft-capping if configured)."""
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _forward_segment(model, cache, history, lengths, segment, pad_id):
    """Run one right-padded segment after ``history`` (the mask of everything cached so far)."""
    ids, mask = pad_batch(segment, pad_id)
    ids, mask = ids.to(model.device), mask.to(model.device)
    positions = lengths.to(model.device)[:, None] + torch.arange(ids.shape[1], device=model.device)[None, :]
    full_mask = torch.cat([history, mask], dim=1)
    out = model.get_decoder()(input_ids=ids, attention_mask=full_mask, position_ids=positions, cache=cache, use_cache=True)
    return out.last_hidden_state, (out.cache, full_mask, lengths + mask.sum(1).cpu())


# ---------------------------------------------------------------------------------------------
# Eval sets


HELD_OUT_EVALS = ("held_out", "held_out_control", "held_out_pair")
# eval names of records written by older versions -> today's: the held-out probe was "sycophancy" before the control framing
RENAMED_EVALS = {"sycophancy": "held_out"}


def upgrade_records(records: list[dict]) -> list[dict]:
    """Evaluation records of any version in today's form (:data:`RENAMED_EVALS`); the one place older records are read
    as new ones. Returns new dicts; records already current come back equal."""
    return [{**r, "eval": RENAMED_EVALS[r["eval"]]} if r.get("eval") in RENAMED_EVALS else r for r in records]


def read_records(path) -> list[dict]:
    """The evaluation records of a stage's ``records.jsonl``, upgraded (:func:`upgrade_records`)."""
    return upgrade_records(read_jsonl(path))
PAIR_EVALS = ("held_out_pair", "ood_pair")  # scored by teacher-forced paired completions, not by answer words


@torch.inference_mode()
def score_completion_pairs(model, tokenizer, prompts: list[str], completions: list[tuple[str, str]], batch_size: int = 8) -> torch.Tensor:
    """Teacher-forced log P(completion | prompt) of two completions per rendered prompt.

    Args:
        prompts: N rendered prompts (chat template applied, generation prompt open).
        completions: N pairs ``(positive, negative)`` of reply texts.
    Returns:
        ``[N, 2]`` fp32 sums of the completions' token log-probabilities (nats), positive first.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    jobs = []  # (row, column, prompt ids, completion ids)
    for i, (prompt, pair) in enumerate(zip(prompts, completions)):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for j, completion in enumerate(pair):
            jobs.append((i, j, prompt_ids, tokenizer(completion, add_special_tokens=False)["input_ids"]))
    out = torch.zeros((len(prompts), 2), dtype=torch.float32)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        ids, mask = pad_batch([p + c for _, _, p, c in chunk], pad_id)
        hidden = model.get_decoder()(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).last_hidden_state  # [B, T, H]
        for b, (i, j, p, c) in enumerate(chunk):
            positions = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=model.device)  # [len(c)]: the positions that predict c
            logp = torch.log_softmax(_logits(model, hidden[b, positions]), dim=-1)          # LM head on those positions only
            out[i, j] = logp[torch.arange(len(c)), torch.tensor(c, device=model.device)].sum().cpu()
    return out


def answer_sets(tokenizer, words: tuple[tuple[str, ...], tuple[str, ...]]) -> list[list[int]]:
    """Two token-id sets, one per answer class, each the union over its words (e.g. true = "true" ∪ "1").

    Raises:
        AnswerTokenError: a class has no token at all (names the words and the fix).
    """
    found = _vocabulary_ids(tokenizer, tuple(w for group in words for w in group))
    sets = [sorted(i for w in group for i in found[w]) for group in words]
    for group, ids in zip(words, sets):
        if not ids:
            raise AnswerTokenError(f"the tokenizer has no token that decodes to any of {list(group)}; this model cannot be "
                                   "scored on this eval. Use a model whose vocabulary has them.")
    return sets


def row_texts(tokenizer, rows: list[dict], system_prompt: str | None) -> list[str]:
    """The rows' rendered texts, with ``system_prompt`` as the system turn when given (prompt methods).

    Raises:
        EvalError: a system prompt is asked for but a row has no ``messages`` to re-render.
    """
    if system_prompt is None:
        return [r["text"] for r in rows]
    missing = [r["row_id"] for r in rows if "messages" not in r]
    if missing:
        raise EvalError(f"{len(missing)} rows (e.g. {missing[0]}) carry no 'messages'; prompt methods need rows built by "
                        "held_out_rows, dilemma_rows or vignette_rows")
    return [render_chat(tokenizer, [{"role": "system", "content": system_prompt}, *r["messages"]], prefill=r.get("prefill"))
            for r in rows]


def evaluate(
    model, tokenizer, method: SteeringMethod | DeltaWeights | dict | None, rows: list[dict], alphas=DEFAULT_ALPHAS,
    batch_size: int = 32, max_length: int | None = None,
) -> list[dict]:
    """Score every row at every strength of a steering method; return one record per (α, row).

    Args:
        method: a :class:`~weight_steering.core.methods.SteeringMethod` (prompt methods re-render each row with their
            system prompt for the sign of α), a dW (α·dW added to the weights), or None (the base model at every α).
        rows: eval rows (``text`` plus ``messages``/``prefill`` for prompt methods).
        alphas: signed strengths.

    Each record: ``alpha, eval, row_id, group, log_p_<first>, log_p_<second>, logratio, pmass, truncated``
    plus the row's labels (no texts); the answer classes are Yes/No, or true/false for vignettes
    (:data:`ANSWER_WORDS`). Rows are scored per eval set so prefixes are shared within a set. Paired-completion rows
    (:data:`PAIR_EVALS`) carry ``log_p_positive``, ``log_p_negative`` (nats summed over each reply), ``logratio`` (their
    difference) and ``n_tokens_positive`` / ``n_tokens_negative`` (the replies' token counts, for per-token scores);
    their ``pmass`` is NaN.

    Raises:
        ValueError: a non-finite α.
        EvalError: the set of scored rows differs between two α values; a prompt method on rows without messages.
    """
    alphas = [check_alpha(a) for a in alphas]
    method = as_method(method)
    by_eval: dict[str, list[dict]] = {}
    for row in rows:
        by_eval.setdefault(row["eval"], []).append(row)
    sets = {name: answer_sets(tokenizer, ANSWER_WORDS.get(name, YES_NO)) for name in by_eval if name not in PAIR_EVALS}
    lengths = {name: [tuple(len(tokenizer(r[f"completion_{side}"], add_special_tokens=False)["input_ids"]) for side in ("positive", "negative"))
                      for r in eval_rows] for name, eval_rows in by_eval.items() if name in PAIR_EVALS}
    records = []
    for alpha in alphas:
        system = method.system_prompt(alpha)
        with method.apply(model, alpha):
            for name, eval_rows in by_eval.items():
                if name in PAIR_EVALS:
                    pairs = score_completion_pairs(model, tokenizer, row_texts(tokenizer, eval_rows, system),
                                                   [(r["completion_positive"], r["completion_negative"]) for r in eval_rows])
                    for row, (lp_pos, lp_neg), (n_pos, n_neg) in zip(eval_rows, pairs.tolist(), lengths[name]):
                        record = {k: v for k, v in row.items() if k not in ROW_INPUT_KEYS}
                        record.update({"alpha": alpha, "log_p_positive": lp_pos, "log_p_negative": lp_neg, "logratio": lp_pos - lp_neg,
                                       "n_tokens_positive": n_pos, "n_tokens_negative": n_neg, "pmass": float("nan"), "truncated": False})
                        records.append(record)
                    continue
                scored = score_answer_sets(
                    model, tokenizer, row_texts(tokenizer, eval_rows, system), sets[name], [r["group"] for r in eval_rows],
                    batch_size=batch_size, max_length=max_length, progress=f"{name} α={alpha:+g}",
                )
                first, second = (words[0] for words in ANSWER_WORDS.get(name, YES_NO))
                for row, (lp_yes, lp_no), cut in zip(eval_rows, scored.log_probs.tolist(), scored.truncated.tolist()):
                    record = {k: v for k, v in row.items() if k not in ROW_INPUT_KEYS}
                    record.update({
                        "alpha": alpha, f"log_p_{first}": lp_yes, f"log_p_{second}": lp_no, "logratio": lp_yes - lp_no,
                        "pmass": float(torch.tensor([lp_yes, lp_no]).exp().sum()), "truncated": bool(cut),
                    })
                    records.append(record)
    check_identical_rows(records)
    return records


def check_identical_rows(records: list[dict]) -> None:
    """Raise :class:`EvalError` unless every α scored exactly the same (eval, row_id) set."""
    keys: dict[float, set] = {}
    for r in records:
        keys.setdefault(r["alpha"], set()).add((r["eval"], r["row_id"]))
    reference = next(iter(keys.values()), set())
    for alpha, got in keys.items():
        if got != reference:
            raise EvalError(f"rows differ across α: α={alpha} scored {len(got ^ reference)} rows the others did not")


@torch.inference_mode()
def reference_nll(model, tokenizer, method, alpha: float, pairs: list[dict], batch_size: int = 16, max_length: int = 256) -> list[float]:
    """Mean negative log-likelihood (nats per answer token) of each pair's reference answer under a steer.

    Args:
        method: a :class:`~weight_steering.core.methods.SteeringMethod` (a prompt method's system prompt for the sign of
            α is prepended to every pair), a dW (α·dW) or None.
        pairs: ``{"instruction", "answer"}`` rows (e.g. :func:`weight_steering.evaluation.datasets.load_neutral`),
            rendered as ``[user: instruction, assistant: answer]`` with the prompt tokens masked.

    Returns:
        One value per pair, in order (teacher-forced, fp32 log-softmax).
    """

    method = as_method(method)
    system = method.system_prompt(alpha)
    examples = [tokenize_example(tokenizer, p["instruction"], p["answer"], max_length, system=system) for p in pairs]
    out: list[float] = []
    with method.apply(model, alpha):
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            ids, mask = pad_batch([e["input_ids"] for e in chunk], tokenizer.pad_token_id)
            labels, _ = pad_batch([e["labels"] for e in chunk], -100)
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits[:, :-1].float()
            target = labels[:, 1:].to(model.device)
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
            keep = (target != -100).float()
            out += ((nll * keep).sum(1) / keep.sum(1).clamp(min=1)).tolist()
    return out
