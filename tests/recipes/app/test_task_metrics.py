"""A task's metrics: the catalogue on real engines against scikit-learn, shapes brought to one form, and metrics of
your own through fit() and the command line to every place a metric appears."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from ignite.metrics import ROC_AUC
from sklearn import metrics as sk

from flint.recipes import fit
from flint.recipes.app.cli import main
from flint.recipes.app.task_metrics import TaskForm, TaskLoss, TaskOutputs, target_reshaped, task_metrics
from flint.recipes.app.report import plot_data, read_records, summarise
from tests.handlers.test_tensorboard_writer import read_events

OPTIONS = {"progress": False, "device": "cpu", "log_interval": 1000}


def evaluated(task: str, batches: list[tuple[torch.Tensor, torch.Tensor]], names: list[str]) -> dict[str, float]:
    """The validation metrics of ``task`` over ``batches`` of (output, target), as a run's evaluator computes them."""
    evaluator = Engine(lambda engine, batch: {"y_pred": batch[0], "y": batch[1], "criterion_kwargs": {}})
    TaskForm(task).attach(evaluator)
    loss = torch.nn.functional.mse_loss if task == "regression" else torch.nn.functional.binary_cross_entropy_with_logits
    _, metrics = task_metrics(task, TaskLoss(loss if task != "multiclass" else torch.nn.functional.cross_entropy, task),
                              torch.device("cpu"), {name: name for name in names})  # fmt: skip
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    return evaluator.run(batches).metrics


def test_the_catalogue_agrees_with_scikit_learn():
    g = torch.Generator().manual_seed(0)
    scores, classes = torch.randn(40, 3, generator=g), torch.randint(0, 3, (40,), generator=g)
    got = evaluated("multiclass", [(scores[:24], classes[:24]), (scores[24:], classes[24:])], ["top5", "precision", "recall", "f1"])
    predicted = scores.argmax(1).numpy()
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(classes, predicted))
    assert got["f1"] == pytest.approx(sk.f1_score(classes, predicted, average="macro"))
    assert got["precision"] == pytest.approx(sk.precision_score(classes, predicted, average="macro"))
    assert got["recall"] == pytest.approx(sk.recall_score(classes, predicted, average="macro"))
    assert got["top5"] == 1.0  # three classes: every target is in the top 5

    logits, labels = torch.randn(40, 1, generator=g), torch.randint(0, 2, (40,), generator=g)  # (N, 1) against (N,)
    got = evaluated("binary", [(logits[:24], labels[:24]), (logits[24:], labels[24:])], ["precision", "f1", "roc_auc", "average_precision"])
    predicted = (logits[:, 0] > 0).long().numpy()
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert got["precision"] == pytest.approx(sk.precision_score(labels, predicted))
    assert got["f1"] == pytest.approx(sk.f1_score(labels, predicted))
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(labels, logits[:, 0]))
    assert got["average_precision"] == pytest.approx(sk.average_precision_score(labels, logits[:, 0]))

    many, tags = torch.randn(40, 4, generator=g), torch.randint(0, 2, (40, 4), generator=g)
    got = evaluated("multilabel", [(many, tags.float())], ["f1", "recall"])
    predicted = (many > 0).long().numpy()
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(tags, predicted))  # every label of a sample right
    assert got["f1"] == pytest.approx(sk.f1_score(tags, predicted, average="macro"))
    assert got["recall"] == pytest.approx(sk.recall_score(tags, predicted, average="macro"))

    values, truth = torch.randn(40, 1, generator=g), torch.randn(40, generator=g)
    got = evaluated("regression", [(values, truth)], ["mse", "rmse", "r2"])
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(truth, values[:, 0]))
    assert got["rmse"] == pytest.approx(sk.mean_squared_error(truth, values[:, 0]) ** 0.5)
    assert got["r2"] == pytest.approx(sk.r2_score(truth, values[:, 0]))
    assert got["loss"] == pytest.approx(got["mse"])  # (N, 1) against (N,): not broadcast to (N, N)


