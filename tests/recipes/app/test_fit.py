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
    assert summary == records(tmp_path)[-1] and summary["status"] == "completed" and summary["epochs"] == 4
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


@pytest.mark.parametrize(
    "arguments,message",
    [
        ({"epochs": 0}, "epochs=0: must be a positive integer"),
        ({"epoch": 3}, "unknown option 'epoch'; the options are amp, batch_size"),
        ({"lr": float("inf")}, "lr=inf: must be a finite number > 0"),
        ({"task": "segmentation"}, "Argument task should be one of classification, regression, got 'segmentation'"),
        ({"loss": "mse"}, "loss='mse' does not fit classification; choose from cross-entropy"),
        ({"loss": 42}, "Argument loss should be a loss name or a callable, got int"),
        ({"optimizer": 42}, "Argument optimizer should be a name, an optimizer class or a factory, got int"),
        ({"optimizer": torch.optim.SGD, "momentum": 0.5}, "momentum: a custom optimizer takes its own arguments"),
        ({"optimizer": "adam", "momentum": 0.5}, "momentum: adam takes no momentum (it applies to sgd, rmsprop)"),
        ({"dataset": "mnist"}, "dataset: not options of fit(), which trains on the data you give"),
        ({"val_data": None, "early_stopping": 2}, "early_stopping needs val_data"),
        ({"monitor": "f1"}, "monitor='f1': classification validates loss, accuracy"),
        ({"handlers": [print]}, "Argument handlers should hold objects with an attach(trainer[, evaluator]) method, got builtin_function"),
    ],
)
def test_bad_arguments_raise_value_error_before_anything_is_written(tmp_path, arguments, message):
    train, val = made_up()
    arguments = {"val_data": val, **arguments}
    with pytest.raises(ValueError) as error:
        fit(fresh_net(), train, output_dir=tmp_path / "run", **{**OPTIONS, **arguments})
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
