import logging

import pytest
import torch

from flint.engine import FlintEvents, create_trainer
from flint.handlers import Checkpointing, InterruptAt


def test_stops_after_the_epochs_validation_and_saves_without_exiting(tmp_path, model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    interrupt = InterruptAt(2).attach(trainer)  # attached first: still stops only after the epoch's validation
    validated = []
    trainer.add_event_handler(FlintEvents.VALIDATE, lambda e: validated.append(e.state.epoch))
    Checkpointing(tmp_path, {"model": model, "trainer": trainer}, every=5).attach(trainer)
    state = trainer.run(batches, max_epochs=5)  # returns: no SystemExit from a library handler
    assert interrupt.triggered and state.epoch == 2 and validated == [1, 2]
    assert [p.name for p in Checkpointing.find_all(tmp_path)] == ["checkpoint_14.pt"]  # the stop is saved
    assert torch.load(tmp_path / "checkpoint_14.pt", weights_only=True)["trainer"]["iteration"] == 14


def test_not_triggered_when_the_run_ends_first(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    interrupt = InterruptAt(3).attach(trainer)
    trainer.run(batches, max_epochs=2)
    assert not interrupt.triggered


def test_rejects_non_positive_epoch():
    with pytest.raises(ValueError, match="epoch should be a positive integer, got 0"):
        InterruptAt(0)


def test_says_it_interrupts_after_the_epochs_records(model, batches, caplog):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    InterruptAt(1).attach(trainer)  # attached before the report: its line still comes after it
    trainer.add_event_handler(FlintEvents.EPOCH_REPORT, lambda e: logging.getLogger("report").info("Epoch %d", e.state.epoch))
    with caplog.at_level(logging.INFO):
        trainer.run(batches, max_epochs=3)
    lines = [r.getMessage() for r in caplog.records if r.name in ("report", "flint.handlers.interrupt_at")]
    assert lines == ["Epoch 1", "Interrupting after epoch 1 as asked (interrupt-at)"]
