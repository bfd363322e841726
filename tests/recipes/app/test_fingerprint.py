"""A run's fingerprint: its recipe file and data, recorded, compared on resume; a run directory names the code that is run."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from flint.recipes.app.cli import main
from flint.recipes.app.fingerprint import data_fingerprint, fingerprint_changes
from flint.recipes.app.fingerprint import recipe_file as file_of

RECIPE = '''
import torch
from torch.utils.data import TensorDataset
from flint.recipes import Recipe

SIZE = {size}


def data(cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SIZE, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long()), TensorDataset(x[:16], (x[:16, 0] > 0).long())


RECIPE = Recipe("tiny", "a tiny classifier", build_model=lambda: torch.nn.Linear(4, 2), datasets={{"made-up": data}},
                defaults={{"epochs": 3, "batch_size": 16, "lr": 0.1}})
'''
QUICK = ["--no-progress", "--device", "cpu"]


def recipe_file(tmp_path: Path, size: int = 64) -> Path:
    path = tmp_path / "tiny.py"
    path.write_text(RECIPE.format(size=size))
    return path


def test_the_data_fingerprint_sees_lengths_and_sample_values():
    x = torch.arange(12.0).reshape(6, 2)
    base = data_fingerprint(TensorDataset(x, torch.zeros(6)), None)
    assert base == data_fingerprint(TensorDataset(x.clone(), torch.zeros(6)), None)
    assert base != data_fingerprint(TensorDataset(x + 1, torch.zeros(6)), None)  # other values
    assert data_fingerprint(TensorDataset(x[:5], torch.zeros(5)), None)["train"] == 5
    assert fingerprint_changes(None, base) == [] and fingerprint_changes({"data": base}, {"data": base}) == []


def test_config_json_records_the_recipe_file_and_the_data(tmp_path):
    path = recipe_file(tmp_path)
    assert main(["run", str(path), *QUICK, "--epochs", "1", "-o", str(tmp_path / "run")]) == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["fingerprint"]
    assert recorded["recipe_file"] == str(path.resolve()) and len(recorded["recipe_sha256"]) == 64
    assert recorded["data"]["train"] == 64 and recorded["data"]["val"] == 16 and len(recorded["data"]["samples"]) == 6


def test_a_resume_refuses_a_recipe_or_data_that_changed_naming_what(tmp_path, capsys):
    path, out = recipe_file(tmp_path), tmp_path / "run"
    assert main(["run", str(path), *QUICK, "--interrupt-at", "1", "-o", str(out)]) == 3
    path.write_text(RECIPE.format(size=48))  # the data code edited between the stop and the resume
    before = (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flint: error: ") and err.count("\n") == 0
    assert f"the recipe file {path.resolve()} changed since the run in {out} started" in err
    assert main(["run", str(path), *QUICK, "--resume", "-o", str(out)]) == 2
    assert f"the recipe file {path.resolve()} changed" in (err := capsys.readouterr().err) and "the data changed (64 training samples, now 48)" in err
    assert (out / "metrics.jsonl").read_text() == before  # nothing written
    path.write_text(RECIPE.format(size=64))  # restored: the run continues
    assert main(["resume", str(out)]) == 0


def test_evaluate_runs_only_the_recipe_file_the_run_recorded(tmp_path, capsys):
    path, out = recipe_file(tmp_path), tmp_path / "run"
    assert main(["run", str(path), *QUICK, "--epochs", "1", "-o", str(out)]) == 0
    assert main(["evaluate", str(out), "--json"]) == 0
    path.write_text(RECIPE.format(size=64) + "\nprint('edited')\n")
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 2
    assert "changed since the run in" in capsys.readouterr().err
    evil = tmp_path / "evil.py"
    evil.write_text("raise SystemExit('evil code ran')\n")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "recipe": "evil.py"}))
    assert main(["evaluate", str(out)]) == 2
    assert capsys.readouterr().err == (f"flint: error: {out} names the recipe file evil.py by a relative path (flint run records an "
                                       "absolute one): refusing to run it\n")  # fmt: skip


def test_recipe_file_of_each_spec_form(tmp_path, monkeypatch):
    (tmp_path / "my_recipes_not_imported_yet.py").write_text("RECIPE = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert file_of("my_recipes_not_imported_yet:RECIPE") == tmp_path / "my_recipes_not_imported_yet.py"  # imported here
    assert file_of(str(tmp_path / "r.py")) == tmp_path / "r.py"
    assert file_of("lenet") is None and file_of("fit:mine.Net") is None
