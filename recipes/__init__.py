"""Flint's recipes: ready training jobs run with ``flint run NAME`` (or ``python -m recipes run NAME``)."""

from recipes import ffnn, lenet, mlp, resnet
from recipes.registry import Recipe

__all__ = ["RECIPES", "Recipe"]

RECIPES: dict[str, Recipe] = {r.name: r for r in (lenet.RECIPE, mlp.RECIPE, resnet.RECIPE, ffnn.RECIPE)}
