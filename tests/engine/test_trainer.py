import copy
import functools
import logging

import pytest
import torch
from ignite.engine import Events

from engine import TrainEvents, create_evaluator, create_trainer


class FFNN(torch.nn.Module):
    """Seed 001's feed-forward regression network: input [0, log x, 5x] -> x."""

    def __init__(self) -> None:
        super().__init__()
        self.ffnn = torch.nn.Sequential(
            torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffnn(x)


def seed001_data(batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    labels = torch.arange(1, 64, dtype=torch.float32).unsqueeze(1)  # 63 samples: the last batch is short
    examples = torch.cat([torch.zeros_like(labels), torch.log(labels), labels * 5], dim=1)
    return [(examples[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, 63, batch_size)]


def seed001_model() -> FFNN:
    torch.manual_seed(42)
    model = FFNN()
    for p in model.parameters():
        torch.nn.init.uniform_(p)
    return model


def train_seed001(batch_size: int, update_cycle: int, epochs: int = 10) -> FFNN:
    model = seed001_model()
    opt = torch.optim.AdamW(model.parameters())
    trainer = create_trainer(model, opt, torch.nn.functional.mse_loss, accumulation_steps=update_cycle)
    trainer.run(seed001_data(batch_size), max_epochs=epochs)
    return model


@pytest.mark.parametrize("batch_size,update_cycle", [(8, 4), (4, 8), (16, 2)])
def test_update_cycle_equals_one_large_batch(batch_size, update_cycle):
    # 63 samples: each epoch is one cycle of 32 and one of 31 (a short last batch), both exact.
    big = train_seed001(batch_size * update_cycle, 1)
    accumulated = train_seed001(batch_size, update_cycle)
    for p_big, p_acc in zip(big.parameters(), accumulated.parameters()):
        torch.testing.assert_close(p_acc, p_big, rtol=1e-5, atol=1e-6)


def test_update_cycle_really_changes_the_trajectory():
    # Guards the test above against passing vacuously: small batches without a cycle differ.
    big = train_seed001(32, 1)
    small = train_seed001(8, 1)
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(big.parameters(), small.parameters()))


def test_single_step_matches_a_hand_written_loop_bitwise(model, batches):
    hand_model = copy.deepcopy(model)
    hand_opt = torch.optim.SGD(hand_model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        for x, y in batches:
            hand_opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(hand_model(x), y)
            loss.backward()
            hand_opt.step()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    create_trainer(model, opt, torch.nn.functional.cross_entropy).run(batches, max_epochs=2)
    for a, b in zip(model.parameters(), hand_model.parameters()):
        assert torch.equal(a, b)


def test_output_is_a_dict_of_detached_tensors(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    state = trainer.run(batches[:1], max_epochs=1)
    out = state.output
    assert set(out) == {"loss", "y_pred", "y"}
    assert isinstance(out["loss"], torch.Tensor) and out["loss"].dim() == 0 and not out["loss"].requires_grad
    assert out["y_pred"].shape == (4, 3) and not out["y_pred"].requires_grad
    assert torch.equal(out["y"], batches[0][1])


def test_train_events_fire_once_per_optimizer_step_with_the_cycles_gradients(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy, accumulation_steps=3)
    seen = []

    @trainer.on(TrainEvents.BEFORE_OPTIMIZER_STEP)
    def before(engine):
        seen.append(("before", engine.state.iteration, all(p.grad is not None for p in model.parameters())))

    @trainer.on(TrainEvents.OPTIMIZER_STEPPED)
    def after(engine):
        seen.append(("after", engine.state.iteration, all(p.grad is None for p in model.parameters())))

    state = trainer.run(batches, max_epochs=2)  # 7 batches an epoch: cycles of 3, 3 and 1
    steps = [it for kind, it, _ in seen if kind == "before"]
    assert steps == [3, 6, 7, 10, 13, 14]
    assert [it for kind, it, _ in seen if kind == "after"] == steps
    assert all(ok for _, _, ok in seen)
    assert state.optimizer_step == 6


@pytest.mark.parametrize("debug", [False, True])
def test_train_event_handlers_changed_during_a_step_take_effect_as_with_ignites_fire_event(model, batches, caplog, debug):
    # In a quiet epoch the step calls both events' handler lists itself (no _fire_event); with DEBUG,
    # Ignite's _fire_event. Either way a handler added or removed takes effect at the next firing.
    caplog.set_level(logging.DEBUG if debug else logging.INFO, logger="ignite.engine.engine.Engine")
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    trace = []

    def late_before(e):
        trace.append(("late before", e.state.iteration))

    def stepped(e):
        trace.append(("stepped", e.state.iteration, e.last_event_name))

    def early_stepped(e):
        trace.append(("early stepped", e.state.iteration))

    def first(e):
        trace.append(("first", e.state.iteration, e.last_event_name))
        if e.state.iteration == 2:
            e.remove_event_handler(first, TrainEvents.BEFORE_OPTIMIZER_STEP)
            e.remove_event_handler(early_stepped, TrainEvents.OPTIMIZER_STEPPED)
            e.add_event_handler(TrainEvents.OPTIMIZER_STEPPED, stepped)
            e.add_event_handler(TrainEvents.BEFORE_OPTIMIZER_STEP, late_before)

    before, after = TrainEvents.BEFORE_OPTIMIZER_STEP, TrainEvents.OPTIMIZER_STEPPED
    trainer.add_event_handler(TrainEvents.BEFORE_OPTIMIZER_STEP, first)
    trainer.add_event_handler(TrainEvents.OPTIMIZER_STEPPED, early_stepped)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.remove_event_handler(late_before, before))
    trainer.run(batches[:4], max_epochs=1)
    assert trace == [
        ("first", 1, before), ("early stepped", 1), ("first", 2, before), ("stepped", 2, after),
        ("late before", 3), ("stepped", 3, after), ("stepped", 4, after),
    ]  # fmt: skip


def test_train_events_can_be_filtered_by_step_count(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    fired = []
    trainer.add_event_handler(TrainEvents.OPTIMIZER_STEPPED(every=5), lambda e: fired.append(e.state.optimizer_step))
    trainer.run(batches, max_epochs=2)
    assert fired == [5, 10]


def test_samples_are_counted_and_saved_in_the_state_dict(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    trainer.run(batches, max_epochs=3)
    assert trainer.state.samples == 3 * 26
    saved = trainer.state_dict()
    assert saved["samples"] == 78 and saved["optimizer_step"] == 21


def test_resumed_trainer_keeps_its_counters(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    trainer.run(batches, max_epochs=1)
    saved = trainer.state_dict()
    resumed = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    resumed.load_state_dict(saved)
    resumed.run(batches, max_epochs=2)
    assert resumed.state.samples == 52 and resumed.state.optimizer_step == 14


def test_clip_grad_norm_bounds_each_update(model, batches):
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    create_trainer(model, opt, lambda y_pred, y: 1000 * torch.nn.functional.cross_entropy(y_pred, y), clip_grad_norm=0.5).run(
        batches[:1], max_epochs=1
    )
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert change.norm() == pytest.approx(0.5, rel=1e-4)  # lr 1: the update is the clipped gradient


def test_amp_on_cpu_autocasts_to_bfloat16(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = create_trainer(model, opt, torch.nn.functional.cross_entropy, amp=True).run(batches, max_epochs=1)
    assert state.output["y_pred"].dtype == torch.bfloat16
    assert torch.isfinite(state.output["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_model_is_back_in_train_mode_after_evaluation(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    evaluator = create_evaluator(model)
    modes = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: modes.append(model.training))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: evaluator.run(batches[:1]))
    trainer.run(batches, max_epochs=1)
    assert all(modes)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_accumulation_steps_fail_fast(model, bad):
    with pytest.raises(ValueError, match=f"accumulation_steps should be a positive integer, got {bad}"):
        create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss, accumulation_steps=bad)


def test_bad_clip_grad_norm_fails_fast(model):
    with pytest.raises(ValueError, match="clip_grad_norm should be a positive number, got 0"):
        create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss, clip_grad_norm=0)


def test_param_groups_added_after_creation_are_averaged_and_clipped_too(batches):
    torch.manual_seed(0)
    frozen, head = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)
    model = torch.nn.Sequential(frozen, torch.nn.ReLU(), head)
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy, accumulation_steps=2, clip_grad_norm=1e6)
    opt.add_param_group({"params": frozen.parameters()})  # unfrozen later
    seen = {}
    trainer.add_event_handler(TrainEvents.BEFORE_OPTIMIZER_STEP(once=1), lambda e: seen.update(grad=frozen.weight.grad.clone()))
    trainer.run(batches[:2], max_epochs=1)

    x, y = torch.cat([batches[0][0], batches[1][0]]), torch.cat([batches[0][1], batches[1][1]])
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    torch.testing.assert_close(seen["grad"], reference[0].weight.grad)


@pytest.mark.parametrize("debug", [False, True])
def test_events_reach_handlers_as_ignite_passes_them_with_or_without_the_debug_message(model, batches, caplog, debug):
    # create_trainer's engine fires events without formatting Ignite's debug line unless DEBUG is on.
    caplog.set_level(logging.DEBUG if debug else logging.INFO, logger="ignite.engine.engine.Engine")
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    calls: list[tuple] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e, a, k: calls.append((e, a, k)), "a", k="k")
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: calls.append(("no engine",)))
    trainer.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: calls.append((e, type(exc))))
    trainer.add_event_handler(Events.ITERATION_STARTED(once=3), lambda e: e.state.does_not_exist)
    trainer.run(batches, max_epochs=1)  # the EXCEPTION_RAISED handler takes the error, as with Ignite's Engine
    assert calls == [(trainer, "a", "k"), (trainer, AttributeError), ("no engine",)]
    assert trainer.last_event_name == Events.COMPLETED
    firing = [r for r in caplog.records if "Firing handlers for event" in r.getMessage()]
    assert bool(firing) is debug


