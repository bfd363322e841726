"""The monitored metric: its syntax, directions, the task's default, and what config.json or a summary names."""

import pytest

from flint.recipes.app.monitor import DIRECTIONS, Monitor


def test_a_name_takes_its_known_direction_and_the_empty_text_the_tasks_default():
    assert Monitor.parse("", "multiclass") == Monitor("accuracy", "max")
    assert Monitor.parse("", "regression") == Monitor("loss", "min")
    assert Monitor.parse("mae", "regression") == Monitor("mae", "min")
    assert Monitor.parse("f1", "multiclass") == Monitor("f1", "max")
    assert Monitor.parse("accuracy:min", "multiclass") == Monitor("accuracy", "min")  # a direction given wins


@pytest.mark.parametrize(
    "text,problem",
    [
        ("loss:up", "must be NAME or NAME:min or NAME:max, e.g. loss:min"),
        (":max", "must be NAME or NAME:min or NAME:max, e.g. loss:min"),
        (3, "must be NAME or NAME:min or NAME:max, e.g. loss:min"),
        ("iou", "the direction of iou is not known: give iou:max or iou:min"),
    ],
)
def test_bad_texts_say_what_is_wrong(text, problem):
    assert Monitor.problem(text) == problem
    with pytest.raises(ValueError, match="monitor"):
        Monitor.parse(text, "multiclass")


def test_a_metric_of_your_own_takes_a_direction_or_a_table_of_them():
    assert Monitor.problem("iou:max") is None
    assert Monitor.parse("iou", "multiclass", {**DIRECTIONS, "iou": "max"}) == Monitor("iou", "max")


def test_better_follows_the_direction_and_nan_never_wins():
    high, low = Monitor("accuracy", "max"), Monitor("loss", "min")
    assert high.better(0.9, 0.8) and not high.better(0.8, 0.8) and high.better(0.1, None)
    assert low.better(0.2, 0.3) and not low.better(0.3, 0.2)
    assert not high.better(float("nan"), None) and not low.better(float("nan"), 1.0)


def test_of_reads_what_a_config_or_summary_holds_and_gives_none_for_the_default_or_garbage():
    assert Monitor.of("loss:min") == Monitor("loss", "min") and Monitor.of("mae") == Monitor("mae", "min")
    assert Monitor.of("") is None and Monitor.of(None) is None and Monitor.of("loss:up") is None and Monitor.of("iou") is None
    assert Monitor("accuracy", "max").text == "accuracy:max"
