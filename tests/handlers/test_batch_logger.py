import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy

from flint.engine import create_trainer
from flint.handlers import BatchLogger


class FakeClock:
    """An injected clock: each reading advances by `step` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_records_interval_loss_throughput_lr_and_running_accuracy(model, batches, collector):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    accuracy = Accuracy()
    accuracy.attach(trainer, "accuracy")
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output["loss"].item()))
    clock = FakeClock(step=2.0)  # read at epoch start and at each record
    BatchLogger(collector, every=3, optimizer=opt, metrics={"accuracy": accuracy}, clock=clock).attach(trainer)
    trainer.run(batches, max_epochs=2)

    records = collector.phase("batch")
    assert [(r["epoch"], r["iteration"], r["samples"]) for r in records] == [(1, 3, 12), (1, 6, 24), (2, 9, 34), (2, 12, 46)]
    assert records[0]["loss"] == pytest.approx(sum(losses[0:3]) / 3)
    assert records[1]["loss"] == pytest.approx(sum(losses[3:6]) / 3)
    assert records[2]["loss"] == pytest.approx(sum(losses[7:9]) / 2)  # the interval restarts at epoch 2
    # 12 samples in the 2 s between readings; then 12 more; epoch 2 restarts its window at 26 samples.
    assert [r["samples_per_sec"] for r in records] == [6.0, 6.0, 4.0, 6.0]
    assert all(r["lr"] == [0.1] for r in records)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in records)


def test_without_optimizer_or_metrics_the_record_is_minimal(model, batches, collector):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    BatchLogger(collector, every=7).attach(trainer)
    trainer.run(batches, max_epochs=1)
    (record,) = collector.records
    assert set(record) == {"phase", "epoch", "iteration", "samples", "loss", "samples_per_sec"}


@pytest.mark.parametrize("every", [0, -3, 2.5])
def test_rejects_bad_interval(collector, every):
    with pytest.raises(ValueError, match=f"every should be a positive integer, got {every}"):
        BatchLogger(collector, every=every)


def test_needs_a_flint_trainer_and_says_so_when_attached(collector):
    from ignite.engine import Engine

    with pytest.raises(TypeError, match="^BatchLogger needs a trainer made by flint.engine.create_trainer"):
        BatchLogger(collector, every=1).attach(Engine(lambda e, b: None))
