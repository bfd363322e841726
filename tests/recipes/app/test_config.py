"""The run's options: each option's facts in its declaration, checks against what each value feeds, before anything is written."""

import argparse
import dataclasses

import pytest

from flint.recipes import RECIPES
from flint.recipes.app.config import (
    FLOAT32_MAX,
    Config,
    RunConfig,
    UsageError,
    config_changes,
    option_fields,
    option_name,
    resolve_config,
)

LENET, FFNN = RECIPES["lenet"], RECIPES["ffnn"]


def test_the_recipes_defaults_then_the_options_given():
    cfg = resolve_config(LENET, {"epochs": 3})
    assert (cfg.recipe, cfg.epochs, cfg.lr, cfg.dataset, cfg.output_dir, cfg.loss) == ("lenet", 3, 0.05, "digits", "runs/lenet", "cross-entropy")
    assert resolve_config(FFNN, {}).loss == "mse"


@pytest.mark.parametrize(
    "given,cli,python",
    [
        ({"lr": 1e39}, "--lr 1e+39: must be a finite number > 0 and <= 3.40282e+38", "lr=1e+39: must be a finite number"),
        ({"wd": 1e39}, "--wd 1e+39: must be a finite number >= 0 and <= 3.40282e+38", "wd=1e+39"),
        ({"warmup_lr": 1e39}, "--warmup-lr 1e+39: must be", "warmup_lr=1e+39"),
        ({"lr_mult": {"fc": 1e308}}, "--lr-mult fc=1e+308: factors must be finite numbers > 0", "lr_mult={'fc': 1e+308}"),
        ({"lr": 10.0, "lr_mult": {"fc": 1e38}}, "--lr-mult fc=1e+38: --lr 10 times fc=1e+38 exceeds 3.40282e+38", "lr_mult={'fc': 1e+38}: lr=10.0"),
        ({"batch_size": 10**20}, "--batch-size 100000000000000000000: must be a positive integer up to 16,777,216", "batch_size=10"),
        ({"epochs": 0}, "--epochs 0: must be a positive integer", "epochs=0"),
        ({"lr": float("inf")}, "--lr inf: must be a finite number", "lr=inf"),
        ({"momentum": 1.5}, "--momentum 1.5: must be a finite number >= 0 and <= 1", "momentum=1.5"),
        ({"num_workers": -1}, "--num-workers -1: must be a non-negative integer", "num_workers=-1"),
        ({"seed": -1}, "--seed -1: must be an integer from 0 to 2**63-1", "seed=-1"),
        ({"monitor": "loss:up"}, "--monitor loss:up: must be NAME or NAME:min or NAME:max", "monitor='loss:up'"),
        ({"monitor": "mae"}, "--monitor mae: multiclass validates loss, accuracy", "monitor='mae'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option_as_its_caller_spells_it(given, cli, python):
    with pytest.raises(UsageError) as error:
        resolve_config(LENET, given)
    assert str(error.value).startswith(cli), error.value
    with pytest.raises(UsageError) as error:
        resolve_config(LENET, given, style="python")
    assert str(error.value).startswith(python), error.value


def test_float32_max_itself_passes_and_unknown_options_are_named():
    assert resolve_config(LENET, {"lr": FLOAT32_MAX}).lr == FLOAT32_MAX
    with pytest.raises(UsageError, match="unknown option 'frob'"):
        resolve_config(LENET, {"frob": 1})


def test_options_that_combine_badly_are_refused():
    for given, message in [
        ({"optimizer": "adam", "momentum": 0.5}, "--momentum: adam takes no momentum (it applies to sgd, rmsprop)"),
        ({"epochs": 3, "interrupt_at": 3}, "--interrupt-at 3: must be below --epochs 3"),
        ({"lr_mode": "step"}, "--lr-mode step needs --lr-steps"),
        ({"batch_size": 63, "nproc_per_node": 2}, "--batch-size 63 is global: it must divide among 2 workers"),
        ({"loss": "mse"}, "--loss mse does not fit multiclass"),
        ({"task": "binary"}, "--task binary: recipe lenet sets its task, multiclass"),
        ({"metrics": ["top5", "r2"]}, "--metrics top5,r2: r2 is not a metric of multiclass; choose from accuracy, top5, precision, recall, f1"),
        ({"metrics": ["top5"], "monitor": "f1"}, "--monitor f1: multiclass validates loss, accuracy, top5; add f1 to --metrics"),
    ]:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            resolve_config(LENET, given)


def test_each_option_holds_its_parser_scope_and_whether_a_resume_may_change_it():
    by_name = {f.name: f.metadata["option"] for f in option_fields()}
    assert by_name["lr"].parse("0.5") == 0.5 and by_name["lr_mult"].parse("fc=0.1") == ("fc", 0.1)
    assert by_name["lr_steps"].parse("3,6") == [3, 6]
    with pytest.raises(argparse.ArgumentTypeError, match="'x' is not an integer"):
        by_name["epochs"].parse("x")
    with pytest.raises(argparse.ArgumentTypeError, match="lbfgs is not supported"):
        by_name["optimizer"].parse("lbfgs")
    cli, python = {f.name for f in option_fields("cli")}, {f.name for f in option_fields("python")}
    assert {"dataset", "data_dir", "download"} <= cli - python and "epochs" in cli & python
    assert {n for n, o in by_name.items() if o.resumable} >= {"epochs", "device", "num_workers", "log_interval", "progress"}
    assert not by_name["batch_size"].resumable and not by_name["seed"].resumable
    assert option_name("batch_size", "cli") == "--batch-size" and option_name("progress", "cli") == "--no-progress"
    assert {f.name for f in dataclasses.fields(Config)} == {"recipe"} | set(by_name)


def test_a_resume_may_grow_epochs_and_change_resumable_options_only():
    saved = dataclasses.asdict(resolve_config(LENET, {"epochs": 4}))
    assert config_changes(saved, {**saved, "epochs": 8, "device": "cpu", "num_workers": 2}) == []
    assert config_changes(saved, {**saved, "epochs": 2, "lr": 0.5}) == ["epochs=4, now 2 (it may grow, not shrink)", "lr=0.05, now 0.5"]
    state = RunConfig(saved).state_dict()
    RunConfig({**saved, "epochs": 6}).load_state_dict(state)
    with pytest.raises(UsageError, match="the checkpoint was trained with seed=42, now 1; resume it unchanged"):
        RunConfig({**saved, "seed": 1}).load_state_dict(state)
