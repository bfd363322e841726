"""Flint's Engine: Ignite's own loop, plus FlintEvents fired right after the Ignite events they follow."""

from unittest.mock import Mock

import ignite.engine
import pytest
import torch
from ignite.engine import Events

from flint.engine import Engine, FlintEvents, TrainEvents, create_evaluator, create_trainer, register_state, registered_states, when


class Tracer(Engine):
    """Records every event fired, as profilers and Ignite's own tests do by overriding _fire_event."""

    def __init__(self, process_function):
        super().__init__(process_function)
        self.fired = []

    def _fire_event(self, event_name, *args, **kwargs):
        self.fired.append(event_name.name)
        super()._fire_event(event_name, *args, **kwargs)


def test_flint_events_follow_the_ignite_event_whatever_the_attach_order():
    engine = Tracer(lambda e, b: None)
    engine.fire_flint_events()
    ran = []
    for event in [FlintEvents.SAVE, FlintEvents.ITERATION_REPORT, FlintEvents.VALIDATE, Events.EPOCH_COMPLETED,
                  FlintEvents.EPOCH_REPORT, Events.ITERATION_COMPLETED, FlintEvents.NEW_EPOCH, Events.EPOCH_STARTED]:  # fmt: skip
        engine.add_event_handler(event, lambda e, name=event.name: ran.append(name))
    engine.run([0, 1], max_epochs=1)
    expected = ["EPOCH_STARTED", "NEW_EPOCH"] + ["ITERATION_COMPLETED", "ITERATION_REPORT"] * 2
    expected += ["EPOCH_COMPLETED", "EPOCH_REPORT", "VALIDATE", "SAVE"]
    assert ran == expected
    # they go through _fire_event, so whatever watches it sees them, each right after its Ignite event
    assert engine.fired[engine.fired.index("EPOCH_COMPLETED") :][:4] == ["EPOCH_COMPLETED", "EPOCH_REPORT", "VALIDATE", "SAVE"]


def test_flint_events_take_ignites_filters():
    engine = Engine(lambda e, b: None)
    engine.fire_flint_events()
    saved, reported = [], []
    engine.add_event_handler(FlintEvents.SAVE(every=2), lambda e: saved.append(e.state.epoch))  # counts epochs
    engine.add_event_handler(FlintEvents.ITERATION_REPORT(every=3), lambda e: reported.append(e.state.iteration))
    engine.run([0, 1], max_epochs=5)
    assert (saved, reported) == ([2, 4], [3, 6, 9])


def test_new_epoch_is_not_fired_for_an_epoch_resumed_mid_way():
    def run(state=None):
        engine = Engine(lambda e, b: None)
        engine.fire_flint_events()
        epochs = []
        engine.add_event_handler(FlintEvents.NEW_EPOCH, lambda e: epochs.append(e.state.epoch))
        if state is not None:
            engine.load_state_dict(state)
        engine.run(range(4), max_epochs=3)
        return epochs

    assert run() == [1, 2, 3]
    assert run({"iteration": 6, "epoch_length": 4, "max_epochs": 3}) == [3]  # epoch 2 resumed at its 3rd batch
    assert run({"iteration": 4, "epoch_length": 4, "max_epochs": 3}) == [2, 3]  # at a boundary: fresh


def test_engine_built_directly_fires_exactly_ignites_events():
    class IgniteTracer(ignite.engine.Engine):
        def __init__(self, process_function):
            super().__init__(process_function)
            self.fired = []

        def _fire_event(self, event_name, *args, **kwargs):
            self.fired.append(event_name.name)
            super()._fire_event(event_name, *args, **kwargs)

    ours, theirs = Tracer(lambda e, b: None), IgniteTracer(lambda e, b: None)
    for engine in (ours, theirs):
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=5), lambda e: e.terminate())
        engine.run(range(3), max_epochs=3)
    assert ours.fired == theirs.fired and "TERMINATE" in ours.fired


