"""Recipe ``lenet``: seed 002's LeNet with BatchNorm, on the embedded handwritten digits by default."""

from recipes.registry import Recipe, lazy

__all__ = ["RECIPE"]

RECIPE = Recipe(
    name="lenet",
    description="LeNet-5 with BatchNorm (seed 002), image classification",
    build_model=lazy("recipes.models:LeNet"),
    datasets={
        "digits": lazy("recipes.data:digits_for"),
        "mnist": lazy("recipes.data:torchvision_for", "mnist"),
        "fashion-mnist": lazy("recipes.data:torchvision_for", "fashion-mnist"),
        "fake": lazy("recipes.data:fake_images_for", (1, 28, 28)),
    },
    defaults={"epochs": 10, "batch_size": 64, "lr": 0.05, "lr_mode": "cosine", "optimizer": "sgd", "momentum": 0.9, "wd": 1e-4},
)
