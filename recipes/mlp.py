"""Recipe ``mlp``: seed 004's fully connected network, Flatten then 512-512-10 with ReLU."""

from __future__ import annotations

import torch
from torch import nn

from recipes.data import digits, fake_images, torchvision_dataset
from recipes.registry import Recipe

__all__ = ["MLP", "RECIPE"]


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


RECIPE = Recipe(
    name="mlp",
    description="seed 004's fully connected 784-512-512-10 network, image classification",
    build_model=MLP,
    datasets={
        "digits": lambda cfg: digits(),
        "fashion-mnist": lambda cfg: torchvision_dataset("fashion-mnist", cfg.data_dir, cfg.download, not cfg.data_on_device),
        "mnist": lambda cfg: torchvision_dataset("mnist", cfg.data_dir, cfg.download, not cfg.data_on_device),
        "fake": lambda cfg: fake_images((1, 28, 28)),
    },
    defaults={"epochs": 10, "batch_size": 32, "lr": 0.05, "lr_mode": "cosine", "optimizer": "sgd", "momentum": 0.9, "wd": 1e-4},
)