def test_target_shapes_fit_a_task_or_are_refused_in_one_line():
    assert target_reshaped("binary", (8,), (8,)) is False and target_reshaped("binary", (8,), (8, 1)) is True
    assert target_reshaped("regression", (8,), (8, 1)) is True and target_reshaped("regression", (8, 2), (8, 2)) is False
    assert target_reshaped("multilabel", (8, 3), (8, 3)) is False
    for task, output, target in [("multiclass", (8, 3), (8, 3)), ("multilabel", (8, 3), (8,)), ("binary", (8,), (4,)), ("regression", (8, 3), (8,))]:
        with pytest.raises(ValueError, match=rf"^{task} takes .*; got output \({output[0]},.* and target \({target[0]},"):
            target_reshaped(task, output, target)


def test_outputs_are_checked_once_then_only_reshaped():
    outputs = TaskOutputs("regression")
    y_pred, y = outputs(torch.zeros(4, 1), torch.arange(4))  # integer targets become the output's dtype and shape
    assert y.shape == (4, 1) and y.dtype == torch.float32 and outputs.checked
    with pytest.raises(ValueError, match="binary needs the model's output and the target as tensors, got tuple"):
        TaskOutputs("binary")((torch.zeros(4),), torch.zeros(4))


def test_the_training_accuracy_of_one_logit_stays_within_0_and_1(tmp_path):
    x = torch.randn(32, 4)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    fit(torch.nn.Linear(4, 1), (x, y), output_dir=tmp_path, task="binary", epochs=2, batch_size=8, **OPTIONS)
    training = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"training"' in line]
    assert all(0 <= r["accuracy"] <= 1 for r in training)


def balanced_accuracy(y_pred: torch.Tensor, y: torch.Tensor) -> float:
    """A callable metric over the whole validation set: binary logits (N,) and float targets (N,)."""
    return float(sk.balanced_accuracy_score(y.numpy() > 0.5, y_pred.numpy() > 0))


def binary_data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(160, generator=g) > 0).float()
    return (x[:128], y[:128]), (x[128:], y[128:])


def test_an_ignite_metric_and_a_callable_of_yours_reach_every_record_and_name_the_best_checkpoint(tmp_path):
    train, val = binary_data()
    torch.manual_seed(0)
    summary = fit(torch.nn.Linear(5, 1), train, val, output_dir=tmp_path, task="binary", epochs=3, batch_size=16, lr=0.1,
                  metrics={"auc": ROC_AUC(), "balanced": balanced_accuracy}, monitor="balanced:max", **OPTIONS)  # fmt: skip
    records = read_records(tmp_path)
    validation = [r for r in records if r["phase"] == "validation"]
    assert all(0.5 < r["auc"] <= 1 and 0.5 < r["balanced"] <= 1 for r in validation)
    best = max(validation, key=lambda r: (r["balanced"], -r["epoch"]))
    assert summary["monitor"] == "balanced:max" and summary["best_epoch"] == best["epoch"] and summary["best_value"] == best["balanced"]
    (path,) = (tmp_path / "checkpoints").glob("best_checkpoint_*")
    assert path.name == f"best_checkpoint_{best['epoch']}_balanced={best['balanced']:.4f}.pt"
    assert f"val_balanced {best['balanced']:.4g}"[:17] in (tmp_path / "train.log").read_text()  # the epoch lines
    report = summarise(records)
    assert {"auc", "balanced"} <= {panel.title for panel in plot_data(records, report).panels}  # flint report's panels
    tags = {v.tag for e in _events(tmp_path) for v in e.summary.value}
    assert {"validation/auc", "validation/balanced"} <= tags


def _events(run: Path) -> list:
    return [event for path in run.glob("events.out.tfevents.*") for event in read_events(path)]


def test_early_stopping_follows_a_metric_of_yours(tmp_path):
    train, val = binary_data()
    summary = fit(torch.nn.Linear(5, 1), train, val, output_dir=tmp_path, task="binary", epochs=5, batch_size=16,
                  metrics={"constant": lambda y_pred, y: 0.5}, monitor="constant:max", early_stopping=1, **OPTIONS)  # fmt: skip
    assert summary["stopped_early"] and summary["epochs"] == 2 and summary["best_epoch"] == 1


