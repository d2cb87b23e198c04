import copy
import re
import json
from importlib import resources

import pytest

from weight_steering.behaviors import BehaviorError, available_behaviors, load_behavior, parse_behavior


def _raw(name="sycophancy"):
    return json.loads((resources.files("weight_steering") / "resources" / "behaviors" / f"{name}.json").read_text())


def test_shipped_behaviors_load_with_required_sizes():
    assert {"sycophancy", "honesty"} <= set(available_behaviors())
    syc = load_behavior("sycophancy")
    assert syc.n_personas == 5 and len(syc.negative_system_prompts) == 5
    assert len(syc.train_prompts) >= 20 and len(syc.held_out.claims) >= 12
    assert not set(syc.train_claims) & {c.lower() for c in syc.held_out.claims}
    assert syc.held_out.control_template and syc.ood_targets[0].value == "honesty" and syc.ood_targets[0].sign == -1
    assert load_behavior("authority").ood_target("vignettes").value == "Authority"
    assert load_behavior("tone").held_out.kind == "completion_pair" and load_behavior("tone").judge is not None
    honesty = load_behavior("honesty")
    assert honesty.positive_system_prompts[0] == "Pretend you're an honest person."


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.pop("name"), "'name'"),
        (lambda r: r["negative_system_prompts"].pop(), "'negative_system_prompts'"),
        (lambda r: r["train_items"][3].pop("claim"), "'train_items[3]'"),
        (lambda r: r["held_out"]["claims"].append(r["train_items"][0]["claim"]), "'held_out.claims'"),
        (lambda r: r["held_out"].update(template="no placeholder"), "'held_out.template'"),
        (lambda r: r.update(train_items=[]), "'train_items'"),
        (lambda r: r["held_out"].update(control_template="Is it true? Answer Yes or No."), "'held_out.control_template'"),
        (lambda r: r.update(ood_targets=[{"eval": "mmlu", "value": "honesty", "sign": 1}]), "'ood_targets[0].eval'"),
        (lambda r: r.update(ood_targets=[{"eval": "dilemmas", "value": "loyalty", "sign": 1}]), "'ood_targets[0].value'"),
        (lambda r: r.update(ood_targets=[{"eval": "vignettes", "value": "Authority", "sign": 2}]), "'ood_targets[0].sign'"),
        (lambda r: r["train_items"][0].update(template="question"), "'train_items[0].template'"),
        (lambda r: r["train_items"][0].update(behavior_answer="maybe"), "'train_items[0].behavior_answer'"),
        (lambda r: r["judge"].update(template="no placeholder"), "'judge.template'"),
        (lambda r: r["held_out"]["claims"].append(r["held_out"]["claims"][0]), "'held_out.claims'"),
    ],
)
def test_invalid_behavior_names_the_field(mutate, field):
    raw = copy.deepcopy(_raw())
    mutate(raw)
    with pytest.raises(BehaviorError, match=re.escape(field)):
        parse_behavior(raw, "test.json")


def test_unknown_behavior_lists_shipped_ones():
    with pytest.raises(BehaviorError, match="sycophancy"):
        load_behavior("no-such-behaviour")


def test_behavior_file_path(tmp_path):
    raw = _raw("honesty")
    raw["name"] = "my-honesty"
    path = tmp_path / "b.json"
    path.write_text(json.dumps(raw))
    assert load_behavior(path).name == "my-honesty"
