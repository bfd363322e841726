import os
import signal

import pytest
import torch
from ignite.engine import Engine, Events

from engine import create_trainer
from handlers import Preemption


def test_a_request_saves_at_the_end_of_the_iteration_and_stops():
    saved = []
    engine = Engine(lambda e, b: None)
    stop = Preemption(lambda e: saved.append(e.state.iteration)).attach(engine)
    engine.add_event_handler(Events.ITERATION_STARTED(once=5), lambda _: stop.request())
    state = engine.run(range(4), max_epochs=3)
    assert (state.iteration, state.epoch, saved, stop.triggered) == (5, 2, [5], True)


def test_a_flint_trainer_stops_only_after_a_whole_update_cycle(model, batches):
    saved = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy, accumulation_steps=3)
    stop = Preemption(lambda e: saved.append((e.state.iteration, e.state.optimizer_step))).attach(trainer)
    trainer.add_event_handler(Events.ITERATION_STARTED(once=4), lambda _: stop.request())
    trainer.run(batches, max_epochs=2)  # 7 batches an epoch: cycles end at iterations 3, 6, 7
    assert saved == [(6, 2)]
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated was left behind


def test_a_request_during_validation_stops_at_that_epoch_end():
    saved = []
    engine = Engine(lambda e, b: None)
    stop = Preemption(lambda e: saved.append(e.state.iteration))
    engine.add_event_handler(Events.EPOCH_COMPLETED(once=1), lambda _: stop.request())  # validation, attached before
    stop.attach(engine)
    state = engine.run(range(4), max_epochs=3)
    assert (saved, state.epoch, state.iteration) == ([4], 1, 4)


def test_a_real_sigterm_stops_the_run_and_handlers_are_restored():
    saved = []
    engine = Engine(lambda e, b: None)
    stop = Preemption(lambda e: saved.append(e.state.iteration)).attach(engine)
    engine.add_event_handler(Events.ITERATION_STARTED(once=3), lambda _: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    with stop.signal_handlers():
        engine.run(range(10), max_epochs=1)
    assert (saved, stop.requested) == ([3], signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_aborts_at_once():
    engine = Engine(lambda e, b: None)
    stop = Preemption(lambda e: pytest.fail("no checkpoint on abort"), grace=0.0).attach(engine)
    kill = lambda _: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    engine.add_event_handler(Events.ITERATION_STARTED(once=2), kill)
    engine.add_event_handler(Events.ITERATION_STARTED(once=2), kill)
    with stop.signal_handlers(), pytest.raises(KeyboardInterrupt, match="received again"):
        engine.run(range(10), max_epochs=1)
    assert engine.state.iteration == 2 and not stop.triggered


def test_every_rank_follows_the_agreed_decision():
    # agree() stands for the all-reduce: here another rank asked before the third check.
    calls, saved = [], []

    def agree(mine):
        calls.append(mine)
        return len(calls) == 3

    engine = Engine(lambda e, b: None)
    stop = Preemption(lambda e: saved.append(e.state.iteration), agree=agree).attach(engine)
    engine.run(range(10))
    assert (saved, calls, stop.triggered, stop.requested) == ([3], [False, False, False], True, None)


def test_a_repeated_signal_within_the_grace_period_is_the_same_one():
    stop = Preemption(lambda e: None, grace=60.0)
    stop.request(signal.SIGTERM)
    stop.request(signal.SIGTERM)  # e.g. sent to the process group and forwarded by the parent
    assert stop.requested == signal.SIGTERM
    impatient = Preemption(lambda e: None, grace=0.0)
    impatient.request(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="received again"):
        impatient.request(signal.SIGTERM)


def test_a_request_in_an_epochs_last_iteration_lets_the_epoch_end_first(model, batches):
    # The epoch's validation, records and checkpoint run (EPOCH_COMPLETED), then the stop.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy, accumulation_steps=2)
    ended, saved = [], []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: ended.append(e.state.epoch))  # "validation"
    stop = Preemption(lambda e: saved.append(e.state.iteration)).attach(trainer)
    trainer.add_event_handler(Events.ITERATION_STARTED(once=7), lambda _: stop.request())  # 7 batches an epoch
    state = trainer.run(batches, max_epochs=3)
    assert (ended, saved, state.iteration) == ([1], [7], 7)
