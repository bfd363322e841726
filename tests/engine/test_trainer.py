import copy
import math

import pytest
import torch
from ignite.engine import Events

from flint.engine import TrainEvents, TrainProgress, create_evaluator, create_trainer, progress, registered_states


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
    assert progress(trainer).optimizer_step == 6 and state.iteration == 14


def test_train_event_handlers_changed_during_a_step_take_effect_at_the_next_firing(model, batches):
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


def test_the_progress_counts_samples_and_steps_and_is_registered_for_checkpoints(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    assert trainer.state_dict() == {"epoch_length": None, "iteration": 0, "max_epochs": None}  # before a run too
    trainer.run(batches, max_epochs=3)
    counts = progress(trainer)
    assert registered_states(trainer)["train_progress"] is counts
    assert (counts.samples, counts.optimizer_step, counts.epoch_samples) == (78, 21, 26)
    saved = counts.state_dict()
    assert (saved["samples"], saved["optimizer_step"], saved["epoch_samples"]) == (78, 21, 26)
    assert saved["loss_sum"].shape == (1,)  # one value per rank
    assert set(trainer.state_dict()) == {"epoch_length", "iteration", "max_epochs"}  # Ignite's own


def test_resumed_trainer_keeps_its_counts(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    trainer.run(batches, max_epochs=1)
    saved = {"trainer": trainer.state_dict(), "progress": progress(trainer).state_dict()}
    resumed = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    resumed.load_state_dict(saved["trainer"])
    progress(resumed).load_state_dict(saved["progress"])
    fired = []
    resumed.add_event_handler(TrainEvents.OPTIMIZER_STEPPED(every=5), lambda e: fired.append(progress(e).optimizer_step))
    resumed.run(batches, max_epochs=2)
    assert progress(resumed).samples == 52 and progress(resumed).optimizer_step == 14
    assert fired == [10]  # filters count the loaded optimizer steps too


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


def test_a_wrapped_model_is_back_in_train_mode_after_an_evaluator_ran_the_plain_module(model, batches):
    # As under DDP: the trainer runs the wrapper, the evaluator the plain module; eval() on the plain
    # module leaves the wrapper's own flag True (DataParallel on CPU wraps the same way, with .module).
    wrapper = torch.nn.DataParallel(model)
    trainer = create_trainer(wrapper, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    evaluator = create_evaluator(model)
    modes = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: modes.append(model.training))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: evaluator.run(batches[:1]))
    trainer.run(batches, max_epochs=1)
    assert len(modes) == 7 and all(modes) and wrapper.training


def test_each_rank_resumes_with_its_own_running_loss_and_another_world_size_with_the_total(model, batches):
    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    trainer.run(batches, max_epochs=1)
    counts = progress(trainer)
    saved = counts.state_dict()
    assert torch.equal(saved["loss_sum"], counts.loss_sum.reshape(1))  # one rank: its own
    again = TrainProgress()
    again.load_state_dict(saved)
    assert again.loss_sum.ndim == 0 and torch.equal(again.loss_sum, counts.loss_sum)
    again.load_state_dict({**saved, "loss_sum": torch.tensor([1.5, 2.25])})  # saved by two ranks, loaded by one
    assert again.loss_sum.ndim == 0 and float(again.loss_sum) == 3.75
    assert again.epoch_loss() == (3.75, 26)


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


def test_ignites_lr_finder_runs_on_the_trainer_and_restores_trainer_model_and_optimizer(model, batches):
    from ignite.handlers import FastaiLRFinder

    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    before = trainer.state_dict()
    finder = FastaiLRFinder()
    to_save = {"model": model, "optimizer": opt}
    with finder.attach(trainer, to_save, output_transform=lambda out: out["loss"], start_lr=1e-4, end_lr=100.0, num_iter=60) as tuning:
        tuning.run(batches, max_epochs=10)
    tried = finder.get_results()["lr"]
    suggestion = finder.lr_suggestion()
    assert len(tried) > 10 and math.isfinite(suggestion) and min(tried) <= suggestion <= max(tried)
    assert 1e-4 <= min(tried) < 1e-3 and max(tried) > 1.0  # it swept from the start up to a diverging LR

    # As Ignite promises: the trainer, the model and the optimizer are as before the search...
    assert trainer.state_dict() == before
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    assert opt.param_groups[0]["lr"] == 0.01 and not opt.state
    # ...so training now is training from the start: the same weights as a fresh trainer's.
    trainer.run(batches, max_epochs=2)
    fresh_opt = torch.optim.SGD(reference.parameters(), lr=0.01, momentum=0.9)
    create_trainer(reference, fresh_opt, torch.nn.functional.cross_entropy).run(batches, max_epochs=2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    assert progress(trainer).samples == 52 and progress(trainer).optimizer_step == 14


def test_the_module_inside_ddp_and_compile_wrappers_is_found(model):
    from flint.engine.trainer import _unwrapped

    assert _unwrapped(torch.compile(torch.nn.DataParallel(model))) is model  # torch.compile(DDP(model)) as the CLI builds it
