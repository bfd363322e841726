import pytest
import torch
from ignite.engine import Events
from ignite.metrics import Accuracy
from torch.utils.data import DataLoader, TensorDataset

from flint.engine import EpochSampler, RNGState, create_evaluator, create_trainer, progress, seed_everything
from flint.handlers import BatchLogger, CheckpointError, Checkpointing, DataOrder, EpochMetrics, EpochTimer, Preemption, Validation
from flint.handlers.checkpoint_io import CHECKSUM_KEY, checksum, read_state
from tests.handlers.test_checkpoint_io import flip_inside


def make_run(tmp_path, metric="accuracy", mode="max"):
    """A real small training run: shuffled DataLoader, dropout, SGD with momentum, validation."""
    seed_everything(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    evaluator = create_evaluator(model, {"accuracy": Accuracy()})
    Validation(evaluator, DataLoader(TensorDataset(x, y), batch_size=16)).attach(trainer)
    to_save = {"model": model, "optimizer": opt, "trainer": trainer, "rng": RNGState()}
    ckpt = Checkpointing(tmp_path, to_save, metric=metric, mode=mode).attach(trainer, evaluator)
    return trainer, loader, model, evaluator, ckpt


def test_keeps_two_latest_and_the_best(tmp_path):
    trainer, loader, _, evaluator, ckpt = make_run(tmp_path)
    scores = []
    evaluator.add_event_handler(Events.COMPLETED, lambda e: scores.append(e.state.metrics["accuracy"]))
    trainer.run(loader, max_epochs=5)
    best_epoch = max(range(5), key=lambda i: (scores[i], -i)) + 1  # the first epoch with the top score
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["checkpoint_20.pt", "checkpoint_25.pt", f"best_checkpoint_{best_epoch}_accuracy={max(scores):.4f}.pt"])
    assert (ckpt.best.epoch, ckpt.best.value) == (best_epoch, max(scores))
    assert Checkpointing.find_latest(tmp_path).name == "checkpoint_25.pt"
    for path in tmp_path.iterdir():
        state = torch.load(path, weights_only=True)  # plain data only
        assert {"model", "optimizer", "trainer", "rng", "best_score"} <= set(state)


def test_resume_from_an_epoch_boundary_is_bit_exact(tmp_path):
    straight, loader, straight_model, _, _ = make_run(tmp_path / "straight")
    straight.run(loader, max_epochs=4)

    first, loader, _, _, _ = make_run(tmp_path / "interrupted")
    first.run(loader, max_epochs=2)
    torch.rand(5)  # the new process's RNGs are elsewhere; the checkpoint must put them back

    resumed, loader, resumed_model, _, ckpt = make_run(tmp_path / "interrupted")
    ckpt.load(Checkpointing.find_latest(tmp_path / "interrupted"))
    assert resumed.state.epoch == 2 and progress(resumed).samples == 80
    resumed.run(loader, max_epochs=4)
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    # Rotation carried over: the resumed run removed the first run's older files.
    assert sorted(p.name for p in (tmp_path / "interrupted").glob("checkpoint_*")) == ["checkpoint_15.pt", "checkpoint_20.pt"]


def test_best_score_survives_a_resume(tmp_path):
    trainer, loader, _, _, ckpt = make_run(tmp_path, metric="accuracy")
    trainer.run(loader, max_epochs=3)
    best = (ckpt.best.epoch, ckpt.best.value)
    _, _, _, _, again = make_run(tmp_path)
    again.load(Checkpointing.find_latest(tmp_path))
    assert (again.best.epoch, again.best.value) == best
    assert again.best_checkpoint._saved == ckpt.best_checkpoint._saved


def test_min_mode_keeps_the_lowest(tmp_path):
    trainer, loader, _, evaluator, ckpt = make_run(tmp_path, metric="accuracy", mode="min")
    scores = []
    evaluator.add_event_handler(Events.COMPLETED, lambda e: scores.append(e.state.metrics["accuracy"]))
    trainer.run(loader, max_epochs=4)
    assert ckpt.best.value == min(scores)
    (best,) = tmp_path.glob("best_checkpoint_*")
    assert best.name == f"best_checkpoint_{ckpt.best.epoch}_accuracy={min(scores):.4f}.pt"  # the value, not negated


def test_truncated_checkpoint_is_named_in_the_error(tmp_path):
    trainer, loader, _, _, ckpt = make_run(tmp_path)
    trainer.run(loader, max_epochs=1)
    path = Checkpointing.find_latest(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} is truncated or corrupt"):
        ckpt.load(path)


class RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "checkpoint_1.pt"
    torch.save({"model": RunsCode()}, evil)
    _, _, _, _, ckpt = make_run(tmp_path / "run")
    with pytest.raises(CheckpointError, match="checkpoint .*checkpoint_1.pt holds a pickled posix.system object"):
        ckpt.load(evil)
    assert not (tmp_path / "pwned").exists()
    torch.load(evil, weights_only=False)  # proof the file is what it claims: an unsafe load runs it
    assert (tmp_path / "pwned").exists()


def test_a_checkpoint_missing_an_object_is_refused(tmp_path):
    torch.save({"model": torch.nn.Linear(4, 16).state_dict()}, tmp_path / "partial.pt")
    _, _, _, _, ckpt = make_run(tmp_path / "run")
    with pytest.raises(CheckpointError, match="lacks optimizer, trainer, rng"):
        ckpt.load(tmp_path / "partial.pt")


def test_find_latest_orders_by_iteration_not_name(tmp_path):
    for name in ["checkpoint_9.pt", "checkpoint_10.pt", "best_checkpoint_99_accuracy=1.0000.pt", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert Checkpointing.find_latest(tmp_path).name == "checkpoint_10.pt"
    assert Checkpointing.find_latest(tmp_path / "missing") is None


def test_rejects_bad_counts(tmp_path):
    with pytest.raises(ValueError, match="n_latest should be a positive integer, got 0"):
        Checkpointing(tmp_path, {}, n_latest=0)


def test_save_frequency_keeps_the_last_epoch_and_a_stop(tmp_path, model, batches):
    from flint.engine import create_trainer

    trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    Checkpointing(tmp_path, {"model": model, "trainer": trainer}, n_latest=10, every=3).attach(trainer)
    trainer.run(batches, max_epochs=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_21.pt", "checkpoint_42.pt", "checkpoint_49.pt"]

    stopped = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy)
    # Terminating before the checkpoint handler runs, as EarlyStopping does during validation.
    stopped.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())
    Checkpointing(tmp_path / "stop", {"model": model, "trainer": stopped}, every=3).attach(stopped)
    stopped.run(batches, max_epochs=7)
    assert [p.name for p in (tmp_path / "stop").iterdir()] == ["checkpoint_14.pt"]


def make_mid_epoch_run(tmp_path, stream):
    """A run whose every piece of state is checkpointed: data order, metrics, logger and timer too."""
    seed_everything(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    sampler = EpochSampler(40, seed=0)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, sampler=sampler, generator=sampler.generator)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.3), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = create_trainer(model, opt, torch.nn.functional.cross_entropy)
    DataOrder(sampler, batch_size=8).attach(trainer)
    ticks = iter(range(10**6))
    ckpt = Checkpointing(tmp_path, {"model": model, "optimizer": opt, "trainer": trainer, "rng": RNGState()}).attach(trainer)
    # Attached after Checkpointing and not in to_save: their states reach the checkpoints by themselves.
    EpochTimer(clock=lambda: float(next(ticks))).attach(trainer)
    EpochMetrics({"accuracy": Accuracy()}, stream).attach(trainer)
    BatchLogger(stream, every=3).attach(trainer)
    return trainer, loader, model, ckpt


def test_resume_from_mid_epoch_is_bit_exact_with_the_same_records(tmp_path, collector):
    straight, loader, straight_model, _ = make_mid_epoch_run(tmp_path / "straight", collector)
    straight.run(loader, max_epochs=3)

    broken = type(collector)()
    first, loader, _, ckpt = make_mid_epoch_run(tmp_path / "broken", broken)
    stop = Preemption().attach(first)
    first.add_event_handler(Events.ITERATION_STARTED(once=7), lambda _: stop.request())  # epoch 2, batch 2 of 5
    first.run(loader, max_epochs=3)
    assert first.state.iteration == 7 and Checkpointing.find_latest(tmp_path / "broken").name == "checkpoint_7.pt"
    saved = torch.load(tmp_path / "broken" / "checkpoint_7.pt", weights_only=True)
    assert {"batch_logger", "epoch_timer", "training_metrics"} <= set(saved)
    torch.rand(5)

    resumed, loader, resumed_model, ckpt = make_mid_epoch_run(tmp_path / "broken", broken)
    assert ckpt.load_latest_valid().name == "checkpoint_7.pt"
    resumed.run(loader, max_epochs=3)
    for a, b in zip(straight_model.parameters(), resumed_model.parameters()):
        assert torch.equal(a, b)
    drop = ("samples_per_sec", "epoch_time")
    assert [{k: v for k, v in r.items() if k not in drop} for r in broken.records] == [
        {k: v for k, v in r.items() if k not in drop} for r in collector.records
    ]
    assert len(collector.phase("batch")) == 5 and len(collector.phase("training")) == 3


