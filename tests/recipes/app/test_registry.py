"""Your own recipes in the CLI: a file, a module, an installed package's entry point; flint resume and flint evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flint

from flint.handlers import Checkpointing
from flint.recipes.app.cli import main
from tests.conftest import REPO

TIMING = ("epoch_time", "samples_per_sec", "avg_epoch_time", "wall_time", "model_tflops")

RECIPE_FILE = '''"""A recipe of my own: a small classifier on made-up data."""

import torch
from torch import nn
from torch.utils.data import TensorDataset

from flint.recipes import Recipe


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


def made_up(cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])


RECIPE = Recipe("tiny", "a tiny classifier of my own", build_model=Tiny, datasets={"made-up": made_up}, input_shape=(4,),
                defaults={"epochs": 4, "batch_size": 8, "lr": 0.1, "log_interval": 2})
ADAM = Recipe("tiny-adam", "the same with Adam", build_model=Tiny, datasets={"made-up": made_up}, input_shape=(4,),
              defaults={"epochs": 2, "batch_size": 8, "lr": 0.01, "optimizer": "adam", "log_interval": 2})
NOT_A_RECIPE = 42
'''


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_recipe.py"
    path.write_text(RECIPE_FILE)
    return path


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def trained(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records(run_dir) if r["phase"] not in ("resume", "summary")]


def final_weights(run_dir: Path) -> dict:
    return torch.load(Checkpointing.find_latest(run_dir / "checkpoints"), weights_only=True)["model"]


def test_a_recipe_file_trains_stops_and_resumes_exactly(tmp_path, recipe_file, capsys):
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main(["run", str(recipe_file), "--no-progress", "-o", str(straight)]) == 0
    assert main(["run", str(recipe_file), "--no-progress", "--interrupt-at", "2", "-o", str(broken)]) == 3
    assert main(["resume", str(broken)]) == 0  # everything from config.json
    assert trained(broken) == trained(straight) and [r["epoch"] for r in records(straight) if r["phase"] == "validation"] == [1, 2, 3, 4]
    a, b = final_weights(straight), final_weights(broken)
    assert all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((broken / "config.json").read_text())
    assert config["recipe"] == str(recipe_file.resolve()) and config["dataset"] == "made-up" and config["batch_size"] == 8
    # report and export work for it too
    capsys.readouterr()
    assert main(["report", str(broken)]) == 0 and (broken / "report.png").is_file()
    assert main(["export", str(broken), "--format", "state_dict"]) == 0
    meta = json.loads((broken / "model.state_dict.json").read_text())
    assert meta["recipe"] == "tiny" and meta["input_shape"] == [4]


def test_a_named_recipe_of_a_file_or_a_module(tmp_path, recipe_file, monkeypatch):
    assert main(["run", f"{recipe_file}:ADAM", "--no-progress", "-o", str(tmp_path / "file")]) == 0
    config = json.loads((tmp_path / "file" / "config.json").read_text())
    assert config["optimizer"] == "adam" and config["recipe"] == f"{recipe_file.resolve()}:ADAM"
    monkeypatch.syspath_prepend(str(recipe_file.parent))
    assert main(["run", "my_recipe:ADAM", "--no-progress", "--epochs", "1", "-o", str(tmp_path / "module")]) == 0
    assert json.loads((tmp_path / "module" / "config.json").read_text())["recipe"] == "my_recipe:ADAM"


@pytest.mark.parametrize(
    "spec,message",
    [
        ("{dir}/missing.py", "recipe {dir}/missing.py: no such file {dir}/missing.py"),
        ("{file}:NOT_A_RECIPE", "recipe {file}:NOT_A_RECIPE: NOT_A_RECIPE is a int, not a flint.recipes.Recipe; it defines ADAM, RECIPE"),
        ("{file}:NOPE", "recipe {file}:NOPE: NOPE is no Recipe; it defines ADAM, RECIPE"),
        ("{dir}/empty.py", "recipe {dir}/empty.py: RECIPE is no Recipe; it defines no flint.recipes.Recipe"),
        ("{dir}/broken.py", "recipe {dir}/broken.py: {dir}/broken.py failed to load (line 1): SyntaxError:"),
        ("no_such_module:RECIPE", "recipe no_such_module:RECIPE: cannot import no_such_module: No module named 'no_such_module'"),
        ("lenett", "unknown recipe 'lenett': choose from lenet, mlp, resnet, ffnn"),
    ],
)
def test_a_recipe_that_is_not_there_is_a_usage_error_with_nothing_written(tmp_path, recipe_file, capsys, spec, message):
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "broken.py").write_text("def (:\n")
    spec, message = (t.format(dir=tmp_path, file=recipe_file) for t in (spec, message))
    assert main(["run", spec, "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"flint: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_an_installed_package_adds_its_recipe_through_an_entry_point(tmp_path):
    # An installed distribution as importlib.metadata finds one: a package and its dist-info on the path.
    site = tmp_path / "site"
    (site / "mytiny").mkdir(parents=True)
    (site / "mytiny" / "__init__.py").write_text(RECIPE_FILE.replace('Recipe("tiny"', 'Recipe("mytiny"'))
    info = site / "mytiny-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mytiny\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flint.recipes]\nmytiny = mytiny:RECIPE\n")
    env = {**os.environ, "PYTHONPATH": str(site)}

    def flint(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flint", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)

    listed = flint("list")
    assert listed.returncode == 0 and "mytiny  a tiny classifier of my own [dataset: made-up]" in listed.stdout
    assert listed.stdout.splitlines()[0].startswith("lenet")  # the built-ins first
    run = flint("run", "mytiny", "--epochs", "2", "--no-progress", "-o", "out")
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "out" / "config.json").read_text())["recipe"] == "mytiny"
    assert flint("resume", "out", "--epochs", "3").returncode == 0  # --epochs may grow
    assert [r["epoch"] for r in records(tmp_path / "out") if r["phase"] == "validation"] == [1, 2, 3]


def test_flint_evaluate_reproduces_the_recorded_validation(tmp_path, recipe_file, capsys):
    run = tmp_path / "run"
    assert main(["run", str(recipe_file), "--no-progress", "-o", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    recorded = {r["epoch"]: r for r in records(run) if r["phase"] == "validation"}[result["epoch"]]
    assert result["checkpoint"].startswith(str(run / "checkpoints" / f"best_checkpoint_{result['epoch']}_accuracy="))
    assert (result["loss"], result["accuracy"]) == (recorded["loss"], recorded["accuracy"])
    latest = Checkpointing.find_latest(run / "checkpoints")
    assert main(["evaluate", str(latest)]) == 0  # a checkpoint file: that one
    text = capsys.readouterr().out
    assert f"checkpoint   {latest}" in text and "epoch        4" in text and f"accuracy     {recorded['accuracy']:.4f}"[:9] in text


def test_flint_resume_needs_a_run_directory(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"flint: error: resume {tmp_path}: no config.json there: not a run directory of flint run\n"


def test_flint_version(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out == f"flint {flint.__version__}\n"