RECIPE_FILE = '''
import torch
from flint.recipes import Recipe

def data(cfg):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 5, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return (x[:128], y[:128]), (x[128:], y[128:])

def positive_rate(y_pred, y):  # a metric of the recipe's own
    return float((y_pred > 0).float().mean())

RECIPE = Recipe("logit", "one logit, task left to --task", build_model=lambda: torch.nn.Linear(5, 1), datasets={"made-up": data},
                input_shape=(5,), metrics={"positive": positive_rate})
'''


def test_the_command_line_takes_task_and_metrics_for_a_recipe_that_leaves_its_task_out(tmp_path, capsys):
    recipe = tmp_path / "logit.py"
    recipe.write_text(RECIPE_FILE)
    out = tmp_path / "run"
    common = ["--epochs", "2", "--batch-size", "16", "--no-progress", "--device", "cpu"]
    assert main(["run", str(recipe), "-o", str(out), "--task", "binary", "--metrics", "roc_auc,f1,positive", "--monitor", "roc_auc",
                 *common]) == 0  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "binary" and config["metrics"] == ["roc_auc", "f1", "positive"] and config["loss"] == "bce-with-logits"
    records = read_records(out)
    summary = records[-1]
    best = next(r for r in records if r["phase"] == "validation" and r["epoch"] == summary["best_epoch"])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = ("loss", "accuracy", "roc_auc", "f1", "positive")
    assert {k: result[k] for k in names} == pytest.approx({k: best[k] for k in names})
    assert main(["run", str(recipe), "-o", str(tmp_path / "bad"), "--metrics", "auc", *common]) == 2
    assert "--metrics auc: auc is not a metric of multiclass; choose from accuracy, top5, precision, recall, f1" in capsys.readouterr().err
    assert main(["run", "ffnn", "-o", str(tmp_path / "bad"), "--task", "binary", *common]) == 2
    assert "--task binary: recipe ffnn sets its task, regression" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_two_spawned_workers_validate_the_whole_set(tmp_path):
    train, val = binary_data()
    model = torch.nn.Linear(5, 1)
    fit(model, train, val, output_dir=tmp_path, task="binary", metrics={"balanced": balanced_accuracy}, nproc_per_node=2, epochs=2,
        batch_size=16, **OPTIONS)  # fmt: skip
    last = [r for r in read_records(tmp_path) if r["phase"] == "validation"][-1]
    with torch.no_grad():  # the model holds the last checkpoint's weights, those of the last validation
        logits = model(val[0])[:, 0]
    assert last["balanced"] == pytest.approx(balanced_accuracy(logits, val[1]))  # each worker validated half of it
    assert last["accuracy"] == pytest.approx(((logits > 0).float() == val[1]).float().mean().item())


def test_a_metric_object_that_does_not_pickle_is_refused_for_spawned_workers(tmp_path):
    train, val = binary_data()
    with pytest.raises(ValueError, match=r"^nproc_per_node=2 sends metrics to worker processes, which needs pickling"):
        fit(torch.nn.Linear(5, 1), train, val, output_dir=tmp_path / "run", task="binary", metrics={"auc": ROC_AUC()},
            nproc_per_node=2, **OPTIONS)  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_scores_and_targets_as_numpy_reach_a_callable_as_tensors():
    seen = []
    evaluator = Engine(lambda engine, batch: {"y_pred": batch[0], "y": batch[1], "criterion_kwargs": {}})
    TaskForm("binary").attach(evaluator)
    _, metrics = task_metrics("binary", TaskLoss(torch.nn.functional.binary_cross_entropy_with_logits, "binary"), torch.device("cpu"),
                              {"mine": lambda y_pred, y: seen.append((y_pred.shape, y.dtype)) or 1.0})  # fmt: skip
    metrics["mine"].attach(evaluator, "mine")
    evaluator.run([(torch.zeros(4, 1), torch.from_numpy(np.array([0, 1, 1, 0])))])
    assert seen == [((4,), torch.float32)]
