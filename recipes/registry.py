"""What a recipe is: a model, the datasets it trains on, and its default options."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from recipes.config import Config

__all__ = ["Recipe", "TASKS"]

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Recipe:
    name: str  # what `flint run NAME` takes
    description: str  # one line for `flint list`
    build_model: Callable[[], nn.Module]  # a fresh, randomly initialised model
    datasets: Mapping[str, Callable[[Config], tuple[Dataset, Dataset]]]  # name -> (train, val); first is default
    defaults: Mapping[str, Any] = field(default_factory=dict)  # Config fields this recipe sets differently
    task: str = "classification"  # one of TASKS: decides the metrics and the monitored one
    input_shape: tuple[int, ...] = (1, 28, 28)  # one sample's shape, for export

    @property
    def default_dataset(self) -> str:
        return next(iter(self.datasets))
