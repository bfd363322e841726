"""The training job's first step runs the recipe's own code and checks what it returns, before anything is written."""

from __future__ import annotations

import pytest

from flint.recipes.app.cli import main

RECIPE = '''
import torch
from torch.utils.data import TensorDataset
from flint.recipes import Recipe


def pair(cfg):
    x = torch.randn(32, 4)
    return TensorDataset(x, (x[:, 0] > 0).long()), None


def one(cfg):
    return pair(cfg)[0]


def net():
    return torch.nn.Linear(4, 2)


def not_a_model():
    return "x"


{recipe}
'''


@pytest.mark.parametrize(
    "recipe,message",
    [
        ('RECIPE = Recipe("bad", "d", build_model=not_a_model, datasets={"d": pair})',
         "recipe bad: build_model() returned a str, not a torch.nn.Module"),
        ('RECIPE = Recipe("bad", "d", build_model=net, datasets={"d": one})',
         "recipe bad: datasets['d'](cfg) returned a TensorDataset; it must return a pair (training set, validation set or None)"),
        ('RECIPE = Recipe("bad", "d", build_model=net, datasets={"d": pair}, defaults={"epoch": 3})',
         "recipe bad's defaults: unknown option 'epoch'; the options are"),
        ('RECIPE = Recipe("../../evil", "d", build_model=net, datasets={"d": pair})',
         "failed to load: ValueError: Argument name should be a plain name (letters, digits, '_', '-', '.'; no path), got '../../evil'"),
        ("import sys\nsys.exit(0)\nRECIPE = None", "failed to load: SystemExit: 0"),
    ],
    ids=["model", "datasets", "defaults", "name", "exit"],
)
def test_what_a_recipe_returns_is_checked_in_one_line_and_nothing_is_written(tmp_path, capsys, recipe, message):
    path = tmp_path / "bad.py"
    path.write_text(RECIPE.format(recipe=recipe))
    assert main(["run", str(path), "--no-progress", "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flint: error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists()
