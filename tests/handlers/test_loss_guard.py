import math

import pytest
import torch
from ignite.engine import Engine, Events

from handlers import LossGuard, NonFiniteLoss


def engine_over():
    return Engine(lambda e, b: {"loss": torch.tensor(b)})


def test_finite_losses_pass():
    engine = engine_over()
    LossGuard(every=1).attach(engine)
    assert engine.run([0.5, 1e30, 0.0], max_epochs=2).iteration == 6


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_bad_loss_is_caught_at_the_next_check(bad):
    engine = engine_over()
    LossGuard(every=4).attach(engine)
    with pytest.raises(NonFiniteLoss, match="nan or inf at or before iteration 4 \\(epoch 1\\)"):
        engine.run([1.0, bad, 1.0, 1.0, 1.0, 1.0])
    assert engine.state.iteration == 4


def test_the_epoch_end_check_runs_before_later_handlers_so_nothing_is_saved():
    engine = Engine(lambda e, b: {"loss": torch.tensor(math.nan if (e.state.epoch, b) == (2, 1) else 1.0)})
    LossGuard(every=100).attach(engine)
    saved = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.state.epoch))  # e.g. a checkpoint
    with pytest.raises(NonFiniteLoss, match="iteration 6 \\(epoch 2\\)"):
        engine.run([0, 1, 2], max_epochs=3)
    assert saved == [1]


def test_check_can_be_called_before_any_save():
    engine = engine_over()
    guard = LossGuard(every=100).attach(engine)
    guard.check(engine)  # nothing seen yet
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), guard.check)
    with pytest.raises(NonFiniteLoss, match="iteration 2"):
        engine.run([math.nan, 1.0, 1.0])


def test_rejects_bad_interval():
    with pytest.raises(ValueError, match="Argument every should be a positive integer, got 0"):
        LossGuard(every=0)