@pytest.mark.parametrize("first_run", ["completes", "raises"])
def test_debug_turned_on_after_a_quiet_run_logs_every_event_again(model, batches, caplog, first_run):
    # Within an epoch the DEBUG setting is read once, when it starts (TrainEvents included); a run that
    # ended, even by an exception, leaves nothing behind that would keep later events quiet.
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    caplog.set_level(logging.INFO, logger="ignite.engine.engine.Engine")
    if first_run == "raises":
        handle = trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.state.does_not_exist)
        with pytest.raises(AttributeError):
            trainer.run(batches, max_epochs=1)
        handle.remove()
    else:
        trainer.run(batches, max_epochs=1)
    assert not [r for r in caplog.records if "Firing handlers" in r.getMessage()]
    caplog.set_level(logging.DEBUG, logger="ignite.engine.engine.Engine")
    trainer.fire_event(Events.STARTED)  # outside any epoch
    trainer.state.max_epochs = None  # Ignite's way to start over rather than resume the failed run
    trainer.run(batches[:2], max_epochs=1)
    fired = [r.getMessage().rsplit(" ", 1)[-1] for r in caplog.records if "Firing handlers" in r.getMessage()]
    assert fired[0] == "Events.STARTED"
    assert fired.count("TrainEvents.OPTIMIZER_STEPPED") == 2 and fired.count("Events.ITERATION_COMPLETED") == 2


