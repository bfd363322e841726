"""The built-in recipes' networks: LeNet (seed 002), the MLP (seed 004), seed 001's FFNN and a CIFAR ResNet-18."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LeNet", "MLP", "FFNN", "cifar_resnet18"]


class LeNet(nn.Module):
    """LeNet-5 for 1x28x28 images: two conv+ReLU+max-pool stages, then 120-84-10 with BatchNorm.

    Example:
        >>> LeNet()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(1, 6, 3, 1, 2), nn.ReLU(), nn.MaxPool2d(2, 2))  # 28 -> 30 -> 15
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2))  # 15 -> 11 -> 5
        self.fc1 = nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.BatchNorm1d(120), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), nn.BatchNorm1d(84), nn.ReLU(), nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        return self.fc2(self.fc1(x.flatten(1)))


class MLP(nn.Module):
    """Flatten, then ``in_features`` -> 512 -> 512 -> ``num_classes`` with ReLU between.

    Example:
        >>> MLP()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_features: int = 28 * 28, num_classes: int = 10) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.layers = nn.Sequential(
            nn.Linear(in_features, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))


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


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with its 7x7 stride-2 stem and max-pool replaced for 32x32 inputs.

    Example:
        >>> import torch
        >>> cifar_resnet18()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    from torchvision.models import resnet18  # imported here: a slow import (docs/performance.md)

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model
