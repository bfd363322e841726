"""Config files: `flint run RECIPE --config FILE` (JSON, YAML, TOML), `--print-config`, `@args.txt`, `fit(config=...)`."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from flint.recipes import fit
from flint.recipes.app.cli import main
from flint.recipes.app.config import resolve_config
from flint.recipes.app.config_file import file_options, format_options, given_in_file
from flint.recipes.app.registry import load_recipe

SAME = {
    "json": '{"epochs": 3, "lr": 0.02, "lr_steps": [1, 2], "lr_mode": "step", "lr_mult": {"fc": 0.5}, "nesterov": true}',
    "yaml": "epochs: 3\nlr: 2e-2\nlr_steps: [1, 2]\nlr_mode: step\nlr_mult:\n  fc: 0.5\nnesterov: true\n",
    "toml": 'epochs = 3\nlr = 0.02\nlr_steps = [1, 2]\nlr_mode = "step"\nlr_mult = {fc = 0.5}\nnesterov = true\n',
}


@pytest.mark.parametrize("fmt", list(SAME))
def test_json_yaml_and_toml_set_the_same_options(tmp_path, fmt):
    path = tmp_path / f"cfg.{fmt}"
    path.write_text(SAME[fmt])
    # YAML reads 2e-2 as a string: it is read as the command line reads --lr 2e-2
    assert file_options(path, "cli") == {"epochs": 3, "lr": 0.02, "lr_steps": [1, 2], "lr_mode": "step", "lr_mult": {"fc": 0.5}, "nesterov": True}


@pytest.mark.parametrize(
    "name,text,fragment",
    [
        ("cfg.json", '{"epochs": 3, "batch_sise": 8}', "cfg.json: unknown option 'batch_sise'; the options are "),
        ("cfg.yaml", "epochs: 0\n", "cfg.yaml: epochs: must be a positive integer up to 1,000,000, got 0"),
        ("cfg.toml", 'lr = "fast"\n', "cfg.toml: lr: 'fast' is not a number"),
        ("cfg.yaml", "optimizer: sgdd\n", "cfg.yaml: optimizer: choose from sgd, adam"),
        ("cfg.yaml", "optimizer: lbfgs\n", "cfg.yaml: optimizer: lbfgs is not supported: L-BFGS"),
        ("cfg.yaml", "- epochs\n", "cfg.yaml: must hold a mapping of options by name, not a list"),
        ("cfg.yaml", "epochs: [3\n", "cfg.yaml: not valid YAML: "),
        ("cfg.toml", "epochs = [\n", "cfg.toml: not valid TOML: "),
        ("cfg.ini", "epochs=3\n", "cfg.ini: unknown config format '.ini'; use .json, .yaml, .yml, .toml"),
        ("config.json", '{"loss": "custom:my.loss"}', "config.json: loss: 'custom:my.loss' was an object given to fit()"),
    ],
)
def test_a_bad_file_is_exit_2_in_one_line_naming_the_file_and_key_with_nothing_written(tmp_path, capsys, name, text, fragment):
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "run"
    assert main(["run", "lenet", "--config", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flint: error: ") and fragment in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_missing_file_and_a_missing_yaml_package_are_one_line_each(tmp_path, capsys, monkeypatch):
    assert main(["run", "lenet", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: cannot read it: No such file or directory" in capsys.readouterr().err
    (tmp_path / "cfg.yaml").write_text("epochs: 3\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    assert main(["run", "lenet", "--config", str(tmp_path / "cfg.yaml")]) == 2
    assert capsys.readouterr().err == f"flint: error: {tmp_path / 'cfg.yaml'}: YAML needs PyYAML: pip install pyyaml\n"


def test_flags_win_over_the_file_and_print_config_prints_the_resolved_options(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 3\nlr: 0.5\nbatch_size: 16\n")
    assert main(["run", "lenet", "--config", str(path), "--lr", "0.02", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["epochs"], printed["lr"], printed["batch_size"]) == (3, 0.02, 16)
    assert printed["dataset"] == "digits" and printed["lr_mode"] == "cosine"  # the recipe's defaults, resolved
    assert not {"recipe", "output_dir", "resume"} & set(printed)  # -o decides where a run goes
    assert not list(tmp_path.glob("runs"))  # nothing trained, nothing written


@pytest.mark.parametrize("fmt", ["json", "yaml", "toml"])
def test_print_config_round_trips_through_config(tmp_path, capsys, fmt):
    # ffnn's AdamW with momentum 0.9 (the default, unused): a file that repeats it is not refused as `--momentum` would be
    assert main(["run", "ffnn", "--lr-mult", "layers=0.5", "--print-config", fmt]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / f"cfg.{fmt}"
    path.write_text(printed)
    assert main(["run", "ffnn", "--config", str(path), "--print-config", fmt]) == 0
    assert capsys.readouterr().out == printed
    recipe = load_recipe("ffnn")
    options = file_options(path, "cli")
    assert resolve_config(recipe, options, typed=given_in_file(options, recipe)) == resolve_config(recipe, {"lr_mult": {"layers": 0.5}})


def test_a_previous_runs_config_json_repeats_it_with_one_change(tmp_path, capsys):
    a, b = tmp_path / "runs" / "a", tmp_path / "runs" / "b"
    assert main(["run", "lenet", "--test-run", "--epochs", "2", "--batch-size", "32", "--seed", "7", "-q", "-o", str(a)]) == 0
    assert main(["run", "lenet", "--config", str(a / "config.json"), "-o", str(b), "--lr", "0.02", "-q"]) == 0
    first, second = (json.loads((d / "config.json").read_text()) for d in (a, b))
    changed = {k for k in first if first[k] != second.get(k)}
    assert changed == {"lr", "output_dir", "started", "launched"}, changed
    assert second["lr"] == 0.02 and second["output_dir"] == str(b) and second["epochs"] == 2
    assert capsys.readouterr().err == ""  # -q: nothing but errors


def test_an_adam_option_given_in_a_file_is_refused_like_the_flag(tmp_path, capsys):
    path = tmp_path / "cfg.toml"
    path.write_text('optimizer = "adam"\nmomentum = 0.5\n')
    assert main(["run", "lenet", "--config", str(path), "--print-config"]) == 2
    assert "--momentum: adam takes no momentum" in capsys.readouterr().err


def test_args_from_a_file(tmp_path, capsys):
    (tmp_path / "args.txt").write_text("run\nlenet\n--epochs\n4\n")
    assert main([f"@{tmp_path / 'args.txt'}", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 4


def test_fit_takes_a_config_file_and_its_keywords_win(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, generator=g)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    config = tmp_path / "cfg.yaml"
    # a run's config.json holds the data options of a recipe: fit() trains on the data it is given and skips them
    config.write_text("epochs: 2\nbatch_size: 16\nlr: 0.5\noptimizer: adam\nmomentum: 0.9\ndataset: digits\n")
    summary = fit(torch.nn.Linear(3, 2), data, data, output_dir=tmp_path / "run", config=config, lr=0.01, progress=False, device="cpu")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert summary["epochs"] == 2 and (saved["batch_size"], saved["lr"], saved["optimizer"]) == (16, 0.01, "adam")
    with pytest.raises(ValueError, match=r"cfg.yaml: epochs: must be a positive integer"):
        config.write_text("epochs: -1\n")
        fit(torch.nn.Linear(3, 2), data, output_dir=tmp_path / "other", config=config)
    assert not (tmp_path / "other").exists()


def test_format_options_toml_leaves_out_what_it_cannot_spell(tmp_path):
    cfg = resolve_config(load_recipe("lenet"), {"clip_grad_norm": None, "lr_mult": {"conv1.0": 0.1}})
    text = format_options(cfg, "toml")
    assert "clip_grad_norm" not in text and 'lr_mult = {"conv1.0" = 0.1}' in text
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert file_options(path, "cli")["lr_mult"] == {"conv1.0": 0.1}


def test_the_yaml_example_of_the_docs_sets_what_it_says(tmp_path, capsys):
    import re

    from tests.conftest import REPO

    (block,) = re.findall(r"```yaml\n(.*?)```", (REPO / "docs" / "cli.md").read_text(), re.S)
    assert block.startswith("# lenet.yaml: flint run lenet --config lenet.yaml\n")
    (tmp_path / "lenet.yaml").write_text(block)
    assert main(["run", "lenet", "--config", str(tmp_path / "lenet.yaml"), "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {k: printed[k] for k in ("epochs", "batch_size", "lr", "lr_mode", "lr_steps")} == {
        "epochs": 5, "batch_size": 32, "lr": 0.02, "lr_mode": "step", "lr_steps": [3, 4]}  # fmt: skip
