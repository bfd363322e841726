import logging
import math

import pytest
import torch
from ignite.engine import Engine, Events

from flint.engine import create_trainer
from flint.handlers import Checkpointing, MetricGuard, NonFiniteLoss, Validation
from flint.handlers.metric_guard import non_finite

NAN, INF = float("nan"), float("inf")


def validated(scores: list[dict]) -> tuple[Engine, Engine]:
    """A trainer whose epoch ``i`` validation gives ``scores[i - 1]`` as the evaluator's metrics."""
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(scores[trainer.state.epoch - 1]))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    return trainer, evaluator


def test_non_finite_names_nan_and_inf_values_of_numbers_and_tensors():
    metrics = {
        "loss": NAN, "accuracy": 0.5, "mae": -INF, "count": 3, "name": "text",
        "per_class": torch.tensor([0.5, INF]), "fine": torch.tensor([0.5, 1.0]), "zero_d": torch.tensor(NAN), "ints": torch.tensor([1, 2]),
    }  # fmt: skip
    found = non_finite(metrics)
    assert list(found) == ["loss", "mae", "per_class", "zero_d"]
    assert math.isnan(found["loss"]) and found["mae"] == -INF


def test_a_non_finite_metric_not_monitored_warns_once_per_run_naming_epoch_and_metric(caplog):
    scores = [{"loss": 0.5, "accuracy": 0.5}, {"loss": NAN, "accuracy": 0.5}, {"loss": INF, "accuracy": 0.6}]
    trainer, evaluator = validated(scores)
    MetricGuard("accuracy").attach(trainer, evaluator)
    with caplog.at_level(logging.WARNING, logger="flint.handlers.metric_guard"):
        assert trainer.run([0], max_epochs=3).epoch == 3  # the monitored metric is finite: the run goes on
    assert [r.getMessage() for r in caplog.records] == ["Validation at epoch 2: loss nan (not warned again in this run)"]


def test_a_non_finite_monitored_metric_raises_naming_metric_and_epoch():
    trainer, evaluator = validated([{"loss": 0.5}, {"loss": 0.4}, {"loss": NAN}, {"loss": 0.3}])
    MetricGuard("loss").attach(trainer, evaluator)
    with pytest.raises(NonFiniteLoss, match=r"^the validation loss became nan at epoch 3$"):
        trainer.run([0], max_epochs=4)
    assert trainer.state.epoch == 3


def test_without_a_monitor_it_only_warns(caplog):
    trainer, evaluator = validated([{"loss": INF}, {"loss": NAN}])
    MetricGuard().attach(trainer, evaluator)
    with caplog.at_level(logging.WARNING, logger="flint.handlers.metric_guard"):
        assert trainer.run([0], max_epochs=2).epoch == 2
    assert [r.getMessage() for r in caplog.records] == ["Validation at epoch 1: loss inf (not warned again in this run)"]


@pytest.mark.parametrize("guard_first", [True, False])
def test_a_stop_on_the_monitored_metric_saves_nothing_more(tmp_path, model, batches, guard_first):
    # A Flint trainer: validation, then the epoch's checkpoints; the stop comes between them, whatever the attach order.
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    losses = iter([0.5, 0.4, NAN])
    evaluator = Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(loss=next(losses)))
    guard = MetricGuard("loss")
    if guard_first:
        guard.attach(trainer, evaluator)
    checkpoints = Checkpointing(tmp_path, {"model": model, "trainer": trainer}, n_latest=5, metric="loss", mode="min")
    checkpoints.attach(trainer, evaluator)
    Validation(evaluator, [0]).attach(trainer)
    if not guard_first:
        guard.attach(trainer, evaluator)
    with pytest.raises(NonFiniteLoss, match="the validation loss became nan at epoch 3"):
        trainer.run(batches, max_epochs=4)
    checkpoints.wait()  # as the job does: the epoch 2 save may still be finishing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_checkpoint_2_loss=0.4000.pt", "checkpoint_14.pt", "checkpoint_7.pt"]


def test_refuses_a_bad_monitor():
    for bad in ("", 3):
        with pytest.raises(ValueError, match=f"Argument monitor should be a metric name or None, got {bad!r}"):
            MetricGuard(bad)  # type: ignore[arg-type]
