import pytest
import torch

from flint.recipes import RECIPES
from flint.recipes.builtin.data import DOWNLOADABLE, digits
from flint.recipes.builtin.models import LeNet
from flint.recipes.app.config import UsageError
from flint.recipes.app.optim import param_groups


def test_digits_are_a_fixed_disjoint_split_of_28x28_images():
    train, val = digits()
    assert (len(train), len(val)) == (1438, 359)
    x, y = train.tensors
    assert x.shape == (1438, 1, 28, 28) and y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3  # standardised on train
    again_train, again_val = digits()
    assert torch.equal(val.tensors[0], again_val.tensors[0])
    flat_train, flat_val = x.flatten(1), val.tensors[0].flatten(1)
    assert not any(torch.equal(flat_val[0], row) for row in flat_train)


def test_lr_mult_puts_matching_parameters_in_their_own_groups():
    model = LeNet()
    groups = param_groups(model, 0.1, {"fc2": 0.1, "conv": 2.0})
    assert [g["lr"] for g in groups] == [0.1, pytest.approx(0.01), 0.2]
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("fc1") for p in groups[0]["params"])
    assert all("fc2" in names[id(p)] for p in groups[1]["params"])
    assert all("conv" in names[id(p)] for p in groups[2]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_lr_mult_matching_nothing_is_a_usage_error():
    with pytest.raises(UsageError, match="no parameter name contains 'head'"):
        param_groups(LeNet(), 0.1, {"head": 0.5})


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_runs_a_batch_of_each_embedded_dataset(name):
    recipe = RECIPES[name]
    for dataset in set(recipe.datasets) - set(DOWNLOADABLE):
        train, val = recipe.datasets[dataset](None)
        x, y = train[0]
        out = recipe.build_model().eval()(torch.as_tensor(x).unsqueeze(0))
        expected = (1, 10) if recipe.task == "multiclass" else (1, 1)
        assert out.shape == expected and torch.isfinite(out).all() and len(val) > 0


def test_ffnn_data_is_seed_001s():
    from flint.recipes.builtin.data import seed001_split

    train, val = seed001_split()
    x, y = train.tensors
    assert torch.equal(x[:, 1], torch.log(y[:, 0])) and torch.equal(x[:, 2], 5 * y[:, 0]) and y[-1].item() == 63
