"""Recipe ``resnet``: ResNet-18 for 32x32 images (3x3 stem, no max-pool), the CIFAR-10 variant."""

from flint.recipes.app.registry import Recipe, lazy

__all__ = ["RECIPE"]

RECIPE = Recipe(
    name="resnet",
    description="ResNet-18 for 32x32 images (3x3 stem, no max-pool), BMXNet's image classification job",
    build_model=lazy("flint.recipes.builtin.models:cifar_resnet18"),
    datasets={
        "cifar10": lazy("flint.recipes.builtin.data:torchvision_for", "cifar10"),
        "fake": lazy("flint.recipes.builtin.data:fake_images_for", (3, 32, 32)),
    },
    input_shape=(3, 32, 32),
    task="multiclass",
    defaults={"epochs": 30, "batch_size": 128, "lr": 0.1, "optimizer": "sgd", "momentum": 0.9, "wd": 5e-4},
)
