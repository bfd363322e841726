"""Recipe ``lenet``: seed 002's LeNet with BatchNorm, on the embedded handwritten digits by default."""

from flint.recipes.app.registry import Recipe, lazy

__all__ = ["RECIPE"]

RECIPE = Recipe(
    name="lenet",
    description="LeNet-5 with BatchNorm (seed 002), image classification",
    build_model=lazy("flint.recipes.builtin.models:LeNet"),
    datasets={
        "digits": lazy("flint.recipes.builtin.data:digits_for"),
        "mnist": lazy("flint.recipes.builtin.data:torchvision_for", "mnist"),
        "fashion-mnist": lazy("flint.recipes.builtin.data:torchvision_for", "fashion-mnist"),
        "fake": lazy("flint.recipes.builtin.data:fake_images_for", (1, 28, 28)),
    },
    task="multiclass",
    defaults={"epochs": 10, "batch_size": 64, "lr": 0.05, "lr_mode": "cosine", "optimizer": "sgd", "momentum": 0.9, "wd": 1e-4},
)
