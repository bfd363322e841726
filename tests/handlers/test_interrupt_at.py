import pytest
import torch
from ignite.engine import Events

from engine import create_trainer
from handlers import Checkpointing, InterruptAt


def test_saves_after_validation_then_stops_without_exiting(tmp_path, model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    order = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: order.append(("validation", e.state.epoch)))
    ckpt = Checkpointing(tmp_path, {"model": model, "trainer": trainer})
    interrupt = InterruptAt(2, save=lambda e: (order.append(("save", e.state.epoch)), ckpt.save_latest(e))).attach(trainer)
    state = trainer.run(batches, max_epochs=5)  # returns: no SystemExit from a library handler
    assert interrupt.triggered and state.epoch == 2
    assert order == [("validation", 1), ("validation", 2), ("save", 2)]
    ckpt.wait()  # not attached here, so nothing waited for the background fsync and rename
    assert torch.load(tmp_path / "checkpoint_14.pt", weights_only=True)["trainer"]["iteration"] == 14


def test_not_triggered_when_the_run_ends_first(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    interrupt = InterruptAt(3, save=lambda e: None).attach(trainer)
    trainer.run(batches, max_epochs=2)
    assert not interrupt.triggered


def test_rejects_non_positive_epoch():
    with pytest.raises(ValueError, match="epoch should be a positive integer, got 0"):
        InterruptAt(0, save=lambda e: None)
