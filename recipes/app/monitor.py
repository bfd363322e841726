"""The monitored metric: the validation metric that picks the best checkpoint and drives early stopping.

One type owns what ``--monitor NAME[:min|max]`` means: its syntax, the direction of each metric Flint
knows, the task's default, and the summary record's keys for the best value. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Monitor", "DIRECTIONS"]

# The direction of every metric Flint computes by name: higher is better ("max") or lower ("min").
DIRECTIONS: dict[str, str] = {
    "accuracy": "max", "top5": "max", "precision": "max", "recall": "max", "f1": "max", "roc_auc": "max",
    "average_precision": "max", "r2": "max", "loss": "min", "mae": "min", "mse": "min", "rmse": "min",
}  # fmt: skip

_SYNTAX = "must be NAME or NAME:min or NAME:max, e.g. loss:min"


@dataclass(frozen=True)
class Monitor:
    """A validation metric and its direction: ``Monitor("accuracy", "max")``.

    Example:
        >>> Monitor.parse("", "multiclass"), Monitor.parse("loss", "multiclass").text, Monitor.parse("f1:min", "binary").mode
        (Monitor(name='accuracy', mode='max'), 'loss:min', 'min')
        >>> Monitor("loss", "min").better(0.2, 0.3), Monitor("accuracy", "max").better(float("nan"), None)
        (True, False)
    """

    name: str
    mode: str  # "max" or "min"

    @staticmethod
    def problem(text: Any, known: Mapping[str, str] = DIRECTIONS) -> str | None:
        """What is wrong with a ``NAME[:min|max]`` text (``""`` is the task's default), or None.

        A name without a direction must be one whose direction is ``known``."""
        if not isinstance(text, str):
            return _SYNTAX
        name, _, mode = text.partition(":")
        if text and (not name or mode not in ("", "min", "max")):
            return _SYNTAX
        if name and not mode and name not in known:
            return f"the direction of {name} is not known: give {name}:max or {name}:min"
        return None

    @classmethod
    def parse(cls, text: str, task: str, known: Mapping[str, str] = DIRECTIONS) -> Monitor:
        """The monitor ``text`` names (:meth:`problem` must be None); ``""`` is ``task``'s default.

        Raises:
            ValueError: ``text`` is not ``NAME[:min|max]``, or names a metric of unknown direction without one.
        """
        problem = cls.problem(text, known)
        if problem is not None:
            raise ValueError(f"monitor {text!r}: {problem}")
        if not text:
            return cls("loss", "min") if task == "regression" else cls("accuracy", "max")
        name, _, mode = text.partition(":")
        return cls(name, mode or known[name])

    @property
    def text(self) -> str:
        """``NAME:mode``, as ``config.json`` and the summary record keep it."""
        return f"{self.name}:{self.mode}"

    def better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` beats ``than`` (None: nothing yet); NaN never does."""
        if not isinstance(value, (int, float)) or math.isnan(value):
            return False
        return than is None or (value > than if self.mode == "max" else value < than)

    @classmethod
    def of(cls, text: Any) -> Monitor | None:
        """The monitor a ``config.json`` or summary record names, or None (the task's default, or a bad value)."""
        return cls.parse(text, "") if text and cls.problem(text) is None else None
