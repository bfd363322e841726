"""Optimizers and losses by name (seed 002's catalogue), and the parameter groups they act on."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from flint.recipes.app.config import DEFAULT_LOSS, LOSSES, OPTIMIZERS, REFUSED_OPTIMIZERS, UsageError, option_text
from flint.recipes.app.tasks import canonical_task

__all__ = ["OPTIMIZERS", "REFUSED_OPTIMIZERS", "LOSSES", "DEFAULT_LOSS", "make_optimizer", "make_loss", "param_groups"]

def param_groups(
    model: nn.Module, lr: float, lr_mult: dict[str, float], wd: float = 0.0, wd_all: bool = False, style: str = "cli"
) -> list[dict]:
    """Param groups: one at ``lr``, then one per ``lr_mult`` entry for parameters whose name contains it.

    A parameter goes to the first entry it matches (seed 001's per-group learning rates). With
    ``wd > 0`` and not ``wd_all``, each group is split in two: weight decay for weights, none for
    biases and normalisation parameters (every parameter of at most one dimension). An ``lr_mult`` name no
    parameter has is refused, named as ``style`` spells it.
    """
    by_key: dict[str | None, list[tuple[str, nn.Parameter]]] = {None: [], **{key: [] for key in lr_mult}}
    for name, p in model.named_parameters():
        by_key[next((key for key in lr_mult if key in name), None)].append((name, p))
    for key, named in by_key.items():
        if key is not None and not named:
            names = ", ".join(n for n, _ in model.named_parameters())
            raise UsageError(f"{option_text('lr_mult', {key: lr_mult[key]}, style)}: no parameter name contains {key!r}; names: {names}")
    groups = []
    for key, named in by_key.items():
        group_lr = lr if key is None else lr * lr_mult[key]
        if wd > 0 and not wd_all:
            decay = [p for _, p in named if p.dim() > 1]
            plain = [p for _, p in named if p.dim() <= 1]
            groups += [{"params": decay, "lr": group_lr, "weight_decay": wd}]
            groups += [{"params": plain, "lr": group_lr, "weight_decay": 0.0}]
        else:
            groups += [{"params": [p for _, p in named], "lr": group_lr, "weight_decay": wd}]
    return [g for g in groups if g["params"]]


def make_optimizer(
    name: str, groups: list[dict], *, lr: float, momentum: float = 0.0, nesterov: bool = False
) -> torch.optim.Optimizer:
    """The named ``torch.optim`` optimizer over ``groups`` (each carrying its own lr and weight decay)."""
    if name in REFUSED_OPTIMIZERS:
        raise UsageError(f"--optimizer {name}: not supported: {REFUSED_OPTIMIZERS[name]}; choose from {', '.join(OPTIMIZERS)}")
    if nesterov and (name != "sgd" or momentum <= 0):
        raise UsageError("--nesterov needs --optimizer sgd with a positive --momentum")
    if name == "rprop" and any(g["weight_decay"] for g in groups):
        raise UsageError("--optimizer rprop has no weight decay; pass --wd 0")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=momentum)
    if name == "rprop":
        return torch.optim.Rprop([{k: v for k, v in g.items() if k != "weight_decay"} for g in groups], lr=lr)
    classes = {
        "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adamax": torch.optim.Adamax,
        "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta, "asgd": torch.optim.ASGD,
        "nadam": torch.optim.NAdam, "radam": torch.optim.RAdam,
    }  # fmt: skip
    if name not in classes:
        raise UsageError(f"--optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}")
    return classes[name](groups, lr=lr)


class _NLLOnLogits(nn.Module):
    """NLL of the model's logits after log-softmax (the models output logits, not log-probabilities)."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(logits, dim=1), y)


class _OneHotBCEWithLogits(nn.Module):
    """Binary cross-entropy with logits against one-hot targets made from class indices (multiclass's bce-with-logits)."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, F.one_hot(y, logits.shape[1]).to(logits.dtype))


_LOSSES: dict[str, Callable[[float], nn.Module]] = {
    "cross-entropy": lambda smoothing: nn.CrossEntropyLoss(label_smoothing=smoothing),
    "nll": lambda _: _NLLOnLogits(),
    "bce-with-logits": lambda _: _OneHotBCEWithLogits(),
    "multi-margin": lambda _: nn.MultiMarginLoss(),
    "mse": lambda _: nn.MSELoss(),
    "l1": lambda _: nn.L1Loss(),
    "smooth-l1": lambda _: nn.SmoothL1Loss(),
    "huber": lambda _: nn.HuberLoss(),
}  # the names, by task, are flint.recipes.app.config.LOSSES


def make_loss(task: str, name: str, label_smoothing: float = 0.0) -> nn.Module:
    """The named loss for ``task``; refuses a loss that does not fit the task, listing those that do.

    Binary and multilabel's ``bce-with-logits`` takes the task's float 0/1 targets as they are
    (:class:`flint.recipes.app.task_metrics.TaskLoss` brings them to the output's shape).

    Example:
        >>> make_loss("regression", "huber"), make_loss("binary", "bce-with-logits")
        (HuberLoss(), BCEWithLogitsLoss())
    """
    task = canonical_task(task)
    choices = LOSSES[task]
    if name not in choices:
        raise UsageError(f"--loss {name!r} does not fit {task}; choose from {', '.join(choices)}")
    if label_smoothing and name != "cross-entropy":
        raise UsageError(f"--label-smoothing applies to --loss cross-entropy, not {name}")
    if name == "bce-with-logits" and task != "multiclass":
        return nn.BCEWithLogitsLoss()
    return _LOSSES[name](label_smoothing)
