"""Finding, reading and checking behaviour files (shipped or a path): every field checked, with an error that names the field and the fix (:class:`~weight_steering.core.behaviors.BehaviorError`), and every prompt checked to be disjoint from the shipped evaluation sets."""

from __future__ import annotations

import string
from importlib import resources
from pathlib import Path

from ..artifacts import ArtifactError, read_json
from ..evaluation.datasets import FOUNDATIONS, VALUES, overlapping_texts, shipped_prompt_sets
from .behaviors import GENERATION_METRICS, HELD_OUT_KINDS, OOD_EVALS, SET_NAME, Behavior, BehaviorError, HeldOut, Judge, OODSet, OODTarget


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
        try:
            raw = read_json(path)
        except ArtifactError as err:
            raise BehaviorError(f"behaviour file {err}") from err
        source = str(path)
    else:
        if str(name_or_path) not in available_behaviors():
            raise BehaviorError(
                f"unknown behaviour '{name_or_path}'. Shipped behaviours: {', '.join(available_behaviors())}; "
                "or pass the path of a behaviour .json file."
            )
        source = f"resources/behaviors/{name_or_path}.json"
        raw = read_json(resources.files("weight_steering") / "resources" / "behaviors" / f"{name_or_path}.json")
    behavior = parse_behavior(raw, source)
    check_disjoint_from_shipped_sets(behavior, source)
    return behavior


def check_disjoint_from_shipped_sets(behavior: Behavior, source: str = "<dict>") -> None:
    """Refuse a behaviour whose prompts (training, held-out, OOD) overlap a shipped evaluation set: the neutral
    calibration and audit prompts (KL budget, degradation), the DailyDilemmas rows or the vignettes. Runs when the
    behaviour is loaded, so every command fails before any model work.

    Two texts overlap when one contains the other after lowercasing and collapsing whitespace
    (:func:`weight_steering.evaluation.datasets.overlapping_texts`).

    Raises:
        BehaviorError: naming each overlapping prompt, the behaviour set it is in and the shipped set it meets.
    """

    sets = {"training prompt": list(behavior.train_prompts), "held-out prompt": behavior.held_out_prompts()}
    sets.update({f"OOD set {s.name} prompt": s.prompts() for s in behavior.ood_sets})
    found = [f"{kind} {prompt!r} ({where})" for kind, prompts in sets.items() for prompt, where in overlapping_texts(prompts, shipped_prompt_sets())]
    if found:
        raise BehaviorError(f"behaviour {source}: {len(found)} prompt(s) overlap a shipped evaluation set: {'; '.join(found[:5])}. "
                            "The behaviour's prompts must be disjoint from the neutral calibration and audit prompts, DailyDilemmas "
                            "and the vignettes, or the KL budget and the OOD scores would be measured on training text: change those prompts")


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

    templates = raw.get("train_template")
    if isinstance(templates, str) and templates.strip():
        templates = {None: templates}
    elif not (isinstance(templates, dict) and templates and all(isinstance(t, str) and t.strip() for t in templates.values())):
        raise fail("train_template", "must be a non-empty string, or an object of named non-empty templates")
    items = raw.get("train_items")
    if not isinstance(items, list) or not items:
        raise fail("train_items", "must be a non-empty list of objects")
    prompts, claims, answers = [], [], []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise fail(f"train_items[{i}]", "must be an object")
        template_name = item.get("template") if None not in templates else None
        if template_name not in templates:
            raise fail(f"train_items[{i}].template", f"must name one of the train templates {sorted(templates)}; got {template_name!r}")
        template = templates[template_name]
        fields_needed = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        if not fields_needed <= set(item):
            raise fail(f"train_items[{i}]", f"must be an object with keys {sorted(fields_needed)} (used by train_template)")
        if any(not isinstance(item[k], str) or not item[k].strip() for k in fields_needed):
            raise fail(f"train_items[{i}]", "has an empty or non-string value")
        if item.get("behavior_answer") not in (None, "yes", "no"):
            raise fail(f"train_items[{i}].behavior_answer", "must be \"yes\" or \"no\" (the answer word of the behaviour-carrying reply)")
        prompts.append(template.format(**item))
        answers.append(item.get("behavior_answer"))
        if "claim" in item:
            claims.append(item["claim"].strip().lower())
    if len(set(prompts)) != len(prompts):
        raise fail("train_items", "contains duplicate prompts")

    held_out = None
    if raw.get("held_out") is not None:
        held_out = _parse_held_out(raw["held_out"], claims, prompts, fail)
    display_name = raw.get("display_name", "")
    if not isinstance(display_name, str):
        raise fail("display_name", "must be a string")
    held_prompts = [] if held_out is None else held_out.prompts() + held_out.control_prompts()
    ood_sets = _parse_ood_sets(raw.get("ood_sets", []), prompts, held_prompts, fail)
    metric = raw.get("generation_metric")
    if metric is not None and metric not in GENERATION_METRICS:
        raise fail("generation_metric", f"must be one of {GENERATION_METRICS} (or left out); got {metric!r}")
    return Behavior(
        name=name,
        description=description,
        positive_system_prompts=tuple(positive),
        negative_system_prompts=tuple(negative),
        train_prompts=tuple(prompts),
        train_claims=tuple(claims),
        held_out=held_out,
        display_name=display_name,
        ood_targets=_parse_ood_targets(raw.get("ood_targets", []), fail),
        judge=_parse_judge(raw.get("judge"), fail),
        behavior_answers=tuple(answers),
        ood_sets=ood_sets,
        generation_metric=metric,
    )


