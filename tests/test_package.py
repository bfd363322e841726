"""Flint installs one top-level package, ``flint``: a user's own ``engine.py``, ``handlers.py`` or
``recipes.py`` cannot shadow it, in an editable install (the test environment's) or a wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import flint

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import torch
from torch.utils.data import TensorDataset

import engine, handlers, recipes  # the user's own modules, beside this script
import flint
from flint import fit

torch.manual_seed(0)
x = torch.randn(64, 3)
data = TensorDataset(x, (x[:, 0] > 0).long())
summary = fit(torch.nn.Linear(3, 2), data, data, output_dir="out", epochs=2, batch_size=16, lr=0.5, progress=False, device="cpu")
print(engine.MINE, handlers.MINE, recipes.MINE, summary["status"], flint.__file__)
"""


def _project_with_clashing_names(tmp_path: Path) -> Path:
    tmp_path.mkdir(exist_ok=True)
    for name in ("engine", "handlers", "recipes"):
        (tmp_path / f"{name}.py").write_text(f"MINE = {name!r}\n")
    (tmp_path / "train.py").write_text(SCRIPT)
    return tmp_path


def test_a_script_beside_its_own_engine_handlers_and_recipes_modules_trains(tmp_path):
    project = _project_with_clashing_names(tmp_path)
    result = subprocess.run([sys.executable, "train.py"], cwd=project, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[:4] == ["engine", "handlers", "recipes", "completed"]


def test_import_flint_gives_the_version_and_the_starting_names():
    assert flint.__version__ == __import__("importlib.metadata").metadata.version("flint")
    from flint.engine import create_evaluator, create_trainer
    from flint.recipes import Recipe, fit

    assert (flint.fit, flint.Recipe, flint.create_trainer, flint.create_evaluator) == (fit, Recipe, create_trainer, create_evaluator)


def test_a_recipe_file_of_the_old_layout_is_refused_in_one_line(tmp_path):
    old = tmp_path / "old_recipe.py"
    old.write_text("from recipes import Recipe\n\nRECIPE = Recipe('old', 'x', build_model=dict, datasets={'d': dict})\n")
    # Run where a user is: not in this checkout, whose folder holds a recipes/ (imported as it is, in the tests' own process)
    result = subprocess.run([sys.executable, "-m", "flint", "run", str(old)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert err == [f"flint: error: recipe {old} imports 'recipes': Flint's packages are flint.engine, flint.handlers and "
                   "flint.recipes (from flint.recipes import Recipe)"]  # fmt: skip


def test_the_wheel_holds_only_flint_and_runs_from_a_regular_install(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=900)  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("flint-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"flint", f"flint-{flint.__version__}.dist-info"}
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                               capture_output=True, text=True, timeout=900)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    project = _project_with_clashing_names(tmp_path / "project")
    # The regular install first on the path: it is the flint that runs, not the editable one of the test environment.
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "train.py"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    words = result.stdout.split()
    assert words[:4] == ["engine", "handlers", "recipes", "completed"] and words[4].startswith(str(target / "flint"))
