"""Recipe ``ffnn``: seed 001's feed-forward regression network and its embedded data."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

__all__ = ["FFNN", "seed001_data"]


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


def seed001_data(size: int = 63) -> TensorDataset:
    """Seed 001's regression data: label x = 1..size, input ``[0, log x, 5x]``."""
    labels = torch.arange(1, size + 1, dtype=torch.float32).unsqueeze(1)
    inputs = torch.cat([torch.zeros_like(labels), torch.log(labels), labels * 5], dim=1)
    return TensorDataset(inputs, labels)
