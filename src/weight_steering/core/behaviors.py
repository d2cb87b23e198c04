"""Behaviours as data: persona system-prompt pairs, training prompts, a held-out probe, OOD targets and a judge.

A behaviour file is JSON (shipped ones live in ``resources/behaviors/``)::

    {
      "name": "sycophancy",
      "display_name": "sycophancy (siding with the user's stated view)",   # optional; used in every table
      "description": "...",
      "positive_system_prompts": ["..."],          # or "persona_template" + "positive_personas"
      "negative_system_prompts": ["..."],          #    + "negative_personas"
      "train_template": "I think {claim}. {question}",        # or {"assert": "...", "deny": "..."}:
      "train_items": [{"claim": "...", "question": "...",     #    each item then names its "template"
                       "template": "assert", "behavior_answer": "yes"}],
      "held_out": {"template": "I think {claim}. Do you agree? Answer Yes or No.",
                   "control_template": "Is it true that {claim}? Answer Yes or No.",   # optional
                   "prefill": "My answer: **", "claims": ["..."]},
      "ood_targets": [{"eval": "dilemmas", "value": "honesty", "sign": -1}],          # optional
      "ood_sets": [{"name": "written_tasks", "description": "...",                    # optional
                    "items": [{"prompt": "...", "positive": "...", "negative": "..."}]}],
      "generation_metric": "register",                                                 # optional
      "judge": {"template": "... {prompt} ... {response} ... Answer Yes or No.",       # optional
                "prefill": "My answer: **"}
    }

Pair i is (positive[i], negative[i]); θ⁺ is trained on responses under the positive prompts.

* ``held_out`` with a ``control_template`` scores every claim twice on identical rows at every α:
  in the user-opinion framing (``template``) and in a neutral framing with no user opinion
  (``control_template``). The framing-controlled in-distribution score is Δ(opinion) − Δ(neutral),
  which cancels a general shift toward the answer word (Sharma et al. 2023, "Towards Understanding
  Sycophancy in Language Models", arXiv 2310.13548).
* ``held_out`` of ``"kind": "completion_pair"`` holds ``items`` of ``{"prompt", "positive",
  "negative"}``: two replies with the same content, one showing the behaviour. The score is
  log P(positive reply) − log P(negative reply) under teacher forcing (nats), which a shift toward
  an answer word cannot move.
* ``ood_targets`` name the out-of-distribution value(s) the behaviour should move and the intended
  sign of the move at α > 0: ``eval`` is ``dilemmas`` (a DailyDilemmas value) or ``vignettes`` (a
  moral foundation). SI's intent and every OOD table use them.
* ``ood_sets`` are out-of-distribution prompt distributions far from the training prompts (written tasks,
  explanations, instructions …), each a named list of paired completions scored like the completion-pair
  probe. Tables report each set separately, summed over the reply and per reply token.
* ``generation_metric`` names the judge-free score of generated text
  (:data:`weight_steering.evaluation.generations.GENERATION_METRICS`: ``register`` for a casual register, ``valence`` for an
  upbeat outlook).
* ``judge`` is the question a judge model answers Yes (behaviour shown) or No about each generated
  response (``{prompt}``: the user message, ``{response}``: the reply); see :mod:`weight_steering.evaluation.judge`.
* ``train_items[*].behavior_answer`` ("yes"/"no", optional) records which answer word the
  behaviour-carrying reply opens with, so the balance of a training set is checked and reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OOD_EVALS = ("dilemmas", "vignettes")
HELD_OUT_KINDS = ("yes_no", "completion_pair")
GENERATION_METRICS = ("register", "valence")  # implemented in weight_steering.evaluation.generations
SET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class BehaviorError(ValueError):
    """A behaviour file is missing a field or has an invalid one; the message names the field."""


@dataclass(frozen=True)
class HeldOut:
    """Held-out in-distribution probe.

    ``kind == "yes_no"``: ``template`` (and ``control_template``, the neutral framing, when given)
    filled with each claim, assistant ``prefill``. ``kind == "completion_pair"``: ``items`` of
    ``{"prompt", "positive", "negative"}`` scored by teacher-forced log-likelihood.
    """

    template: str
    prefill: str
    claims: tuple[str, ...]
    control_template: str | None = None
    kind: str = "yes_no"
    items: tuple[dict, ...] = ()

    def prompts(self) -> list[str]:
        if self.kind == "completion_pair":
            return [item["prompt"] for item in self.items]
        return [self.template.format(claim=claim) for claim in self.claims]

    def control_prompts(self) -> list[str]:
        return [] if self.control_template is None else [self.control_template.format(claim=c) for c in self.claims]


@dataclass(frozen=True)
class OODTarget:
    """An out-of-distribution target: ``value`` of ``eval`` should move with ``sign`` (+1 / −1) at α > 0."""

    eval: str
    value: str
    sign: int

    @property
    def label(self) -> str:
        return f"{self.eval} {self.value} (intended {'+' if self.sign > 0 else '−'})"


@dataclass(frozen=True)
class OODSet:
    """An out-of-distribution set of paired completions: ``items`` of ``{"prompt", "positive", "negative"}``."""

    name: str
    description: str
    items: tuple[dict, ...]

    def prompts(self) -> list[str]:
        return [item["prompt"] for item in self.items]


@dataclass(frozen=True)
class Judge:
    """A Yes/No judge question about one generated response (Yes = the behaviour is shown)."""

    template: str
    prefill: str = "My answer: **"
    labels: str | None = None  # name of the shipped hand-label set (resources/judge_labels/<labels>.jsonl)

    def question(self, prompt: str, response: str) -> str:
        return self.template.format(prompt=prompt, response=response)


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
    display_name: str = ""
    ood_targets: tuple[OODTarget, ...] = ()
    judge: Judge | None = None
    behavior_answers: tuple[str | None, ...] = ()
    ood_sets: tuple[OODSet, ...] = ()
    generation_metric: str | None = None

    @property
    def n_personas(self) -> int:
        return len(self.positive_system_prompts)

    @property
    def label(self) -> str:
        """The name every table uses (``display_name``, else ``name``)."""
        return self.display_name or self.name

    def prompt_indices(self, n: int | None = None) -> list[int]:
        """Indices of the training prompts to use: all of them in file order, or, for a subset of ``n``,
        round-robin over the answer words the items record (``behavior_answer``: yes, no, none), so a
        small run of a balanced set stays balanced."""
        if n is None or n >= len(self.train_prompts):
            return list(range(len(self.train_prompts)))
        groups: dict = {}
        for i, answer in enumerate(self.behavior_answers or [None] * len(self.train_prompts)):
            groups.setdefault(answer, []).append(i)
        order = [i for column in range(len(self.train_prompts)) for group in groups.values() if column < len(group) for i in [group[column]]]
        return sorted(order[:n])

    def held_out_prompts(self) -> list[str]:
        """Every user message of the held-out probe (both framings of a Yes/No probe)."""
        return [] if self.held_out is None else self.held_out.prompts() + self.held_out.control_prompts()

    def ood_prompts(self) -> list[str]:
        """Every user message of the OOD sets, in set order."""
        return [p for ood_set in self.ood_sets for p in ood_set.prompts()]

    def ood_target(self, eval_name: str) -> OODTarget | None:
        """The first OOD target on ``eval_name`` (``dilemmas`` or ``vignettes``), or None."""
        return next((t for t in self.ood_targets if t.eval == eval_name), None)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "positive_system_prompts": list(self.positive_system_prompts),
            "negative_system_prompts": list(self.negative_system_prompts),
            "train_prompts": list(self.train_prompts),
            "held_out": None if self.held_out is None else {
                "template": self.held_out.template, "prefill": self.held_out.prefill, "claims": list(self.held_out.claims),
                **({"control_template": self.held_out.control_template} if self.held_out.control_template else {}),
                **({"kind": self.held_out.kind, "items": list(self.held_out.items)} if self.held_out.kind != "yes_no" else {}),
            },
        }


