"""Data forms: each trains through fit() as the equivalent dataset of (input, target) pairs does; others are refused."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from flint.engine import EpochSampler
from flint.recipes import fit
from flint.recipes.app.data_forms import KeywordBatch, KeywordInputs

OPTIONS = {"epochs": 2, "batch_size": 16, "lr": 0.05, "progress": False, "device": "cpu", "log_interval": 1000}
g = torch.Generator().manual_seed(0)
X = torch.randn(96, 4, generator=g)
Y = (X[:, 0] > 0).long() + (X[:, 1] > 0).long()


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class KeywordNet(Net):
    """Takes its inputs by name, as Hugging Face models do."""

    def forward(self, features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.fc(features * scale[:, None])


class Records(Dataset):
    """Samples as mappings: the target under "label", the rest the model's keyword arguments."""

    def __len__(self) -> int:
        return len(X)

    def __getitem__(self, i: int) -> dict:
        return {"features": X[i], "scale": torch.tensor(1.0), "label": Y[i]}


class Stream(IterableDataset):
    def __len__(self) -> int:
        return len(X)

    def __iter__(self):
        return iter(zip(X, Y))


def trained(tmp_path, name: str, train, val=None, net: type[Net] = Net, **kwargs) -> torch.Tensor:
    torch.manual_seed(0)
    model = net()
    fit(model, train, val, output_dir=tmp_path / name, **{**OPTIONS, **kwargs})
    return model.fc.weight.detach()


def test_each_form_trains_as_the_equivalent_dataset_of_pairs(tmp_path):
    pairs = TensorDataset(X, Y)
    expected = trained(tmp_path, "pairs", pairs, pairs)
    sampler = EpochSampler(len(X), seed=42)  # the order Flint gives a dataset of the run's seed (42)
    forms = {
        "tensors": ((X, Y), (X, Y), {}),
        "numpy": ((X.numpy(), Y.numpy()), (X.numpy(), Y.numpy()), {}),
        "mappings": (Records(), Records(), {"net": KeywordNet, "target_key": "label"}),
        "loader": (DataLoader(pairs, batch_size=16, sampler=sampler, generator=sampler.generator), DataLoader(pairs, batch_size=8), {}),
        "prepare_batch": (pairs, pairs, {"prepare_batch": lambda batch, device, non_blocking: (batch[0].to(device), batch[1].to(device))}),
    }
    for name, (train, val, kwargs) in forms.items():
        assert torch.equal(trained(tmp_path, name, train, val, **kwargs), expected), name


@pytest.mark.slow
def test_mappings_on_two_spawned_workers_train_as_pairs_do(tmp_path):
    pairs = TensorDataset(X, Y)
    expected = trained(tmp_path, "pairs", pairs, pairs, nproc_per_node=2)
    mappings = trained(tmp_path, "mappings", Records(), Records(), net=KeywordNet, target_key="label", nproc_per_node=2)
    assert torch.allclose(mappings, expected, rtol=0, atol=1e-5)  # two runs on spawned workers differ in the last bits already


def test_an_iterable_dataset_trains_in_its_own_order_as_a_loader_of_the_same_batches(tmp_path):
    in_order = DataLoader(TensorDataset(X, Y), batch_size=16)
    assert torch.equal(trained(tmp_path, "stream", Stream(), Stream()), trained(tmp_path, "loader", in_order, in_order))


def test_a_loader_of_yours_resumed_at_an_epoch_end_continues_as_an_unbroken_run(tmp_path):
    def loader() -> DataLoader:
        return DataLoader(TensorDataset(X, Y), batch_size=16, shuffle=True)  # its order drawn from torch's RNG, restored on resume

    options = {"epochs": 3}
    unbroken = trained(tmp_path, "unbroken", loader(), **options)
    trained(tmp_path, "resumed", loader(), interrupt_at=1, **options)
    assert torch.equal(trained(tmp_path, "resumed", loader(), resume=True, **options), unbroken)


@pytest.mark.parametrize(
    "train,options,message",
    [
        (Records(), {"data_on_device": True, "target_key": "label"}, "data_on_device takes datasets of (input, target) pairs, not mappings"),
        (DataLoader(TensorDataset(X, Y)), {"nproc_per_node": 2}, "nproc_per_node 2 needs map-style datasets, which Flint shards among the "
                                                                 "workers: a DataLoader would feed every worker the same batches"),
        (type("Endless", (IterableDataset,), {"__iter__": lambda self: iter(())})(), {}, "train_data: an IterableDataset needs __len__"),
        ({"x": X, "target": Y}, {}, "train_data: a dict is not data Flint takes; give a Dataset of (input, target) pairs or of mappings"),
    ],
)
def test_forms_the_options_cannot_take_are_refused_before_anything_is_written(tmp_path, train, options, message):
    with pytest.raises(ValueError) as error:
        fit(Net(), train, output_dir=tmp_path / "run", **{**OPTIONS, **options})
    assert str(error.value).startswith(message), str(error.value)
    assert not (tmp_path / "run").exists()


def test_mapping_batches_move_with_their_target_apart_and_reach_the_model_by_keyword():
    features, target = KeywordBatch("label")({"features": X[:2], "scale": torch.ones(2), "label": Y[:2]}, "cpu")
    assert sorted(features) == ["features", "scale"] and torch.equal(target, Y[:2])
    torch.manual_seed(0)
    net = KeywordNet()
    assert torch.equal(KeywordInputs(net)(features), net(**features))
    with pytest.raises(ValueError, match=r"a batch has no key 'label' \(its keys: features\); name the target's key with target_key="):
        KeywordBatch("label")({"features": X[:2]})
