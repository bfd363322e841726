"""Recipe ``ffnn``: seed 001's feed-forward regression network and its embedded data."""

from flint.recipes.app.registry import Recipe, lazy

__all__ = ["RECIPE"]

RECIPE = Recipe(
    name="ffnn",
    description="seed 001's feed-forward regression (input [0, log x, 5x], label x), shows --update-cycle",
    build_model=lazy("flint.recipes.builtin.models:FFNN"),
    datasets={"seed001": lazy("flint.recipes.builtin.data:seed001_for"), "fake": lazy("flint.recipes.builtin.data:fake_regression_for", 3)},
    defaults={"epochs": 100, "batch_size": 32, "lr": 0.01, "optimizer": "adamw", "wd": 0.0, "log_interval": 100},
    task="regression",
    input_shape=(3,),
)
