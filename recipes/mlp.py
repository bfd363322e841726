"""Recipe ``mlp``: seed 004's fully connected network, Flatten then 512-512-10 with ReLU."""

from recipes.registry import Recipe, lazy

__all__ = ["RECIPE"]

RECIPE = Recipe(
    name="mlp",
    description="seed 004's fully connected 784-512-512-10 network, image classification",
    build_model=lazy("recipes.models:MLP"),
    datasets={
        "digits": lazy("recipes.data:digits_for"),
        "fashion-mnist": lazy("recipes.data:torchvision_for", "fashion-mnist"),
        "mnist": lazy("recipes.data:torchvision_for", "mnist"),
        "fake": lazy("recipes.data:fake_images_for", (1, 28, 28)),
    },
    defaults={"epochs": 10, "batch_size": 32, "lr": 0.05, "lr_mode": "cosine", "optimizer": "sgd", "momentum": 0.9, "wd": 1e-4},
)
