import pytest
import torch
from ignite.engine import Engine
from torch.utils.data import DataLoader, TensorDataset

from flint.engine import EpochSampler
from flint.handlers import DataOrder


def recording_run(sampler, state=None, max_epochs=3):
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=3, sampler=sampler)
    seen = []
    engine = Engine(lambda e, b: seen.append((e.state.epoch, b[0].tolist())))
    DataOrder(sampler, batch_size=3).attach(engine)
    if state is not None:
        engine.load_state_dict(state)
    engine.run(loader, max_epochs=max_epochs)
    return seen


def test_each_epoch_gets_its_own_order():
    seen = recording_run(EpochSampler(10, seed=1))
    epochs = [sum((b for e, b in seen if e == epoch), []) for epoch in (1, 2, 3)]
    assert all(sorted(order) == list(range(10)) for order in epochs)
    assert epochs[0] != epochs[1] != epochs[2]


@pytest.mark.parametrize("stopped_at", [1, 4, 6, 9])
def test_a_resume_mid_epoch_continues_with_the_same_batches(stopped_at):
    straight = recording_run(EpochSampler(10, seed=1))  # 4 batches an epoch, the last of one sample
    resumed = recording_run(EpochSampler(10, seed=1), {"iteration": stopped_at, "epoch_length": 4, "max_epochs": 3})
    assert resumed == straight[stopped_at:]


def test_resuming_mid_epoch_needs_a_sampler_that_can_skip():
    class EpochOnly:
        def set_epoch(self, epoch):
            self.epoch = epoch

    engine = Engine(lambda e, b: None)
    DataOrder(EpochOnly()).attach(engine)
    engine.load_state_dict({"iteration": 1, "epoch_length": 2, "max_epochs": 2})
    with pytest.raises(RuntimeError, match="resuming mid-epoch needs a sampler with skip"):
        engine.run([0, 1])


def test_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="Argument batch_size should be a positive integer, got 0"):
        DataOrder(EpochSampler(3), batch_size=0)
