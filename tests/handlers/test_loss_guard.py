import math

import pytest
import torch
from ignite.engine import Events

from flint.engine import create_trainer
from flint.handlers import LossGuard, NonFiniteLoss


def trainer_over(losses):
    """A real Flint trainer whose batch b has loss losses[b] (a zero-weight model, L1 loss to the target)."""
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), torch.nn.functional.l1_loss)
    return trainer, [(torch.zeros(1, 1), torch.full((1, 1), loss)) for loss in losses]


def test_finite_losses_pass():
    trainer, data = trainer_over([0.5, 1e30, 0.0])
    LossGuard(every=1).attach(trainer)
    assert trainer.run(data, max_epochs=2).iteration == 6


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_bad_loss_is_caught_at_the_next_check(bad):
    trainer, data = trainer_over([1.0, bad, 1.0, 1.0, 1.0, 1.0])
    LossGuard(every=4).attach(trainer)
    with pytest.raises(NonFiniteLoss, match="nan or inf at or before iteration 4 \\(epoch 1\\)"):
        trainer.run(data)
    assert trainer.state.iteration == 4


def test_the_epoch_end_check_runs_before_later_handlers_so_nothing_is_saved():
    trainer, data = trainer_over([1.0, 1.0, 1.0])
    trainer.add_event_handler(Events.EPOCH_STARTED(once=2), lambda e: data.__setitem__(1, (data[1][0], data[1][1] * math.nan)))
    LossGuard(every=100).attach(trainer)
    saved = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.state.epoch))  # e.g. a checkpoint
    with pytest.raises(NonFiniteLoss, match="iteration 6 \\(epoch 2\\)"):
        trainer.run(data, max_epochs=3)
    assert saved == [1]


def test_check_can_be_called_before_any_save():
    trainer, data = trainer_over([math.nan, 1.0, 1.0])
    guard = LossGuard(every=100).attach(trainer)
    guard.check(trainer)  # nothing trained yet
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), guard.check)
    with pytest.raises(NonFiniteLoss, match="iteration 2"):
        trainer.run(data)


def test_needs_a_flint_trainer_and_says_so_when_attached():
    from ignite.engine import Engine

    engine = Engine(lambda e, b: {"loss": torch.tensor(b)})
    with pytest.raises(TypeError, match="^LossGuard needs a trainer made by flint.engine.create_trainer"):
        LossGuard(every=1).attach(engine)


def test_rejects_bad_interval():
    with pytest.raises(ValueError, match="Argument every should be a positive integer, got 0"):
        LossGuard(every=0)
