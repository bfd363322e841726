import pytest
import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Accuracy, Average

from engine import create_trainer
from engine.metrics import MeanLoss, TopOneAccuracy


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


def test_accuracy_counted_in_batches_of_two_equals_ignites_and_survives_a_mid_flush_state_dict():
    torch.manual_seed(0)
    batches = [(torch.randn(n, 4), torch.randint(0, 4, (n,))) for n in (5, 3, 7, 2, 6)]
    metric, reference = TopOneAccuracy(flush_every=2), Accuracy()
    metric.reset()
    reference.reset()
    for i, batch in enumerate(batches):
        metric.update(batch)
        reference.update(batch)
        if i == 2:  # one batch waits in the list: state_dict counts it first
            assert len(metric._pending) == 1
            copy = TopOneAccuracy()
            copy.reset()
            copy.load_state_dict(metric.state_dict())
            assert copy.compute() == reference.compute()
    assert metric.compute() == reference.compute()
    assert metric._count == 23


def test_bad_flush_every_fails_fast():
    with pytest.raises(ValueError, match="flush_every should be a positive integer, got 0"):
        TopOneAccuracy(flush_every=0)
