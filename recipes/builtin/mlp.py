"""Recipe ``mlp``: seed 004's fully connected network, Flatten then 512-512-10 with ReLU."""

from flint.recipes.app.registry import Recipe, lazy

__all__ = ["RECIPE"]

RECIPE = Recipe(
    name="mlp",
    description="seed 004's fully connected 784-512-512-10 network, image classification",
    build_model=lazy("flint.recipes.builtin.models:MLP"),
    datasets={
        "digits": lazy("flint.recipes.builtin.data:digits_for"),
        "fashion-mnist": lazy("flint.recipes.builtin.data:torchvision_for", "fashion-mnist"),
        "mnist": lazy("flint.recipes.builtin.data:torchvision_for", "mnist"),
        "fake": lazy("flint.recipes.builtin.data:fake_images_for", (1, 28, 28)),
    },
    task="multiclass",
    defaults={"epochs": 10, "batch_size": 32, "lr": 0.05, "lr_mode": "cosine", "optimizer": "sgd", "momentum": 0.9, "wd": 1e-4},
)
