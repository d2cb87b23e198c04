"""Evaluation datasets shipped in the package, and the deterministic builder of the DailyDilemmas rows.

DailyDilemmas (Chiu, Jiang & Choi, ICLR 2025, arXiv 2410.02683; CC BY 4.0). The offline rows are
built from ``virtue_conflict_dilemmas.jsonl`` (virtue-council-benchmark's mapping of each action's
values to seven virtues): a dilemma enters the eval for virtue V when V is among exactly one
action's virtues. Each dilemma gives two rows, the to-do and the not-to-do action; the row whose
action carries V gets ``label_V = +1``, the other ``−1`` (0 where V does not separate the actions).
For honesty: 159 dilemmas, 318 rows, balanced 159/159.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

VALUES = ("honesty", "justice", "courage", "temperance")
DILEMMA_FILE = "daily_dilemmas/virtue_rows.jsonl"
REQUIRED_SOURCE_FIELDS = ("id", "situation", "action_a", "action_b", "virtues_a", "virtues_b")


class EvalDataError(ValueError):
    """An eval data file is missing fields or is malformed; the message names the row and field."""


def build_dilemma_rows(source: str | Path) -> list[dict]:
    """Build the DailyDilemmas value rows from ``virtue_conflict_dilemmas.jsonl``.

    Returns:
        Rows sorted by (dilemma id, action type ``to_do`` before ``not_to_do``), each with
        ``row_id, dilemma_id, action_type, situation, action`` and ``label_<value>`` ∈ {−1, 0, +1}
        for each value in :data:`VALUES`. Dilemmas where no value separates the actions are dropped.

    Raises:
        EvalDataError: a source line misses a field or repeats an id.
    """
    rows, seen = [], set()
    with open(source, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for line_no, record in enumerate(records, 1):
        missing = [f for f in REQUIRED_SOURCE_FIELDS if f not in record]
        if missing:
            raise EvalDataError(f"{source} line {line_no}: missing fields {missing}")
        if record["id"] in seen:
            raise EvalDataError(f"{source} line {line_no}: duplicate dilemma id {record['id']}")
        seen.add(record["id"])
    for record in sorted(records, key=lambda r: r["id"]):
        labels = {}
        for value in VALUES:
            in_a, in_b = value in record["virtues_a"], value in record["virtues_b"]
            labels[value] = 0 if in_a == in_b else (1 if in_a else -1)
        if not any(labels.values()):
            continue
        for action_type, action, sign in (("to_do", record["action_a"], 1), ("not_to_do", record["action_b"], -1)):
            row = {
                "row_id": f"{record['id']}:{action_type}",
                "dilemma_id": record["id"],
                "action_type": action_type,
                "situation": record["situation"],
                "action": action,
            }
            row.update({f"label_{v}": sign * labels[v] for v in VALUES})
            rows.append(row)
    return rows


def load_dilemma_rows(path: str | Path | None = None) -> list[dict]:
    """Load the shipped DailyDilemmas value rows (or a file in the same schema).

    Raises:
        EvalDataError: a row misses a field, has a label outside {−1, 0, 1}, or repeats a row id.
    """
    if path is None:
        text = (resources.files("weight_steering") / "resources" / DILEMMA_FILE).read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    fields = ("row_id", "dilemma_id", "situation", "action", *(f"label_{v}" for v in VALUES))
    seen = set()
    for i, row in enumerate(rows):
        missing = [f for f in fields if f not in row]
        if missing:
            raise EvalDataError(f"dilemma row {i}: missing fields {missing}")
        if any(row[f"label_{v}"] not in (-1, 0, 1) for v in VALUES):
            raise EvalDataError(f"dilemma row {row['row_id']}: labels must be -1, 0 or 1")
        if row["row_id"] in seen:
            raise EvalDataError(f"dilemma row {i}: duplicate row_id {row['row_id']}")
        seen.add(row["row_id"])
    return rows


# ---------------------------------------------------------------------------------------------
# Moral-foundation vignettes (tinymfv "airisk", MIT; texts build on Clifford et al. 2015)

FOUNDATIONS = ("Care", "Fairness", "Loyalty", "Authority", "Sanctity", "Liberty", "Social Norms")
CONDITIONS = ("other_violate", "self_violate")
VIGNETTE_FILE = "tinymfv/vignettes_airisk.jsonl"
VIGNETTE_FIELDS = ("id", "foundation", "foundation_coarse", "text")
# The one id the upstream file repeats (as "Care (e)", then "Liberty"); upstream loaders keep the
# last row, and so do we. Any other repeated id is an error.
DOCUMENTED_DUPLICATE_ID = "46c0e2c74dac6031"


def build_vignettes(source_dir: str | Path) -> list[dict]:
    """Build the shipped vignette rows from tinymfv's two airisk files (commit 8f39fb1).

    Keeps ``id, foundation, foundation_coarse, wrong`` and the condition's ``text`` plus the
    ``calibrated_<foundation>`` loadings; drops the judge-LLM ``llm_*`` columns. The documented
    duplicate id keeps its last row.

    Returns:
        One row per (vignette, condition), sorted by (id, condition): ``row_id, vignette_id, condition, ...``.

    Raises:
        EvalDataError: a missing field (file, line and field named), an unknown foundation, a repeated
            id other than the documented one, or conditions that do not cover the same ids.
    """
    rows, ids = [], {}
    for condition in CONDITIONS:
        path = Path(source_dir) / f"vignettes_airisk_{condition}.jsonl"
        by_id: dict[str, dict] = {}
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                missing = [f for f in VIGNETTE_FIELDS if not str(record.get(f, "")).strip()]
                if missing:
                    raise EvalDataError(f"{path.name} line {line_no}: missing field(s) {missing}")
                if record["foundation_coarse"] not in FOUNDATIONS:
                    raise EvalDataError(f"{path.name} line {line_no}: unknown foundation {record['foundation_coarse']!r}; "
                                        f"expected one of {FOUNDATIONS}")
                if record["id"] in by_id and record["id"] != DOCUMENTED_DUPLICATE_ID:
                    raise EvalDataError(f"{path.name} line {line_no}: duplicate vignette id {record['id']}")
                by_id[record["id"]] = record
        ids[condition] = set(by_id)
        for vid, record in by_id.items():
            rows.append({
                "row_id": f"{vid}-{condition}", "vignette_id": vid, "condition": condition,
                "foundation": record["foundation"], "foundation_coarse": record["foundation_coarse"],
                "wrong": float(record["wrong"]) if record.get("wrong") not in (None, "") else None, "text": record["text"],
                **{f"loading_{f}": record.get(f"calibrated_{f.replace(' ', '')}") for f in FOUNDATIONS},
            })
    if ids[CONDITIONS[0]] != ids[CONDITIONS[1]]:
        raise EvalDataError(f"the conditions cover different vignette ids: {sorted(ids[CONDITIONS[0]] ^ ids[CONDITIONS[1]])[:5]}")
    return sorted(rows, key=lambda r: (r["vignette_id"], r["condition"]))


def load_vignettes() -> list[dict]:
    """The shipped vignette rows (131 vignettes × 2 conditions), see :func:`build_vignettes`.

    Raises:
        EvalDataError: a row misses a field.
    """
    text = (resources.files("weight_steering") / "resources" / VIGNETTE_FILE).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    for row in rows:
        missing = [f for f in ("row_id", "vignette_id", "condition", "foundation_coarse", "text") if not row.get(f)]
        if missing:
            raise EvalDataError(f"vignette row {row.get('row_id', '?')}: missing field(s) {missing}")
    return rows


# ---------------------------------------------------------------------------------------------
# Neutral instruction/answer pairs (degradation NLL, KL-from-base prompts)

NEUTRAL_FILE = "neutral/instructions.jsonl"


def load_neutral() -> list[dict]:
    """The 100 shipped neutral pairs: ``category, instruction, answer`` (10 categories × 10).

    Raises:
        EvalDataError: a row misses a field (row number and field named).
    """
    text = (resources.files("weight_steering") / "resources" / NEUTRAL_FILE).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    for i, row in enumerate(rows, 1):
        missing = [f for f in ("category", "instruction", "answer") if not str(row.get(f, "")).strip()]
        if missing:
            raise EvalDataError(f"{NEUTRAL_FILE} line {i}: missing field(s) {missing}")
    return rows


def neutral_split(rows: list[dict], audit_fraction: float = 0.3) -> tuple[list[dict], list[dict]]:
    """Deterministic (calibration, audit) split: a row goes to audit when the first 8 hex digits of
    SHA-256(instruction) / 16⁸ fall below ``audit_fraction``. Stable across row order and additions."""
    import hashlib

    def is_audit(row):
        return int(hashlib.sha256(row["instruction"].encode()).hexdigest()[:8], 16) / 16**8 < audit_fraction

    return [r for r in rows if not is_audit(r)], [r for r in rows if is_audit(r)]


def shipped_prompt_sets() -> dict[str, list[str]]:
    """The user-facing texts of every shipped evaluation set, by set: the neutral calibration and audit prompts
    (:func:`neutral_split`), the DailyDilemmas situations (their actions are phrases of a few words, such as "Do"),
    the vignettes."""
    calibration, audit = neutral_split(load_neutral())
    return {"neutral calibration prompts": [r["instruction"] for r in calibration], "neutral audit prompts": [r["instruction"] for r in audit],
            "DailyDilemmas situations": sorted({r["situation"] for r in load_dilemma_rows()}),
            "vignettes": [r["text"] for r in load_vignettes()]}


def overlapping_texts(prompts: list[str], others: dict[str, list[str]]) -> list[tuple[str, str]]:
    """``(prompt, where)`` for every prompt that overlaps a text of ``others`` (``{set name: texts}``): one contains
    the other after lowercasing and collapsing whitespace."""
    def norm(text: str) -> str:
        return " ".join(text.lower().split())

    normalised = {source: [norm(t) for t in texts if t.strip()] for source, texts in others.items()}
    found = []
    for prompt in prompts:
        p = norm(prompt)
        found += [(prompt, source) for source, texts in normalised.items() if any(p in t or t in p for t in texts)]
    return found


def check_disjoint(prompts: list[str], others: dict[str, list[str]]) -> None:
    """Refuse prompts that overlap other texts (training prompts, eval rows), naming them.

    Two texts overlap when one contains the other after lowercasing and collapsing whitespace.

    Raises:
        EvalDataError: lists up to five overlapping prompts and where they occur.
    """
    overlaps = [f"{prompt!r} (in {source})" for prompt, source in overlapping_texts(prompts, others)]
    if overlaps:
        raise EvalDataError(f"{len(overlaps)} prompt(s) overlap training or evaluation text: {overlaps[:5]}; remove them from the prompt set")
