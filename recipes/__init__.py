"""Flint's recipes: ready training jobs (``flint run NAME``), your own (``flint run file.py``), and :func:`fit` and :func:`predict` in Python.

Importing this package imports no torch: the command line starts at once.
"""

from flint.recipes.app.fit import fit
from flint.recipes.app.predict import predict
from flint.recipes.app.registry import Recipe, builtin_recipes, load_recipe

__all__ = ["RECIPES", "Recipe", "fit", "load_recipe", "predict"]

RECIPES: dict[str, Recipe] = builtin_recipes()