def _trace_run(engine_class, scenario):
    """Every event an engine fires in ``scenario``, with the state it fires in, for comparing engines."""
    fail_at = 3 if scenario == "exception" else None

    def step(engine, batch):
        if engine.state.iteration == fail_at:
            raise ValueError("boom")
        return batch

    engine = engine_class(step)
    trace: list[tuple] = []
    for event in Events:
        if event in (Events.EXCEPTION_RAISED, Events.TERMINATE_SINGLE_EPOCH):
            continue
        engine.add_event_handler(event, lambda e, *a, _n=event.name, **k: trace.append((_n, e.state.iteration, e.state.epoch, e.state.batch)))
    engine.add_event_handler(Events.TERMINATE_SINGLE_EPOCH, lambda e, iter_counter: trace.append(("TSE", iter_counter)))
    engine.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: trace.append(("EXC", str(exc))))
    run = {"max_epochs": 2}
    data = list(range(5))
    if scenario == "epoch_length":
        run.update(epoch_length=3, max_epochs=3)
    elif scenario == "epoch_length_over_data":
        run.update(epoch_length=12, max_epochs=1)  # the data restarts twice within the epoch
    elif scenario == "iterator":
        data, run = (x for x in range(4)), {"max_epochs": 1}
    elif scenario == "no_data":
        data, run = None, {"epoch_length": 3, "max_epochs": 2}
    elif scenario == "max_iters":
        run = {"max_iters": 7}
    elif scenario == "terminate":
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.terminate())
    elif scenario == "terminate_epoch":
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.terminate_epoch() if e.state.iteration % 5 == 2 else None)
    elif scenario == "terminate_at_get_batch":
        engine.add_event_handler(Events.GET_BATCH_COMPLETED(once=3), lambda e: e.terminate())
    elif scenario == "handlers_change":
        late = lambda e: trace.append(("late", e.state.iteration))  # noqa: E731

        def epoch_started(e):
            trace.append(("epoch started", e.state.epoch))

        def change(e):
            if e.state.iteration == 2:
                e.remove_event_handler(change, Events.ITERATION_STARTED)
                e.remove_event_handler(epoch_started, Events.EPOCH_STARTED)
                e.add_event_handler(Events.ITERATION_COMPLETED, late)
            trace.append(("change", e.state.iteration))

        engine.add_event_handler(Events.ITERATION_STARTED, change)
        engine.add_event_handler(Events.EPOCH_STARTED, epoch_started)
    elif scenario == "filters":  # every= filters are checked in _Engine's loop; other filters and arguments as Ignite
        note = lambda tag: lambda e, *a, **k: trace.append((tag, e.state.iteration, a, k))  # noqa: E731
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=3), note("every 3"))
        engine.add_event_handler(Events.ITERATION_STARTED(every=2), note("started every 2"))
        engine.add_event_handler(Events.GET_BATCH_STARTED(every=4), note("get every 4"))
        engine.add_event_handler(Events.GET_BATCH_COMPLETED(every=3), note("got every 3"))
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=4), note("once 4"))
        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=lambda e, i: i in (2, 7)), note("custom"))
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=2, before=8), note("every 2 before 8"))
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=5), note("every 5 with args"), "a", k="k")
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda: trace.append(("no engine",)))
        engine.add_event_handler(Events.ITERATION_COMPLETED, functools.wraps(note("wrapped"))(lambda e: trace.append(("wrapper", e.state.iteration))))
    elif scenario == "counter_moved":  # an every= filter reads the count when its handler's turn comes, as Ignite's
        engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: setattr(e.state, "iteration", 4) if e.state.iteration == 3 else None)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: trace.append(("every 2", e.state.iteration)))
    elif scenario == "filtered_handlers_change":
        every2 = lambda e: trace.append(("every 2", e.state.iteration))  # noqa: E731
        every3 = lambda e: trace.append(("every 3", e.state.iteration))  # noqa: E731

        def started(e):
            if e.state.iteration == 3:  # changes to another event's handlers take effect at its next firing
                e.remove_event_handler(every2, Events.ITERATION_COMPLETED)
                e.add_event_handler(Events.ITERATION_COMPLETED(every=3), every3)

        def completed(e):
            if e.state.iteration == 4:  # one added to the event being fired runs in the same firing
                e.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: trace.append(("added", e.state.iteration)))
            if e.state.iteration == 7:  # one removed from it while it fires has its turn in this firing still
                e.remove_event_handler(every3, Events.ITERATION_COMPLETED)

        engine.add_event_handler(Events.ITERATION_STARTED, started)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=2), every2)
        engine.add_event_handler(Events.ITERATION_COMPLETED, completed)
    if scenario == "interrupt":
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.interrupt())
        engine.run(data, max_epochs=2)
        trace.append(("resumed",))
    try:
        state = engine.run(data, **run)
        trace.append(("end", state.iteration, state.epoch, engine.last_event_name.name))
    except ValueError as e:
        trace.append(("raised", str(e)))
    return trace


