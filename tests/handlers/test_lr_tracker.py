import pytest
import torch
from ignite.engine import Events
from ignite.handlers import LRScheduler

from flint.engine import TrainEvents, create_trainer
from flint.handlers import LRTracker


def test_tracks_every_param_group_at_epoch_start_and_every_n(model, batches, collector):
    opt = torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.01}], lr=0.1
    )
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    LRTracker(opt, collector, every=5).attach(trainer)
    trainer.run(batches, max_epochs=2)
    points = [(r["epoch"], r["iteration"], r["samples"]) for r in collector.phase("lr")]
    assert points == [(1, 1, 4), (1, 5, 20), (2, 8, 30), (2, 10, 38)]  # each at its step, after its batch
    assert all(r["lr"] == [0.1, 0.01] for r in collector.records)


def test_records_the_lr_a_scheduler_set_for_the_epoch(model, batches, collector):
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    LRTracker(opt, collector, every=None).attach(trainer)  # attached before the scheduler: still reads its LR
    scheduler = LRScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    trainer.add_event_handler(Events.EPOCH_STARTED, scheduler)
    trainer.run(batches, max_epochs=3)
    assert [r["lr"] for r in collector.records] == [[1.0], [0.5], [0.25]]


def test_records_the_first_step_lr_of_a_per_iteration_schedule(model, batches, collector):
    from functools import partial

    from flint.handlers import LRSchedule, lr_multiplier

    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    LRTracker(opt, collector, every=None).attach(trainer)  # before the schedule, which runs at ITERATION_STARTED
    multiplier = partial(lr_multiplier, mode="step", steps_per_epoch=7, epochs=3, milestones=[1, 2], factor=0.5)
    LRSchedule(opt, multiplier).attach(trainer)
    used = []
    trainer.add_event_handler(TrainEvents.BEFORE_OPTIMIZER_STEP, lambda e: used.append(opt.param_groups[0]["lr"]))
    trainer.run(batches, max_epochs=3)
    assert [r["lr"] for r in collector.records] == [[used[0]], [used[7]], [used[14]]] == [[1.0], [0.5], [0.25]]


def test_one_record_per_epoch_start_on_data_of_unknown_length_and_none_for_a_resumed_epoch(model, batches, collector):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    LRTracker(opt, collector, every=None).attach(trainer)
    trainer.run(iter(batches), max_epochs=1)  # the length is unknown until the data ends
    assert [r["iteration"] for r in collector.records] == [1]

    state = trainer.state_dict()
    state.update(iteration=3, epoch_length=7, max_epochs=2)  # as if saved in the middle of epoch 1
    resumed = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    resumed.load_state_dict(state)
    LRTracker(opt, collector, every=None).attach(resumed)
    resumed.run(batches)
    assert [r["iteration"] for r in collector.records] == [1, 8]


def test_custom_events(model, batches, collector):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    LRTracker(opt, collector).attach(trainer, Events.EPOCH_COMPLETED)
    trainer.run(batches, max_epochs=2)
    assert [r["epoch"] for r in collector.records] == [1, 2]


def test_rejects_negative_interval(model):
    with pytest.raises(ValueError, match="every should be a non-negative integer or None, got -1"):
        LRTracker(torch.optim.SGD(model.parameters(), lr=0.1), None, every=-1)  # type: ignore[arg-type]


def test_every_counts_optimizer_steps_on_a_flint_trainer(model, batches, collector):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy, accumulation_steps=2)
    LRTracker(opt, collector, every=3).attach(trainer)
    trainer.run(batches, max_epochs=2)  # 7 batches an epoch: steps at iterations 2, 4, 6, 7, 9, 11, 13, 14
    assert [r["iteration"] for r in collector.records] == [2, 6, 9, 11]  # each epoch's first step; steps 3 and 6
