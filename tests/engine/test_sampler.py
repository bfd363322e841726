import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from flint.engine import EpochSampler


def test_order_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    torch.rand(7)  # the global generator plays no part
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(EpochSampler(50, seed=4)) != list(EpochSampler(50, seed=3))


def test_skip_drops_a_prefix_of_the_next_pass_only():
    sampler = EpochSampler(10, seed=0)
    full = list(sampler)
    sampler.skip(6)
    assert list(sampler) == full[6:]
    assert list(sampler) == full
    assert len(sampler) == 10


def test_without_shuffle_the_order_is_the_dataset_order():
    assert list(EpochSampler(4, shuffle=False)) == [0, 1, 2, 3]


def test_a_dataloader_over_it_leaves_the_global_generator_alone():
    sampler = EpochSampler(16, seed=0)
    loader = DataLoader(TensorDataset(torch.arange(16)), batch_size=4, sampler=sampler, generator=sampler.generator)
    before = torch.get_rng_state()
    batches = [b[0].tolist() for b in loader]
    assert torch.equal(torch.get_rng_state(), before)  # a resumed run draws the same random numbers after this
    assert sum(batches, []) == list(sampler)


@pytest.mark.parametrize("bad", [-1, 1.5])
def test_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match=f"Argument size should be a non-negative integer, got {bad}"):
        EpochSampler(bad)
    with pytest.raises(ValueError, match=f"Argument n should be a non-negative integer, got {bad}"):
        EpochSampler(3).skip(bad)


def test_shards_together_are_one_process_order_in_larger_batches():
    whole = EpochSampler(10, seed=5)
    shards = [EpochSampler(10, seed=5, num_replicas=2, rank=r) for r in (0, 1)]
    for s in (whole, *shards):
        s.set_epoch(2)
    order = list(whole)
    assert [len(s) for s in shards] == [5, 5]
    a, b = list(shards[0]), list(shards[1])
    assert [x for pair in zip(a, b) for x in pair] == order  # batch k of both ranks = batch k of one process


def test_padding_gives_every_rank_as_many_samples_and_validation_counts_each_once():
    padded = [list(EpochSampler(5, shuffle=False, num_replicas=3, rank=r)) for r in range(3)]
    assert padded == [[0, 3], [1, 4], [2, 0]]
    plain = [list(EpochSampler(5, shuffle=False, num_replicas=3, rank=r, pad=False)) for r in range(3)]
    assert plain == [[0, 3], [1, 4], [2]] and sorted(sum(plain, [])) == list(range(5))
    assert [len(EpochSampler(5, shuffle=False, num_replicas=3, rank=r, pad=False)) for r in range(3)] == [2, 2, 1]
    with pytest.raises(ValueError, match="Argument rank should be in \\[0, 1\\], got 2"):
        EpochSampler(5, num_replicas=2, rank=2)
