"""Flint: the BMXNet training loop as PyTorch-Ignite engines and handlers.

``import flint`` imports no torch; the names below load their modules when first used:

- :func:`fit`, :func:`predict` and :class:`Recipe` (``flint.recipes``): train your own model, get its outputs, or describe a recipe;
- :func:`create_trainer` and :func:`create_evaluator` (``flint.engine``): compose your own loop.

The packages are ``flint.engine`` (the engines and Flint's events), ``flint.handlers`` (one concern
each) and ``flint.recipes`` (the built-in recipes and the application that runs them: ``flint``).

Example:
    >>> import flint
    >>> flint.__version__, flint.Recipe is __import__("flint.recipes", fromlist=["Recipe"]).Recipe
    ('0.2.0', True)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "fit", "predict", "Recipe", "create_trainer", "create_evaluator"]

_WHERE = {
    "fit": "flint.recipes",
    "predict": "flint.recipes",
    "Recipe": "flint.recipes",
    "create_trainer": "flint.engine",
    "create_evaluator": "flint.engine",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'flint' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