@pytest.mark.parametrize(
    "scenario",
    ["plain", "epoch_length", "epoch_length_over_data", "iterator", "no_data", "max_iters", "terminate", "terminate_epoch", "terminate_at_get_batch",
     "interrupt", "exception", "handlers_change", "filters", "filtered_handlers_change",
     "counter_moved"],
)  # fmt: skip
@pytest.mark.parametrize("debug", [False, True])
def test_trainer_engine_fires_the_same_events_as_ignites_engine(scenario, debug, caplog):
    # create_trainer's engine runs its own copy of Ignite's loop over the data (engine.trainer._Engine):
    # every event, in the same order, with the same state, in every way a run can go.
    from ignite.engine import Engine

    from engine.trainer import _Engine

    caplog.set_level(logging.DEBUG if debug else logging.INFO, logger="ignite.engine.engine.Engine")  # DEBUG: Ignite's loop
    ours, ignites = _trace_run(_Engine, scenario), _trace_run(Engine, scenario)
    assert ours == ignites
    assert len(ours) > 10


def test_a_handler_swapped_for_a_wrapping_copy_at_started_is_called_through_the_copy(model, batches):
    # Ignite's HandlersTimeProfiler swaps each handler for a timing copy made with functools.wraps at
    # STARTED, which copies the every= mark _Engine leaves on Ignite's filter wrapper: the loop must
    # call the copy at each firing (it holds the filter), not the marked handler directly.
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    called, timed = [], []

    def every_two(engine):
        called.append(engine.state.iteration)

    def swap(engine):
        handlers = engine._event_handlers[Events.ITERATION_COMPLETED]
        for i, (func, args, kwargs) in enumerate(handlers):
            if getattr(func, "__wrapped__", None) is every_two:
                timing = functools.wraps(func)(lambda *a, _f=func, **k: (timed.append(a[0].state.iteration), _f(*a, **k)))
                handlers[i] = (timing, args, kwargs)

    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2), every_two)
    trainer.add_event_handler(Events.STARTED, swap)
    trainer.run(batches, max_epochs=1)  # 7 iterations
    assert called == [2, 4, 6]
    assert timed == [1, 2, 3, 4, 5, 6, 7]
