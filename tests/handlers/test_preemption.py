import os
import signal

import pytest
import torch
from ignite.engine import Engine, Events

from flint.engine import FlintEvents, create_trainer, progress
from flint.handlers import Preemption


def stopped_at(engine: Engine) -> list[int]:
    """The iterations at which the run stopped (where Checkpointing saves it: COMPLETED after TERMINATE)."""
    stops: list[int] = []
    engine.add_event_handler(Events.TERMINATE, lambda e: stops.append(e.state.iteration))
    return stops


def test_a_request_stops_at_the_end_of_the_iteration():
    engine = Engine(lambda e, b: None)
    stops = stopped_at(engine)
    stop = Preemption().attach(engine)
    engine.add_event_handler(Events.ITERATION_STARTED(once=5), lambda _: stop.request())
    state = engine.run(range(4), max_epochs=3)
    assert (state.iteration, state.epoch, stops, stop.triggered) == (5, 2, [5], True)


def test_a_flint_trainer_stops_only_after_a_whole_update_cycle(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy, accumulation_steps=3)
    stops = stopped_at(trainer)
    stop = Preemption().attach(trainer)
    trainer.add_event_handler(Events.ITERATION_STARTED(once=4), lambda _: stop.request())
    trainer.run(batches, max_epochs=2)  # 7 batches an epoch: cycles end at iterations 3, 6, 7
    assert stops == [6] and progress(trainer).optimizer_step == 2
    assert all(p.grad is None for p in model.parameters())  # nothing accumulated was left behind


def test_a_request_during_validation_stops_at_that_epoch_end_whatever_the_attach_order(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    stops = stopped_at(trainer)
    stop = Preemption().attach(trainer)
    # "validation", attached after the handler, at the event Validation uses: SAVE still follows it
    trainer.add_event_handler(FlintEvents.VALIDATE, lambda e: stop.request() if e.state.epoch == 1 else None)
    state = trainer.run(batches, max_epochs=3)
    assert (stops, state.epoch, state.iteration) == ([7], 1, 7)


def test_a_real_sigterm_stops_the_run_and_handlers_are_restored():
    engine = Engine(lambda e, b: None)
    stops = stopped_at(engine)
    stop = Preemption().attach(engine)
    engine.add_event_handler(Events.ITERATION_STARTED(once=3), lambda _: os.kill(os.getpid(), signal.SIGTERM))
    before = signal.getsignal(signal.SIGTERM)
    with stop.signal_handlers():
        engine.run(range(10), max_epochs=1)
    assert (stops, stop.requested) == ([3], signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_aborts_at_once():
    engine = Engine(lambda e, b: None)
    stops = stopped_at(engine)
    stop = Preemption(grace=0.0).attach(engine)
    kill = lambda _: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    engine.add_event_handler(Events.ITERATION_STARTED(once=2), kill)
    engine.add_event_handler(Events.ITERATION_STARTED(once=2), kill)
    with stop.signal_handlers(), pytest.raises(KeyboardInterrupt, match="received again"):
        engine.run(range(10), max_epochs=1)
    assert engine.state.iteration == 2 and not stop.triggered and stops == []


def test_every_rank_follows_the_agreed_decision():
    # agree() stands for the all-reduce: here another rank asked before the third check.
    calls = []

    def agree(mine):
        calls.append(mine)
        return len(calls) == 3

    engine = Engine(lambda e, b: None)
    stops = stopped_at(engine)
    stop = Preemption(agree=agree).attach(engine)
    engine.run(range(10))
    assert (stops, calls, stop.triggered, stop.requested) == ([3], [False, False, False], True, None)


def test_a_repeated_signal_within_the_grace_period_is_the_same_one():
    trainer = Engine(lambda e, b: None)
    stop = Preemption(grace=60.0).attach(trainer)

    def twice(_: Engine) -> None:
        stop.request(signal.SIGTERM)
        stop.request(signal.SIGTERM)  # e.g. sent to the process group and forwarded by the parent

    trainer.add_event_handler(Events.ITERATION_STARTED(once=2), twice)
    trainer.run(range(5))
    assert (stop.requested, stop.triggered, trainer.state.iteration) == (signal.SIGTERM, True, 2)


def test_a_second_signal_aborts_a_running_trainer_but_not_one_yet_to_start():
    waiting = Preemption(grace=0.0).attach(Engine(lambda e, b: None))
    waiting.request(signal.SIGTERM)
    waiting.request(signal.SIGTERM)  # before STARTED: the stop is decided, nothing to abort
    assert waiting.requested == signal.SIGTERM
    trainer = Engine(lambda e, b: None)
    impatient = Preemption(grace=0.0).attach(trainer)

    def twice(_: Engine) -> None:
        impatient.request(signal.SIGTERM)
        impatient.request(signal.SIGTERM)

    trainer.add_event_handler(Events.ITERATION_STARTED(once=2), twice)
    with pytest.raises(KeyboardInterrupt, match="received again") as error:
        trainer.run(range(5))
    assert error.value.signum == signal.SIGTERM and trainer.state.iteration == 2


def test_a_request_in_an_epochs_last_iteration_lets_the_epoch_end_first(model, batches):
    # The epoch's records, validation and checkpoint run (after EPOCH_COMPLETED), then the stop.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy, accumulation_steps=2)
    stops = stopped_at(trainer)
    validated = []
    trainer.add_event_handler(FlintEvents.VALIDATE, lambda e: validated.append(e.state.epoch))
    stop = Preemption().attach(trainer)
    trainer.add_event_handler(Events.ITERATION_STARTED(once=7), lambda _: stop.request())  # 7 batches an epoch
    state = trainer.run(batches, max_epochs=3)
    assert (validated, stops, state.iteration) == ([1], [7], 7)