def test_a_mock_handler_runs_on_every_per_iteration_event(model, batches):
    # A handler object that answers every attribute (as unittest.mock.Mock does) is just a callable.
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    handler = Mock()
    for event in (Events.GET_BATCH_STARTED, Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, FlintEvents.ITERATION_REPORT,
                  TrainEvents.BEFORE_OPTIMIZER_STEP(every=2)):  # fmt: skip
        trainer.add_event_handler(event, handler)
    trainer.run(batches, max_epochs=1)
    assert handler.call_count == 4 * len(batches) + 3
    assert all(call.args == (trainer,) for call in handler.call_args_list)


def test_a_stop_at_iteration_completed_still_reports_that_iteration(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    reported = []
    trainer.add_event_handler(FlintEvents.ITERATION_REPORT, lambda e: reported.append(e.state.iteration))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    trainer.run(batches, max_epochs=1)
    assert reported == [1, 2, 3] and trainer.state.iteration == 3


def test_evaluator_fires_flint_events_too(model, batches):
    evaluator = create_evaluator(model)
    seen = []
    evaluator.add_event_handler(FlintEvents.EPOCH_REPORT, lambda e: seen.append(e.state.iteration))
    evaluator.run(batches)
    evaluator.run(batches)
    assert seen == [len(batches)] * 2


def test_when_falls_back_to_the_ignite_event_on_a_plain_engine(model):
    plain = ignite.engine.Engine(lambda e, b: None)
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    assert when(plain, FlintEvents.NEW_EPOCH) == Events.EPOCH_STARTED
    assert when(plain, FlintEvents.ITERATION_REPORT) == Events.ITERATION_COMPLETED
    assert when(plain, TrainEvents.BEFORE_OPTIMIZER_STEP) == Events.ITERATION_COMPLETED
    assert when(trainer, FlintEvents.SAVE) is FlintEvents.SAVE
    assert when(trainer, TrainEvents.OPTIMIZER_STEPPED) is TrainEvents.OPTIMIZER_STEPPED


def test_register_state_refuses_two_objects_under_one_key():
    engine = ignite.engine.Engine(lambda e, b: None)
    first, second = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    register_state(engine, "thing", first)
    register_state(engine, "thing", first)  # the same object again is fine
    with pytest.raises(ValueError, match="two objects keep state under 'thing'"):
        register_state(engine, "thing", second)
    assert registered_states(engine) == {"thing": first}


def test_a_flint_event_is_fired_once_a_handler_listens_to_it_and_not_before():
    # Firing an event costs Ignite's dispatch whether or not a handler runs: Flint fires its own only when listened to.
    engine = Tracer(lambda e, b: None)
    engine.fire_flint_events()
    engine.run([0, 0], max_epochs=1)
    assert not {e.name for e in FlintEvents} & set(engine.fired)
    seen = []
    engine.add_event_handler(FlintEvents.ITERATION_REPORT(every=2), lambda e: seen.append(e.state.iteration))  # a filtered one too
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.add_event_handler(FlintEvents.SAVE, lambda _: seen.append("save")))
    engine.fired.clear()
    engine.run([0, 0], max_epochs=1)
    assert engine.fired.count("ITERATION_REPORT") == 2 and engine.fired.count("SAVE") == 1  # a handler added during the run counts at once
    assert seen == [2, "save"] and "EPOCH_REPORT" not in engine.fired


def test_the_trainer_fires_its_train_events_only_for_listeners(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    steps = []
    trainer.add_event_handler(TrainEvents.OPTIMIZER_STEPPED, lambda e: steps.append(e.state.iteration))
    trainer.run(batches[:3], max_epochs=1)
    assert steps == [1, 2, 3] and TrainEvents.OPTIMIZER_STEPPED.name in trainer.listened
    assert TrainEvents.BEFORE_OPTIMIZER_STEP.name not in trainer.listened