def test_the_newest_unreadable_checkpoint_is_kept_aside_and_the_previous_one_loaded(tmp_path, caplog):
    trainer, loader, _, _, ckpt = make_run(tmp_path)
    trainer.run(loader, max_epochs=2)
    newest = Checkpointing.find_latest(tmp_path)
    newest.write_bytes(newest.read_bytes()[:500])
    _, _, _, _, ckpt = make_run(tmp_path)
    assert ckpt.load_latest_valid().name == "checkpoint_5.pt"
    assert "is truncated or corrupt" in caplog.text and "trying the previous checkpoint" in caplog.text
    assert (tmp_path / "checkpoint_10.pt.corrupt").exists() and not newest.exists()
    for path in Checkpointing.find_all(tmp_path):
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"no checkpoint in {tmp_path} can be loaded"):
        ckpt.load_latest_valid()
    assert make_run(tmp_path / "empty")[-1].load_latest_valid() is None


def test_every_checkpoint_carries_its_checksum_and_a_mismatch_falls_back_like_truncation(tmp_path, caplog):
    trainer, loader, model, _, ckpt = make_run(tmp_path)
    trainer.run(loader, max_epochs=2)
    ckpt.wait()
    for path in tmp_path.iterdir():  # latest and best
        state = torch.load(path, weights_only=True)
        assert state[CHECKSUM_KEY] == checksum(state)
    newest = Checkpointing.find_latest(tmp_path)
    flip_inside(newest, model[0].weight.detach())  # the weights it holds are those of the model now
    _, _, resumed_model, _, ckpt = make_run(tmp_path)
    assert ckpt.load_latest_valid().name == "checkpoint_5.pt"
    assert f"checkpoint {newest} is corrupt: its content does not match its checksum; trying the previous checkpoint" in caplog.text
    assert (tmp_path / "checkpoint_10.pt.corrupt").exists() and not newest.exists()
    previous = torch.load(tmp_path / "checkpoint_5.pt", weights_only=True)["model"]
    assert all(torch.equal(previous[k], v) for k, v in resumed_model.state_dict().items())


def test_to_save_may_not_use_checkpointings_own_keys(tmp_path):
    with pytest.raises(ValueError, match="Argument to_save should not use the keys 'best_score', 'checksum': Checkpointing writes its own there"):
        Checkpointing(tmp_path, {"model": torch.nn.Linear(1, 1), "checksum": RNGState(), "best_score": RNGState()})


def test_a_readable_checkpoint_of_another_run_is_an_error_not_set_aside(tmp_path):
    trainer, loader, _, _, ckpt = make_run(tmp_path)
    trainer.run(loader, max_epochs=1)
    other = Checkpointing(tmp_path, {"model": torch.nn.Linear(4, 16), "extra": RNGState()})
    with pytest.raises(CheckpointError, match="lacks extra"):
        other.load_latest_valid()
    assert [p.name for p in tmp_path.glob("checkpoint_*")] == ["checkpoint_5.pt"]  # kept as it was


def test_a_handler_the_saving_run_did_not_have_starts_afresh_with_a_warning(tmp_path, caplog, collector):
    trainer, loader, _, _, _ = make_run(tmp_path)
    trainer.run(loader, max_epochs=1)
    again, _, _, _, ckpt = make_run(tmp_path)
    logger = BatchLogger(collector, every=2).attach(again)  # registers its state; the checkpoint has none
    ckpt.load(Checkpointing.find_latest(tmp_path))
    assert again.state.iteration == 5 and logger.state_dict() == {"loss_total": 0.0, "samples": 0}
    assert "holds no state for batch_logger: it starts afresh" in caplog.text


def test_a_checkpoint_of_the_layout_before_train_progress_loads_its_counts_without_a_warning(tmp_path, caplog):
    # Then the trainer's counts were in the trainer's entry and each rank's running loss in "loss_sums".
    trainer, loader, _, _, ckpt = make_run(tmp_path / "new")
    trainer.run(loader, max_epochs=2)
    saved = read_state(Checkpointing.find_latest(tmp_path / "new"))
    counts = saved.pop("train_progress")
    old = {**saved, "trainer": {**saved["trainer"], **{k: counts[k] for k in ("samples", "optimizer_step", "epoch_samples")},
                                "loss_sum": torch.tensor(9.0)},
           "loss_sums": {"loss_sum": counts["loss_sum"]}}  # fmt: skip
    (tmp_path / "old").mkdir()
    torch.save(old, tmp_path / "old" / "checkpoint_10.pt")
    resumed, _, _, _, ckpt = make_run(tmp_path / "old")
    ckpt.load(tmp_path / "old" / "checkpoint_10.pt")
    loaded = progress(resumed)
    assert (loaded.samples, loaded.optimizer_step, loaded.epoch_samples) == (80, 10, 40)
    assert torch.equal(loaded.loss_sum, counts["loss_sum"][0])  # this rank's from loss_sums, not the trainer entry's
    assert "holds no state for train_progress" not in caplog.text
