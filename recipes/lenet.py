"""Recipe ``lenet``: seed 002's LeNet with BatchNorm, on handwritten digits by default."""

from __future__ import annotations

import torch
from torch import nn

from recipes.data import digits, fake_images, torchvision_dataset
from recipes.registry import Recipe

__all__ = ["LeNet", "RECIPE"]


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


RECIPE = Recipe(
    name="lenet",
    description="LeNet-5 with BatchNorm (seed 002), image classification",
    build_model=LeNet,
    datasets={
        "digits": lambda cfg: digits(),
        "mnist": lambda cfg: torchvision_dataset("mnist", cfg.data_dir, cfg.download, not cfg.data_on_device),
        "fashion-mnist": lambda cfg: torchvision_dataset("fashion-mnist", cfg.data_dir, cfg.download, not cfg.data_on_device),
        "fake": lambda cfg: fake_images((1, 28, 28)),
    },
    defaults={"epochs": 10, "batch_size": 64, "lr": 0.05, "lr_mode": "cosine", "optimizer": "sgd", "momentum": 0.9, "wd": 1e-4},
)
