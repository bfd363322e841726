import pytest
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Accuracy, Average

from flint.engine import create_trainer
from flint.engine.metrics import MeanLoss, TopOneAccuracy


def test_lean_metrics_equal_ignites_on_a_real_trainer(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    MeanLoss().attach(trainer, "loss")
    TopOneAccuracy().attach(trainer, "accuracy")
    weighted = lambda out: out["loss"].reshape(1, 1).expand(len(out["y"]), 1)  # noqa: E731
    Average(output_transform=weighted).attach(trainer, "ignite_loss")
    Accuracy().attach(trainer, "ignite_accuracy")
    metrics = trainer.run(batches, max_epochs=2).metrics  # the second epoch's: both reset at each epoch start
    assert metrics["loss"] == pytest.approx(float(metrics["ignite_loss"]), rel=1e-6)
    assert metrics["accuracy"] == metrics["ignite_accuracy"]


def test_state_dict_round_trip_and_empty_epoch():
    metric = TopOneAccuracy()
    metric.reset()
    with pytest.raises(NotComputableError):
        metric.compute()
    metric.update((torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]), torch.tensor([1, 1, 0])))
    copy = TopOneAccuracy()
    copy.reset()
    copy.load_state_dict(metric.state_dict())
    assert copy.compute() == pytest.approx(2 / 3)
    loss = MeanLoss()
    loss.reset()
    loss.update((torch.tensor(2.0, dtype=torch.bfloat16), torch.zeros(4)))
    assert loss.compute() == 2.0


def test_a_given_output_transform_is_used_instead_of_the_default(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    MeanLoss().attach(trainer, "loss")
    MeanLoss(output_transform=lambda out: (out["loss"] * 2, out["y"])).attach(trainer, "double_loss")
    TopOneAccuracy().attach(trainer, "accuracy")
    TopOneAccuracy(output_transform=lambda out: (-out["y_pred"], out["y"])).attach(trainer, "worst_class")
    Accuracy(output_transform=lambda out: (-out["y_pred"], out["y"])).attach(trainer, "ignite_worst_class")
    metrics = trainer.run(batches, max_epochs=1).metrics
    assert metrics["double_loss"] == pytest.approx(2 * metrics["loss"], rel=1e-6)
    assert metrics["worst_class"] == metrics["ignite_worst_class"] != metrics["accuracy"]
