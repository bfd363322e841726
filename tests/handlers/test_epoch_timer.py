from ignite.engine import Engine, Events

from flint.handlers import EpochTimer


def test_times_each_epoch_and_averages_without_the_first():
    clock = {"now": 0.0}
    engine = Engine(lambda e, b: clock.__setitem__("now", clock["now"] + b))  # each batch "takes" b seconds
    timer = EpochTimer(clock=lambda: clock["now"]).attach(engine)
    engine.run([10.0, 2.0], max_epochs=1)  # a slow first epoch
    engine.state.max_epochs = None
    engine.run([1.0, 2.0], max_epochs=3)
    assert timer.times == [12.0, 3.0, 3.0, 3.0]
    assert timer.last == 3.0 and timer.average == 3.0


def test_epoch_time_excludes_handlers_attached_after_it():
    clock = {"now": 0.0}
    engine = Engine(lambda e, b: clock.__setitem__("now", clock["now"] + 1.0))
    timer = EpochTimer(clock=lambda: clock["now"]).attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: clock.__setitem__("now", clock["now"] + 100.0))  # "validation"
    engine.run([0, 0], max_epochs=2)
    assert timer.times == [2.0, 2.0]


def test_no_epoch_no_average():
    timer = EpochTimer()
    assert timer.last is None and timer.average is None


def test_a_resumed_epoch_adds_both_parts_not_the_downtime():
    clock = {"now": 0.0}

    def step(engine, batch):
        clock["now"] += 1.0

    first = Engine(step)
    timer = EpochTimer(clock=lambda: clock["now"]).attach(first)
    saved = {}
    first.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: (saved.update(timer.state_dict()), e.terminate()))
    first.run([0] * 4, max_epochs=2)
    clock["now"] += 1000.0  # the job waits in the queue

    resumed = Engine(step)
    timer = EpochTimer(clock=lambda: clock["now"]).attach(resumed)
    timer.load_state_dict(saved)
    resumed.load_state_dict({"iteration": 3, "epoch_length": 4, "max_epochs": 2})
    resumed.run([0] * 4)
    assert saved == {"elapsed": 3.0} and timer.times == [4.0, 4.0]
