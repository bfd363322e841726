"""A recipe file of one's own for the application's tests: three classes of made-up points, trained in about a second."""

from __future__ import annotations

from pathlib import Path

TINY = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset

from flint.recipes import Recipe


def made_up(cfg):
    x = torch.randn(300, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return TensorDataset(x[:240], y[:240]), TensorDataset(x[240:], y[240:])


class NanModel(nn.Linear):
    def forward(self, x):
        return super().forward(x) * float("nan")


RECIPE = Recipe("tiny", "three classes of my own", build_model=lambda: nn.Linear(4, 3), datasets={"made-up": made_up},
                input_shape=(4,), defaults={"epochs": 2, "batch_size": 16, "lr": 0.05}, classes=["low", "mid", "high"],
                normalization=(0.0, 1.0))
WIDER = Recipe("tiny", "the same data, a wider model", build_model=lambda: nn.Linear(4, 5), datasets={"made-up": made_up},
               input_shape=(4,), defaults={"epochs": 2, "batch_size": 16})
NAN = Recipe("tiny", "a model whose outputs are NaN", build_model=lambda: NanModel(4, 3), datasets={"made-up": made_up},
             defaults={"epochs": 2, "batch_size": 16, "log_interval": 1})
'''


def tiny_recipe(folder: Path) -> str:
    """A recipe file of one's own (RECIPE, with classes and normalization; WIDER; NAN), trained in about a second."""
    path = folder / "tiny_recipe.py"
    path.write_text(TINY)
    return str(path)