def _parse_held_out(block, train_claims: list[str], train_prompts: list[str], fail) -> HeldOut:
    if not isinstance(block, dict):
        raise fail("held_out", "must be an object with template, prefill and claims (or kind \"completion_pair\" and items)")
    kind = block.get("kind", "yes_no")
    if kind not in HELD_OUT_KINDS:
        raise fail("held_out.kind", f"must be one of {HELD_OUT_KINDS}; got {kind!r}")
    if kind == "completion_pair":
        items = _pair_items(block.get("items"), "held_out.items", fail)
        overlap = sorted({item["prompt"] for item in items} & set(train_prompts))
        if overlap:
            raise fail("held_out.items", f"reuse training prompts {overlap[:3]}; held-out prompts must be disjoint")
        return HeldOut("", block.get("prefill", ""), (), None, kind, items)
    template = _text(block, "template", lambda f, p: fail(f"held_out.{f}", p))
    if "{claim}" not in template:
        raise fail("held_out.template", "must contain '{claim}'")
    control = block.get("control_template")
    if control is not None and (not isinstance(control, str) or "{claim}" not in control):
        raise fail("held_out.control_template", "must be a string containing '{claim}' (the neutral framing of each claim)")
    if control is not None and control == template:
        raise fail("held_out.control_template", "equals held_out.template; the control must drop the user's opinion")
    prefill = block.get("prefill", "")
    if not isinstance(prefill, str):
        raise fail("held_out.prefill", "must be a string")
    held_claims = _text_list(block, "claims", lambda f, p: fail(f"held_out.{f}", p))
    overlap = sorted(set(c.strip().lower() for c in held_claims) & set(train_claims))
    if overlap:
        raise fail("held_out.claims", f"overlap the training claims: {overlap}; held-out claims must be disjoint")
    if len({c.strip().lower() for c in held_claims}) != len(held_claims):
        raise fail("held_out.claims", "contains duplicate claims")
    return HeldOut(template, prefill, tuple(held_claims), control)


