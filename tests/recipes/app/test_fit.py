"""fit(): your own model and data through the loop of `flint run`, from Python."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from flint.engine import TrainEvents, register_state
from flint.handlers import Checkpointing, NonFiniteLoss
from flint.recipes import fit
from flint.recipes.app.console import IGNITE_SETUP_LOGGERS, epoch_line

TIMING = ("epoch_time", "samples_per_sec", "avg_epoch_time", "wall_time", "model_tflops")


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def made_up() -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return TensorDataset(x[:96], y[:96]), TensorDataset(x[96:], y[96:])


def fresh_net() -> Net:
    torch.manual_seed(0)
    return Net()


class StepCounter:
    """A handler of one's own that keeps state: it reaches the checkpoints because it registers it."""

    state_key = "step_counter"

    def __init__(self) -> None:
        self.steps = 0
        self.evaluator = None

    def attach(self, trainer, evaluator) -> None:  # two engines: fit() passes both
        trainer.add_event_handler(TrainEvents.OPTIMIZER_STEPPED, self.count)
        self.evaluator = evaluator
        register_state(trainer, self.state_key, self)

    def count(self, trainer) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]


def smooth_cross_entropy(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(y_pred, y, label_smoothing=0.1)


OPTIONS = {"epochs": 4, "batch_size": 16, "lr": 0.01, "log_interval": 2, "progress": False, "device": "cpu"}


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_fit_runs_the_loop_with_a_custom_handler_loss_and_optimizer_class(tmp_path):
    counter = StepCounter()
    train, val = made_up()
    summary = fit(fresh_net(), train, val, output_dir=tmp_path, loss=smooth_cross_entropy, optimizer=torch.optim.AdamW,
                  handlers=[counter], **OPTIONS)  # fmt: skip
    history = summary.pop("history")
    assert summary == records(tmp_path)[-1] and summary["status"] == "completed" and summary["epochs"] == 4
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert counter.steps == 4 * 6 and counter.evaluator is not None
    assert [r["epoch"] for r in records(tmp_path) if r["phase"] == "validation"] == [1, 2, 3, 4]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["loss"] == f"custom:{__name__}.smooth_cross_entropy" and config["optimizer"] == "custom:torch.optim.adamw.AdamW"
    saved = torch.load(Checkpointing.find_latest(tmp_path / "checkpoints"), weights_only=True)
    assert saved["step_counter"] == {"steps": 24}
    assert list((tmp_path / "checkpoints").glob("best_checkpoint_*_accuracy=*.pt"))


def test_fit_interrupted_and_resumed_equals_an_unbroken_run(tmp_path):
    train, val = made_up()
    straight = fit(fresh_net(), train, val, output_dir=tmp_path / "straight", handlers=[StepCounter()], **OPTIONS)
    broken_counter = StepCounter()
    stopped = fit(fresh_net(), train, val, output_dir=tmp_path / "broken", handlers=[broken_counter], interrupt_at=2, **OPTIONS)
    assert stopped["status"] == "interrupted" and stopped["epochs"] == 2 and broken_counter.steps == 12
    resumed_counter = StepCounter()
    model = Net()  # any weights: the checkpoint's replace them
    resumed = fit(model, train, val, output_dir=tmp_path / "broken", handlers=[resumed_counter], resume=True, **OPTIONS)
    assert resumed["status"] == "completed" and resumed_counter.steps == 24  # loaded 12, then 12 more
    drop = lambda recs: [{k: v for k, v in r.items() if k not in TIMING} for r in recs if r["phase"] not in ("resume", "summary")]  # noqa: E731
    assert drop(records(tmp_path / "broken")) == drop(records(tmp_path / "straight"))
    assert resumed["best_value"] == straight["best_value"]
    assert resumed["history"] == straight["history"] and len(resumed["history"]) == 4  # the whole run's, not the last launch's
    final = torch.load(Checkpointing.find_latest(tmp_path / "straight" / "checkpoints"), weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.items())  # the model object itself trained on
    again = fresh_net()
    done = fit(again, train, val, output_dir=tmp_path / "broken", handlers=[StepCounter()], resume=True, **OPTIONS)
    assert done["nothing_to_do"] == "completed 4 epochs" and done["best_value"] == straight["best_value"]
    assert all(torch.equal(again.state_dict()[k], v) for k, v in final.items())  # it gets the run's weights


@pytest.mark.slow
def test_fit_on_two_spawned_workers_trains_the_model_object(tmp_path):
    train, val = made_up()
    model = fresh_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = fit(model, train, val, output_dir=tmp_path, nproc_per_node=2, **{**OPTIONS, "epochs": 2})
    assert summary["status"] == "completed" and summary["epochs"] == 2
    final = torch.load(Checkpointing.find_latest(tmp_path / "checkpoints"), weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.items())  # the workers' weights, not a copy's
    assert not all(torch.equal(before[k], v) for k, v in final.items())


def test_fit_without_validation_keeps_no_best_checkpoint(tmp_path):
    train, _ = made_up()
    summary = fit(fresh_net(), train, output_dir=tmp_path, optimizer="adam", **{**OPTIONS, "epochs": 2})
    assert summary["status"] == "completed" and summary["best_epoch"] is None
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_12.pt", "checkpoint_6.pt"]  # no best_
    assert not [r for r in records(tmp_path) if r["phase"] == "validation"]


def test_fit_writes_train_log_whatever_the_logging_configuration(tmp_path):
    train, _ = made_up()
    flint = logging.getLogger("recipes")
    previous = flint.level
    flint.setLevel(logging.ERROR)  # stricter than Python's default WARNING
    try:
        fit(fresh_net(), train, output_dir=tmp_path, **{**OPTIONS, "epochs": 2})
        assert flint.level == logging.ERROR  # left as the user set it
    finally:
        flint.setLevel(previous)
    log = (tmp_path / "train.log").read_text()
    assert "Run config:" in log and "Epoch 2/2" in log and "Completed 2 epochs" in log


def test_fit_shows_the_console_leaves_logging_as_it_was_and_returns_the_history_of_metrics_jsonl(tmp_path, capsys):
    def logging_state() -> list:  # without making a logger that is not there; a logger as made equals none (it passes all on)
        found = [logging.root, *(logging.root.manager.loggerDict.get(n) for n in ("ignite", "torch.multiprocessing", *IGNITE_SETUP_LOGGERS))]
        states = [(log.level, list(log.handlers), log.propagate) if isinstance(log, logging.Logger) else None for log in found]
        return [None if state == (logging.NOTSET, [], True) else state for state in states]

    train, val = made_up()
    before = logging_state()
    summary = fit(fresh_net(), train, val, output_dir=tmp_path / "shown", **{**OPTIONS, "epochs": 2})
    assert logging_state() == before
    lines = [line.split(" ", 1)[1] for line in capsys.readouterr().err.splitlines()]  # without the time
    recs = records(tmp_path / "shown")
    training = {r["epoch"]: r for r in recs if r["phase"] == "training"}
    validation = {r["epoch"]: r for r in recs if r["phase"] == "validation"}
    assert lines[0].startswith("net on data: 96 training and 24 validation samples; ")
    assert lines[2:4] == [epoch_line(e, 2, training[e], validation[e]) for e in (1, 2)]  # the numbers of metrics.jsonl
    assert lines[4] == "Completed 2 epochs" and lines[5].startswith("Best epoch ") and lines[6].startswith("Average epoch ")
    assert summary["history"] == [
        {"epoch": e, "loss": training[e]["loss"], "accuracy": training[e]["accuracy"], "val_loss": validation[e]["loss"],
         "val_accuracy": validation[e]["accuracy"]} for e in (1, 2)
    ]  # fmt: skip
    fit(fresh_net(), train, val, output_dir=tmp_path / "quiet", verbose=False, **{**OPTIONS, "epochs": 1})
    assert capsys.readouterr().err == "" and logging_state() == before


@pytest.mark.parametrize(
    "arguments,message",
    [
        ({"epochs": 0}, "epochs=0: must be a positive integer"),
        ({"epoch": 3}, "unknown option 'epoch'; the options are amp, batch_size"),
        ({"lr": float("inf")}, "lr=inf: must be a finite number > 0"),
        ({"task": "segmentation"}, "task='segmentation': choose from multiclass, binary, multilabel, regression (classification is multiclass)"),
        ({"loss": "mse"}, "loss='mse' does not fit multiclass; choose from cross-entropy"),
        ({"task": "binary", "loss": "cross-entropy"}, "loss='cross-entropy' does not fit binary; choose from bce-with-logits"),
        ({"metrics": ["f1", "auc"]}, "metrics=['f1', 'auc']: auc is not a metric of multiclass; choose from accuracy, top5, precision, "
                                     "recall, f1, or give your own"),
        ({"metrics": {"loss": len}}, "Argument metrics names 'loss': a metric's name is a plain word"),
        ({"metrics": {"mine": 3}}, "Argument metrics mine is a int: give an Ignite Metric or a callable (y_pred, y) -> float"),
        ({"metrics": {"mine": len}, "monitor": "mine"}, "monitor='mine': the direction of mine is not known: give mine:max or mine:min"),
        ({"train_data": 42}, "train_data: a int is not data Flint takes; give a Dataset of (input, target) pairs or of mappings"),
        ({"val_data": (torch.zeros(3, 4), torch.zeros(2))}, "val_data=(X, y): X and y must hold one row per sample, got shapes (3, 4) and (2,)"),
        ({"train_data": [{"x": torch.zeros(4), "label": 1}] * 8}, "train_data[0] has no key 'target' (its keys: x, label); name the "
                                                                  "target's key with target_key="),
        ({"train_data": [torch.zeros(4)] * 8}, "train_data[0] is a Tensor: samples must be (input, target) pairs or mappings"),
        ({"loss": 42}, "Argument loss should be a loss name or a callable, got int"),
        ({"optimizer": 42}, "Argument optimizer should be a name, an optimizer class or a factory, got int"),
        ({"optimizer": torch.optim.SGD, "momentum": 0.5}, "momentum: a custom optimizer takes its own arguments"),
        ({"optimizer": "adam", "momentum": 0.5}, "momentum: adam takes no momentum (it applies to sgd, rmsprop)"),
        ({"dataset": "mnist"}, "dataset: not options of fit(), which trains on the data you give"),
        ({"val_data": None, "early_stopping": 2}, "early_stopping needs val_data"),
        ({"monitor": "f1"}, "monitor='f1': multiclass validates loss, accuracy; add f1 to metrics"),
        ({"handlers": [print]}, "Argument handlers should hold objects with an attach(trainer[, evaluator]) method, got builtin_function"),
        ({"classes": "ab"}, "Argument classes should be a list of class names (strings), got 'ab'"),
        ({"verbose": 1}, "Argument verbose should be True or False, got 1"),
        ({"overwrite": True, "resume": True}, "overwrite=True starts afresh; it takes no resume"),
        ({"lr_mult": {"head": 0.1}}, "lr_mult={'head': 0.1}: no parameter name contains 'head'; names: layers.0.weight"),
        ({"init_from": "nowhere"}, "init_from='nowhere': nowhere is neither a run directory nor a checkpoint file"),
    ],
)
def test_bad_arguments_raise_value_error_before_anything_is_written(tmp_path, arguments, message):
    train, val = made_up()
    arguments = {"train_data": train, "val_data": val, **arguments}
    with pytest.raises(ValueError) as error:
        fit(fresh_net(), output_dir=tmp_path / "run", **{**OPTIONS, **arguments})
    assert str(error.value).startswith(message), str(error.value)
    assert not (tmp_path / "run").exists()


def test_a_non_finite_validation_set_warns_once_and_stops_a_run_monitoring_it(tmp_path):
    train, val = made_up()
    nan_val = TensorDataset(torch.full_like(val.tensors[0], float("nan")), val.tensors[1])
    summary = fit(fresh_net(), train, nan_val, output_dir=tmp_path / "acc", **OPTIONS)  # accuracy is finite: the loss warns
    log = (tmp_path / "acc" / "train.log").read_text()
    assert summary["status"] == "completed" and log.count("Validation at epoch 1: loss nan") == 1 and "not warned again" in log
    with pytest.raises(NonFiniteLoss, match="the validation loss became nan at epoch 1; stopped without saving; the last good checkpoint is none"):
        fit(fresh_net(), train, nan_val, output_dir=tmp_path / "loss", monitor="loss:min", **OPTIONS)
    assert not list((tmp_path / "loss" / "checkpoints").glob("*.pt"))
