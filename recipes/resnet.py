"""Recipe ``resnet``: ResNet-18 for 32x32 images (3x3 stem, no max-pool), the CIFAR-10 variant."""

from __future__ import annotations

from torch import nn

from recipes.data import fake_images, torchvision_dataset
from recipes.registry import Recipe

__all__ = ["cifar_resnet18", "RECIPE"]


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with its 7x7 stride-2 stem and max-pool replaced for 32x32 inputs.

    Example:
        >>> import torch
        >>> cifar_resnet18()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    from torchvision.models import resnet18  # imported here: torchvision's models cost ~0.7 s to import

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


RECIPE = Recipe(
    name="resnet",
    description="ResNet-18 for 32x32 images (3x3 stem, no max-pool), BMXNet's image classification job",
    build_model=cifar_resnet18,
    datasets={
        "cifar10": lambda cfg: torchvision_dataset("cifar10", cfg.data_dir, cfg.download, not cfg.data_on_device),
        "fake": lambda cfg: fake_images((3, 32, 32)),
    },
    input_shape=(3, 32, 32),
    defaults={"epochs": 30, "batch_size": 128, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9, "wd": 5e-4},
)
