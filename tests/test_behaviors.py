import copy
import json
import re
from importlib import resources

import pytest

from weight_steering.core.behavior_files import available_behaviors, load_behavior, parse_behavior
from weight_steering.core.behaviors import BehaviorError


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


def test_followable_behaviours_have_three_ood_sets_of_24_disjoint_pairs():
    """tone and upbeat: ≥ 3 OOD sets of ≥ 24 paired completions, a judge-free generation metric, hand labels."""
    from weight_steering.evaluation.judge import load_hand_labels

    for name in ("tone", "upbeat"):
        behavior = load_behavior(name)
        assert len(behavior.ood_sets) >= 3 and all(len(s.items) >= 24 for s in behavior.ood_sets), name
        assert behavior.held_out.kind == "completion_pair" and behavior.generation_metric in ("register", "valence")
        assert len(load_hand_labels(behavior)) >= 48
        prompts = [*behavior.train_prompts, *behavior.held_out_prompts(), *behavior.ood_prompts()]
        assert len(set(prompts)) == len(prompts), name


def test_shipped_behaviours_do_not_share_prompts():
    """No prompt of one shipped behaviour (training, held-out, OOD) is a prompt of another."""
    seen = {}
    for name in available_behaviors():
        b = load_behavior(name)
        for prompt in {*b.train_prompts, *b.held_out_prompts(), *b.ood_prompts()}:
            assert prompt not in seen or seen[prompt] in (name, "sycophancy", "sycophancy_unbalanced"), (prompt, name, seen.get(prompt))
            seen.setdefault(prompt, name)


def test_generation_metrics_named_by_behaviours_are_implemented():
    from weight_steering.core.behaviors import GENERATION_METRICS as NAMED
    from weight_steering.evaluation.generations import GENERATION_METRICS

    assert set(NAMED) == set(GENERATION_METRICS)


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["ood_sets"][0].update(name="Written Tasks"), "'ood_sets[0].name'"),
    (lambda r: r["ood_sets"][1].update(name="sets"), "'ood_sets[1].name'"),
    (lambda r: r["ood_sets"][1].update(name=r["ood_sets"][0]["name"]), "'ood_sets[1].name'"),
    (lambda r: r["ood_sets"][2]["items"].append(dict(r["ood_sets"][0]["items"][0])), "'ood_sets[2].items'"),
    (lambda r: r["ood_sets"][0]["items"].append({"prompt": r["train_items"][0]["question"], "positive": "a", "negative": "b"}),
     "'ood_sets[0].items'"),
    (lambda r: r["ood_sets"][0]["items"].append({"prompt": r["held_out"]["items"][0]["prompt"], "positive": "a", "negative": "b"}),
     "'ood_sets[0].items'"),
    (lambda r: r["ood_sets"][0]["items"][3].update(negative=r["ood_sets"][0]["items"][3]["positive"]), "'ood_sets[0].items[3]'"),
    (lambda r: r.update(generation_metric="sarcasm"), "'generation_metric'"),
])
def test_invalid_ood_sets_name_the_field(mutate, field):
    raw = copy.deepcopy(_raw("tone"))
    mutate(raw)
    with pytest.raises(BehaviorError, match=re.escape(field)):
        parse_behavior(raw, "test.json")


def _shipped_text(kind):
    from weight_steering.evaluation.datasets import load_dilemma_rows, load_neutral, load_vignettes, neutral_split

    calibration, audit = neutral_split(load_neutral())
    return {"calibration": calibration[0]["instruction"], "audit": audit[0]["instruction"],
            "dilemma": load_dilemma_rows()[0]["situation"], "vignette": load_vignettes()[0]["text"]}[kind]


def _put(raw, where, text):
    if where == "training":
        raw["train_items"][0]["question"] = text
    elif where == "held-out":
        raw["held_out"]["items"][0]["prompt"] = text
    else:
        raw["ood_sets"][1]["items"][0]["prompt"] = text


@pytest.mark.parametrize("shipped", ["calibration", "audit", "dilemma", "vignette"])
@pytest.mark.parametrize("where", ["training", "held-out", "OOD set"])
def test_a_behaviour_overlapping_a_shipped_set_is_refused_when_loaded(tmp_path, where, shipped):
    """Each behaviour set against each shipped set: refused by load_behavior, naming the prompt and both sets."""
    raw = copy.deepcopy(_raw("tone"))
    text = _shipped_text(shipped)
    _put(raw, where, text)
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps(raw))
    parse_behavior(raw, "leaky.json")  # valid on its own: only the shipped sets make it leak
    with pytest.raises(BehaviorError) as err:
        load_behavior(path)
    message = str(err.value)
    assert where in message and text[:40] in message and "overlap a shipped evaluation set" in message
    assert {"calibration": "neutral calibration", "audit": "neutral audit", "dilemma": "DailyDilemmas", "vignette": "vignettes"}[shipped] in message


def test_the_earlier_tone_file_is_refused():
    """The tone file before its fix: its held-out prompt 'How often should I water a cactus?' is a neutral prompt."""
    raw = copy.deepcopy(_raw("tone"))
    raw["held_out"]["items"][4]["prompt"] = "How often should I water a cactus?"
    from weight_steering.core.behavior_files import check_disjoint_from_shipped_sets

    with pytest.raises(BehaviorError, match="cactus"):
        check_disjoint_from_shipped_sets(parse_behavior(raw, "tone.json"), "tone.json")
