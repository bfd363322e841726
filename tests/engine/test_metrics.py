import re

import pytest
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Accuracy

from flint.engine import create_trainer
from flint.engine.metrics import TopOneAccuracy


def test_equals_ignites_accuracy_on_a_real_trainer(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    TopOneAccuracy().attach(trainer, "accuracy")
    Accuracy().attach(trainer, "ignite_accuracy")
    metrics = trainer.run(batches, max_epochs=2).metrics  # the second epoch's: both reset at each epoch start
    assert 0.0 < metrics["accuracy"] == metrics["ignite_accuracy"] < 1.0


def test_equals_ignites_accuracy_per_pixel_of_a_segmentation():
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(2, 3, 4, 5, generator=g), torch.randint(0, 3, (2, 4, 5), generator=g)) for _ in range(3)]
    engine = Engine(lambda e, b: {"y_pred": b[0], "y": b[1]})
    TopOneAccuracy().attach(engine, "accuracy")
    Accuracy(output_transform=lambda out: (out["y_pred"], out["y"])).attach(engine, "ignite_accuracy")
    metrics = engine.run(data).metrics
    assert 0.0 < metrics["accuracy"] == metrics["ignite_accuracy"] < 1.0


@pytest.mark.parametrize(
    "y_pred_shape,y_shape",
    [((8, 1), (8, 1)), ((8, 1), (8,)), ((8,), (8,)), ((8, 3), (8, 1)), ((8, 3), (4,)), ((8, 3, 2), (8, 3))],
)
def test_refuses_shapes_without_a_top_one_class_instead_of_broadcasting(y_pred_shape, y_shape):
    # A single score per sample (a binary one-logit output) once broadcast (N,) against (N, 1): "accuracy 11.74".
    metric = TopOneAccuracy()
    with pytest.raises(ValueError, match=re.escape(f"got y_pred {y_pred_shape} and y {y_shape}")):
        metric.update((torch.zeros(y_pred_shape), torch.zeros(y_shape, dtype=torch.int64)))


def test_state_dict_round_trip_and_empty_epoch():
    metric = TopOneAccuracy()
    with pytest.raises(NotComputableError):
        metric.compute()
    metric.update((torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 1, 0])))
    copy = TopOneAccuracy()
    copy.load_state_dict(metric.state_dict())  # Ignite's Metric.state_dict saves _state_dict_all_req_keys
    assert copy.compute() == pytest.approx(2 / 3)


def test_a_given_output_transform_is_used_instead_of_the_default(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    TopOneAccuracy().attach(trainer, "accuracy")
    TopOneAccuracy(output_transform=lambda out: (-out["y_pred"], out["y"])).attach(trainer, "worst_class")
    Accuracy(output_transform=lambda out: (-out["y_pred"], out["y"])).attach(trainer, "ignite_worst_class")
    metrics = trainer.run(batches, max_epochs=1).metrics
    assert metrics["worst_class"] == metrics["ignite_worst_class"] != metrics["accuracy"]


def test_the_first_output_after_each_reset_is_checked():
    good = {"y_pred": torch.tensor([[0.2, 0.8]]), "y": torch.tensor([1])}
    outputs = iter([good, good, {"y_pred": torch.tensor([[0.9]]), "y": torch.tensor([0])}])  # epoch 2 starts with one score
    engine = Engine(lambda e, b: next(outputs))
    TopOneAccuracy().attach(engine, "accuracy")  # reset at each epoch's start
    with pytest.raises(ValueError, match=r"got y_pred \(1, 1\) and y \(1,\)"):
        engine.run([0, 0], max_epochs=2, epoch_length=2)
    assert engine.state.epoch == 2 and engine.state.iteration == 3
