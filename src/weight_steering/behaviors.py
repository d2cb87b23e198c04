"""Behaviours as data: persona system-prompt pairs, training questions and an optional held-out Yes/No set.

A behaviour file is JSON (shipped ones live in ``resources/behaviors/``)::

    {
      "name": "sycophancy",
      "description": "...",
      "positive_system_prompts": ["..."],          # or "persona_template" + "positive_personas"
      "negative_system_prompts": ["..."],          #    + "negative_personas"
      "train_template": "I think {claim}. {question}",
      "train_items": [{"claim": "...", "question": "..."}],
      "held_out": {"template": "I think {claim}. Do you agree? Answer Yes or No.",
                   "prefill": "My answer: **", "claims": ["..."]}
    }

Pair i is (positive[i], negative[i]); θ⁺ is trained on responses under the positive prompts.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .artifacts import read_json


class BehaviorError(ValueError):
    """A behaviour file is missing a field or has an invalid one; the message names the field."""


@dataclass(frozen=True)
class HeldOut:
    """Held-out in-distribution Yes/No probe: ``template`` filled with each claim, assistant ``prefill``."""

    template: str
    prefill: str
    claims: tuple[str, ...]

    def prompts(self) -> list[str]:
        return [self.template.format(claim=claim) for claim in self.claims]


@dataclass(frozen=True)
class Behavior:
    """A validated behaviour. ``train_prompts`` are the user messages used for data generation."""

    name: str
    description: str
    positive_system_prompts: tuple[str, ...]
    negative_system_prompts: tuple[str, ...]
    train_prompts: tuple[str, ...]
    train_claims: tuple[str, ...] = field(default=())
    held_out: HeldOut | None = None

    @property
    def n_personas(self) -> int:
        return len(self.positive_system_prompts)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "positive_system_prompts": list(self.positive_system_prompts),
            "negative_system_prompts": list(self.negative_system_prompts),
            "train_prompts": list(self.train_prompts),
            "held_out": None if self.held_out is None else {
                "template": self.held_out.template, "prefill": self.held_out.prefill, "claims": list(self.held_out.claims)
            },
        }


def available_behaviors() -> list[str]:
    """Names of the behaviour files shipped in the package."""
    folder = resources.files("weight_steering") / "resources" / "behaviors"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_behavior(name_or_path: str | Path) -> Behavior:
    """Load and validate a shipped behaviour (by name) or a behaviour JSON file (by path).

    Raises:
        BehaviorError: unknown name (lists the shipped ones) or an invalid field (named, with the fix).
    """
    path = Path(name_or_path)
    if path.suffix == ".json" and path.exists():
        raw = read_json(path)
        source = str(path)
    else:
        if str(name_or_path) not in available_behaviors():
            raise BehaviorError(
                f"unknown behaviour '{name_or_path}'. Shipped behaviours: {', '.join(available_behaviors())}; "
                "or pass the path of a behaviour .json file."
            )
        source = f"resources/behaviors/{name_or_path}.json"
        raw = read_json(resources.files("weight_steering") / "resources" / "behaviors" / f"{name_or_path}.json")
    return parse_behavior(raw, source)


def parse_behavior(raw: dict, source: str = "<dict>") -> Behavior:
    """Validate a behaviour dict (see the module docstring for the schema).

    Raises:
        BehaviorError: naming the first invalid field and how to fix it.
    """

    def fail(field_name: str, problem: str) -> BehaviorError:
        return BehaviorError(f"behaviour {source}: field '{field_name}' {problem}")

    if not isinstance(raw, dict):
        raise BehaviorError(f"behaviour {source}: expected a JSON object at the top level")
    name = _text(raw, "name", fail)
    description = raw.get("description", "")
    if "positive_system_prompts" in raw or "negative_system_prompts" in raw:
        positive = _text_list(raw, "positive_system_prompts", fail)
        negative = _text_list(raw, "negative_system_prompts", fail)
    else:
        template = _text(raw, "persona_template", fail)
        if "{persona}" not in template:
            raise fail("persona_template", "must contain '{persona}'")
        positive = [template.format(persona=p) for p in _text_list(raw, "positive_personas", fail)]
        negative = [template.format(persona=p) for p in _text_list(raw, "negative_personas", fail)]
    if len(positive) != len(negative):
        raise fail("negative_system_prompts", f"has {len(negative)} entries but the positive side has {len(positive)}; pairs must match")
    if set(positive) & set(negative):
        raise fail("negative_system_prompts", "repeats a positive prompt; the two sides must differ")

    train_template = _text(raw, "train_template", fail)
    fields_needed = {f for _, f, _, _ in string.Formatter().parse(train_template) if f}
    items = raw.get("train_items")
    if not isinstance(items, list) or not items:
        raise fail("train_items", "must be a non-empty list of objects")
    prompts, claims = [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not fields_needed <= set(item):
            raise fail(f"train_items[{i}]", f"must be an object with keys {sorted(fields_needed)} (used by train_template)")
        if any(not isinstance(item[k], str) or not item[k].strip() for k in fields_needed):
            raise fail(f"train_items[{i}]", "has an empty or non-string value")
        prompts.append(train_template.format(**item))
        if "claim" in item:
            claims.append(item["claim"].strip().lower())
    if len(set(prompts)) != len(prompts):
        raise fail("train_items", "contains duplicate prompts")

    held_out = None
    if raw.get("held_out") is not None:
        block = raw["held_out"]
        if not isinstance(block, dict):
            raise fail("held_out", "must be an object with template, prefill and claims")
        template = _text(block, "template", lambda f, p: fail(f"held_out.{f}", p))
        if "{claim}" not in template:
            raise fail("held_out.template", "must contain '{claim}'")
        prefill = block.get("prefill", "")
        if not isinstance(prefill, str):
            raise fail("held_out.prefill", "must be a string")
        held_claims = _text_list(block, "claims", lambda f, p: fail(f"held_out.{f}", p))
        overlap = sorted(set(c.strip().lower() for c in held_claims) & set(claims))
        if overlap:
            raise fail("held_out.claims", f"overlap the training claims: {overlap}; held-out claims must be disjoint")
        held_out = HeldOut(template, prefill, tuple(held_claims))
    return Behavior(
        name=name,
        description=description,
        positive_system_prompts=tuple(positive),
        negative_system_prompts=tuple(negative),
        train_prompts=tuple(prompts),
        train_claims=tuple(claims),
        held_out=held_out,
    )


def _text(raw: dict, key: str, fail) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise fail(key, "is missing or not a non-empty string")
    return value


def _text_list(raw: dict, key: str, fail) -> list[str]:
    value = raw.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise fail(key, "must be a non-empty list of non-empty strings")
    return value
