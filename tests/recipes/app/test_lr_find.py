"""`flint lr-find`: Ignite's FastaiLRFinder on a recipe's training step; the curve as a PNG, the suggestion on stdout's last line."""

from __future__ import annotations

import math

import pytest

from flint.recipes.app.cli import main
from flint.recipes.app.config import UsageError
from flint.recipes.app.lr_find import LRSweep
from tests.recipes.app.tiny import tiny_recipe


def test_lr_find_prints_the_suggested_lr_last_and_writes_the_curve(tmp_path, capsys):
    out = tmp_path / "find"
    assert main(["lr-find", tiny_recipe(tmp_path), "--num-iter", "40", "--start-lr", "1e-5", "--end-lr", "100", "-o", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    suggested = float(printed[-1])
    assert math.isfinite(suggested) and 1e-5 <= suggested <= 100
    assert printed[0] == f"curve: {out / 'lr_find.png'}"
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["lr_find.png"]  # no run: nothing else written


def test_lr_find_refuses_what_a_sweep_does_not_take(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path)
    assert main(["lr-find", recipe, "--epochs", "3", "-o", str(tmp_path / "find")]) == 2
    assert capsys.readouterr().err.strip() == "flint: error: unrecognized arguments: --epochs 3"
    assert main(["lr-find", recipe, "--start-lr", "1", "--end-lr", "0.5", "-o", str(tmp_path / "find")]) == 2
    assert capsys.readouterr().err.strip() == "flint: error: --start-lr 1 must be below --end-lr 0.5"
    assert not (tmp_path / "find").exists()
    with pytest.raises(UsageError, match="--num-iter 2: must be an integer from 3 to 1,000,000"):
        LRSweep(num_iter=2)
