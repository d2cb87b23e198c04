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