def _pair_items(items, where: str, fail) -> tuple[dict, ...]:
    """Validated ``{"prompt", "positive", "negative"}`` items: non-empty strings, replies that differ, prompts unique."""
    if not isinstance(items, list) or not items:
        raise fail(where, "must be a non-empty list of {\"prompt\", \"positive\", \"negative\"} objects")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or any(not isinstance(item.get(k), str) or not item[k].strip() for k in ("prompt", "positive", "negative")):
            raise fail(f"{where}[{i}]", "must have non-empty string fields prompt, positive and negative")
        if item["positive"] == item["negative"]:
            raise fail(f"{where}[{i}]", "has identical positive and negative replies; they must differ in the behaviour")
    prompts = [item["prompt"] for item in items]
    if len(set(prompts)) != len(prompts):
        raise fail(where, f"repeats a prompt ({next(p for p in prompts if prompts.count(p) > 1)!r}); each item needs its own prompt")
    return tuple(dict(item) for item in items)


def _parse_ood_sets(value, train_prompts: list[str], held_prompts: list[str], fail) -> tuple[OODSet, ...]:
    """Validated OOD sets: named (lowercase identifiers, unique), paired items, prompts disjoint from each other, from the
    training prompts and from the held-out probe."""
    if not isinstance(value, list):
        raise fail("ood_sets", "must be a list of {\"name\", \"description\", \"items\"} objects")
    sets, seen = [], {}
    for i, block in enumerate(value):
        where = f"ood_sets[{i}]"
        if not isinstance(block, dict) or not isinstance(block.get("name"), str) or not SET_NAME.match(block["name"]):
            raise fail(f"{where}.name", "must be a lowercase identifier such as \"written_tasks\" (it names the set in every table)")
        if block["name"] == "sets" or block["name"].startswith("target"):
            raise fail(f"{where}.name", f"{block['name']!r} is reserved (ood_sets, ood_target name pooled measures); choose another name")
        if block["name"] in {s.name for s in sets}:
            raise fail(f"{where}.name", f"repeats the set name {block['name']!r}; names must be unique")
        items = _pair_items(block.get("items"), f"{where}.items", fail)
        for item in items:
            prompt = item["prompt"]
            clash = ("a training prompt" if prompt in train_prompts else "a held-out prompt" if prompt in held_prompts
                     else f"OOD set {seen[prompt]!r}" if prompt in seen else None)
            if clash:
                raise fail(f"{where}.items", f"prompt {prompt!r} is also {clash}; OOD prompts must be disjoint from every other set")
            seen[prompt] = block["name"]
        sets.append(OODSet(block["name"], str(block.get("description", "")), items))
    return tuple(sets)


def _parse_ood_targets(value, fail) -> tuple[OODTarget, ...]:

    known = {"dilemmas": VALUES, "vignettes": FOUNDATIONS}
    if not isinstance(value, list):
        raise fail("ood_targets", "must be a list of {\"eval\", \"value\", \"sign\"} objects")
    targets = []
    for i, item in enumerate(value):
        where = f"ood_targets[{i}]"
        if not isinstance(item, dict):
            raise fail(where, "must be an object with eval, value and sign")
        if item.get("eval") not in known:
            raise fail(f"{where}.eval", f"must be one of {OOD_EVALS}; got {item.get('eval')!r}")
        if item.get("value") not in known[item["eval"]]:
            raise fail(f"{where}.value", f"must be one of {known[item['eval']]} for eval {item['eval']!r}; got {item.get('value')!r}")
        if item.get("sign") not in (1, -1):
            raise fail(f"{where}.sign", f"must be 1 or -1 (the intended direction at α > 0); got {item.get('sign')!r}")
        targets.append(OODTarget(item["eval"], item["value"], int(item["sign"])))
    return tuple(targets)


def _parse_judge(value, fail) -> Judge | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise fail("judge", "must be an object with a template containing {prompt} and {response}")
    template = _text(value, "template", lambda f, p: fail(f"judge.{f}", p))
    if "{response}" not in template:
        raise fail("judge.template", "must contain '{response}' (and may contain '{prompt}')")
    prefill = value.get("prefill", "My answer: **")
    if not isinstance(prefill, str):
        raise fail("judge.prefill", "must be a string")
    labels = value.get("labels")
    if labels is not None and (not isinstance(labels, str) or not labels.strip()):
        raise fail("judge.labels", "must name a shipped hand-label set, e.g. \"sycophancy\"")
    return Judge(template, prefill, labels)


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
