import pytest
import torch
from torch import nn

from flint.recipes.app.config import UsageError
from flint.recipes.builtin.models import LeNet
from flint.recipes.app.optim import LOSSES, OPTIMIZERS, make_loss, make_optimizer, param_groups


def names_of(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_spares_biases_and_batchnorm_unless_asked():
    model = LeNet()
    decay, plain = param_groups(model, 0.1, {}, wd=5e-4)
    assert decay["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert names_of(model, decay) == {"conv1.0.weight", "conv2.0.weight", "fc1.0.weight", "fc2.0.weight", "fc2.3.weight"}
    assert "fc1.1.weight" in names_of(model, plain) and "conv1.0.bias" in names_of(model, plain)  # BatchNorm, bias
    (everything,) = param_groups(model, 0.1, {}, wd=5e-4, wd_all=True)
    assert len(everything["params"]) == len(list(model.parameters())) and everything["weight_decay"] == 5e-4


def test_lr_mult_groups_are_split_for_weight_decay_too():
    groups = param_groups(LeNet(), 0.1, {"fc2": 0.5}, wd=1e-4)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(0.1, 1e-4), (0.1, 0.0), (0.05, 1e-4), (0.05, 0.0)]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_takes_a_step(name):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    wd = 0.0 if name == "rprop" else 1e-4
    opt = make_optimizer(name, param_groups(model, 0.1, {}, wd=wd), lr=0.1, momentum=0.9 if name in ("sgd", "rmsprop") else 0.0)
    nn.functional.mse_loss(model(torch.randn(4, 3)), torch.randn(4, 2)).backward()
    opt.step()
    assert not torch.equal(model.weight, before)


def test_refusals_say_why():
    groups = param_groups(nn.Linear(3, 2), 0.1, {})
    with pytest.raises(UsageError, match="L-BFGS re-evaluates the loss several times per step through a closure"):
        make_optimizer("lbfgs", groups, lr=0.1)
    with pytest.raises(UsageError, match="--nesterov needs --optimizer sgd with a positive --momentum"):
        make_optimizer("sgd", groups, lr=0.1, momentum=0.0, nesterov=True)


@pytest.mark.parametrize("name", sorted(LOSSES["multiclass"]))
def test_multiclass_losses_take_logits_and_class_indices(name):
    logits = torch.randn(5, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 0])
    loss = make_loss("multiclass", name)(logits, y)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_nll_on_logits_is_cross_entropy_and_smoothing_changes_it():
    logits, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    ce = make_loss("classification", "cross-entropy")(logits, y)  # classification: multiclass's other name
    assert torch.allclose(make_loss("classification", "nll")(logits, y), ce)
    assert not torch.allclose(make_loss("classification", "cross-entropy", 0.1)(logits, y), ce)


@pytest.mark.parametrize("name", sorted(LOSSES["regression"]))
def test_regression_losses(name):
    loss = make_loss("regression", name)(torch.zeros(3, 1), torch.full((3, 1), 2.0))
    assert loss.item() > 0


def test_binary_and_multilabel_bce_takes_float_targets_of_the_output_shape():
    logits, y = torch.tensor([[0.3, -1.0], [2.0, 0.1]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert torch.equal(make_loss("multilabel", "bce-with-logits")(logits, y), expected)
    assert torch.equal(make_loss("binary", "bce-with-logits")(logits[:, 0], y[:, 0]),
                       torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0]))  # fmt: skip


def test_a_loss_of_the_other_task_is_refused_with_the_choices():
    with pytest.raises(UsageError, match="--loss 'huber' does not fit multiclass; choose from cross-entropy, nll"):
        make_loss("classification", "huber")
    with pytest.raises(UsageError, match="--loss 'cross-entropy' does not fit binary; choose from bce-with-logits"):
        make_loss("binary", "cross-entropy")
    with pytest.raises(UsageError, match="--label-smoothing applies to --loss cross-entropy, not nll"):
        make_loss("classification", "nll", 0.1)


def test_the_torch_free_lr_modes_are_the_schedules():
    from flint.handlers import LR_MODES
    from flint.recipes.app import config

    assert config.LR_MODES == tuple(LR_MODES)  # the CLI names them without importing torch
