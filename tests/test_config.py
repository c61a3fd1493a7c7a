"""config.json read back: every field present and of its type, or a one-paragraph refusal naming
the field; never a default filled in for a field that went missing."""

from __future__ import annotations

import dataclasses

import pytest

from mnv3spec.errors import UserError
from mnv3spec.train.config import TrainConfig, config_from_json

SAVED = dataclasses.asdict(
    TrainConfig("/specs/small.yaml", {"width": 0.25}, batch=128, seed=3, lr=1)
)


def test_a_saved_config_reads_back_equal():
    assert config_from_json(dict(SAVED), "config.json") == TrainConfig(**SAVED)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": None}, "the field 'epochs' is None, expected a whole number of at least 1"),
        ({"epochs": 0}, "the field 'epochs' is 0, expected a whole number of at least 1"),
        ({"epochs": 2.5}, "the field 'epochs' is 2.5"),
        ({"batch": None}, "the field 'batch' is None, expected a whole number of at least 1"),
        ({"batch": 0}, "the field 'batch' is 0, expected a whole number of at least 1"),
        ({"seed": True}, "the field 'seed' is True, expected a whole number"),
        ({"lr": "0.1"}, "the field 'lr' is '0.1', expected a number"),
        ({"overrides": []}, "the field 'overrides' is []"),
        ({"compile": 1}, "the field 'compile' is 1"),
        ({"spec": None}, "the field 'spec' is None, expected text"),
        ({"speed": 3}, "unknown field 'speed'"),
        ({"holdout": 0}, "the field 'holdout' is 0, expected a whole number of at least 1"),
        ({"steps_per_epoch": -1}, "the field 'steps_per_epoch' is -1, expected a whole number"),
        ({"holdout": 2.0}, "the field 'holdout' is 2.0"),
    ],
)
def test_a_damaged_config_names_the_field(change, message):
    with pytest.raises(UserError, match="restore the file, or start a new run") as e:
        config_from_json({**SAVED, **change}, "runs/r/config.json")
    assert str(e.value).startswith("runs/r/config.json: ") and message in str(e.value)


def test_a_missing_field_is_never_defaulted():
    values = {k: v for k, v in SAVED.items() if k != "epochs"}
    with pytest.raises(UserError, match="the field 'epochs' is missing"):
        config_from_json(values, "config.json")


def test_a_run_saved_before_the_graph_setting_existed_resumes_with_its_default():
    """``graph`` came after the first release: older config.json files lack it."""
    older = {k: v for k, v in SAVED.items() if k != "graph"}
    assert config_from_json(older, "config.json").graph is True
    with pytest.raises(UserError, match="the field 'graph' is 'no'"):
        config_from_json({**SAVED, "graph": "no"}, "config.json")


def test_recipe_errors_name_the_parameter():
    with pytest.raises(UserError) as e:
        TrainConfig("x", momentum=0.0, nesterov=True).resolved_recipe()
    assert e.value.field == "nesterov"
    with pytest.raises(UserError) as e:
        TrainConfig("x", label_smoothing=1.0).resolved_recipe()
    assert e.value.field == "label_smoothing" and "[0, 1)" in e.value.message
