"""Recipe ``ffnn``: seed 001's feed-forward regression network and its embedded data."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from recipes.data import fake_regression
from recipes.registry import Recipe

__all__ = ["FFNN", "RECIPE", "seed001_data", "seed001_split"]


class FFNN(nn.Module):
    """``num_hidden_layers`` Linear+ReLU layers of ``hidden_size``, then a linear output (seed 001).

    Example:
        >>> FFNN()(torch.zeros(4, 3)).shape
        torch.Size([4, 1])
    """

    def __init__(self, input_size: int = 3, num_hidden_layers: int = 2, hidden_size: int = 5, output_size: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_size
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU()]
            width = hidden_size
        self.ffnn = nn.Sequential(*layers, nn.Linear(width, output_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffnn(x)


def seed001_data(labels: torch.Tensor) -> TensorDataset:
    """Seed 001's regression data: for each label x, the input ``[0, log x, 5x]``."""
    labels = labels.to(torch.float32).reshape(-1, 1)
    inputs = torch.cat([torch.zeros_like(labels), torch.log(labels), labels * 5], dim=1)
    return TensorDataset(inputs, labels)


def seed001_split() -> tuple[TensorDataset, TensorDataset]:
    """Seed 001's 63 samples x = 1..63 for training; the 62 midpoints x = 1.5..62.5 for validation.

    Example:
        >>> train, val = seed001_split()
        >>> len(train), len(val), train[0][0].tolist(), val[0][1].tolist()
        (63, 62, [0.0, 0.0, 5.0], [1.5])
    """
    return seed001_data(torch.arange(1, 64)), seed001_data(torch.arange(1, 63) + 0.5)


RECIPE = Recipe(
    name="ffnn",
    description="seed 001's feed-forward regression (input [0, log x, 5x], label x), shows --update-cycle",
    build_model=FFNN,
    datasets={"seed001": lambda cfg: seed001_split(), "fake": lambda cfg: fake_regression(3)},
    defaults={"epochs": 100, "batch_size": 32, "lr": 0.01, "optimizer": "adamw", "wd": 0.0, "log_interval": 100},
    task="regression",
    input_shape=(3,),
)
