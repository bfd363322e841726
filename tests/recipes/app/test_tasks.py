"""Tasks: the catalogue by name, and binary, multilabel and regression trained end to end through fit()."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits

from flint.recipes import fit
from flint.recipes.app.monitor import DIRECTIONS
from flint.recipes.app.tasks import METRICS, TASKS, TRAINING_METRIC, canonical_task, metrics_problem, validated

OPTIONS = {"progress": False, "device": "cpu", "log_interval": 1000}


def validations(run: Path) -> list[dict]:
    return [r for line in (run / "metrics.jsonl").read_text().splitlines() if (r := json.loads(line))["phase"] == "validation"]


def test_every_metric_of_the_catalogue_has_a_direction_and_every_task_a_training_metric():
    assert {name for names in METRICS.values() for name in names} <= set(DIRECTIONS)
    assert set(METRICS) == set(TASKS) == set(TRAINING_METRIC)
    assert all(TRAINING_METRIC[task] in METRICS[task] for task in TASKS)


def test_task_names_metric_names_and_what_a_run_validates():
    assert canonical_task("classification") == "multiclass" and canonical_task("regression") == "regression"
    with pytest.raises(ValueError, match="task 'ranking': choose from multiclass, binary, multilabel, regression"):
        canonical_task("ranking")
    assert metrics_problem(["roc_auc", "mine"], "binary", own=["mine"]) is None
    assert metrics_problem(["roc_auc"], "multiclass") == (
        "roc_auc is not a metric of multiclass; choose from accuracy, top5, precision, recall, f1, or give your own"
    )
    assert metrics_problem("f1", "binary") == "must be a list of metric names"
    assert validated("binary", ["roc_auc", "accuracy"]) == ("loss", "accuracy", "roc_auc")


def breast_cancer() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]  # int targets 0/1, shape (N,)
    return (x[:450], y[:450]), (x[450:], y[450:])


def test_binary_with_one_logit_reaches_sensible_accuracy_on_breast_cancer(tmp_path):
    train, val = breast_cancer()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))  # output (N, 1)
    summary = fit(model, train, val, output_dir=tmp_path, task="binary", metrics=["roc_auc", "f1"], epochs=4, batch_size=32, lr=0.05,
                  **OPTIONS)  # fmt: skip
    last = validations(tmp_path)[-1]
    assert summary["status"] == "completed" and summary["monitor"] == "accuracy:max"
    assert 0.9 < last["accuracy"] <= 1 and last["roc_auc"] > 0.95 and last["f1"] > 0.9
    with torch.no_grad():  # the recorded accuracy is that of sigmoid > 0.5 on the final weights
        logits = model(torch.as_tensor(val[0]))[:, 0]
    assert last["accuracy"] == pytest.approx(((logits > 0).long() == torch.as_tensor(val[1])).float().mean().item())


def test_binary_targets_of_any_type_and_shape_train_alike(tmp_path):
    (x, y), _ = breast_cancer()
    x, y = torch.as_tensor(x[:128]), torch.as_tensor(y[:128])
    weights = []
    for i, target in enumerate([y, y.float(), y.bool(), y.float().unsqueeze(1)]):
        torch.manual_seed(0)
        model = torch.nn.Linear(30, 1)
        fit(model, (x, target), output_dir=tmp_path / str(i), task="binary", epochs=1, batch_size=32, **OPTIONS)
        weights.append(model.weight.detach())
    assert all(torch.equal(w, weights[0]) for w in weights[1:])


def test_multilabel_on_digits_reaches_sensible_accuracy(tmp_path):
    x, digit = load_digits(return_X_y=True)
    x = (x / 16).astype("float32")
    labels = np.stack([digit % 2 == 0, digit > 4, np.isin(digit, [0, 6, 8, 9]), np.isin(digit, [2, 3, 5, 7])], 1).astype("float32")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    fit(model, (x[:1400], labels[:1400]), (x[1400:], labels[1400:]), output_dir=tmp_path, task="multilabel", metrics=["f1"],
        epochs=4, batch_size=128, lr=0.3, **OPTIONS)  # fmt: skip
    last = validations(tmp_path)[-1]
    assert last["accuracy"] > 0.6 and last["f1"] > 0.8  # accuracy: every label of a sample right (chance: 1/16)


def test_regression_with_an_n_by_1_output_and_n_targets_trains_what_n_by_1_targets_train(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64, generator=g)
    weights = []
    for i, target in enumerate([y, y.unsqueeze(1)]):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        fit(model, (x, target), (x, target), output_dir=tmp_path / str(i), task="regression", epochs=2, batch_size=16, lr=0.05, **OPTIONS)
        weights.append(model.weight.detach())
    assert torch.equal(weights[0], weights[1])
    assert validations(tmp_path / "0")[-1] == pytest.approx(validations(tmp_path / "1")[-1])


@pytest.mark.parametrize(
    "task,out,target,message",
    [
        ("multiclass", 1, torch.zeros(8, dtype=torch.long), "multiclass takes outputs (N, C) of C > 1 class scores and targets (N,) of "
                                                            "class indices; got output (8, 1) and target (8,); one logit per sample is task binary"),
        ("multiclass", 3, torch.zeros(8, 1, dtype=torch.long), "got output (8, 3) and target (8, 1)"),
        ("multiclass", 3, torch.full((8,), 3), "multiclass targets are class indices from 0 to 2 (the output has 3 scores), got values from 3 to 3"),
        ("binary", 2, torch.zeros(8), "binary takes one logit per sample, (N,) or (N, 1), and targets (N,) or (N, 1); got output (8, 2)"),
        ("binary", 1, torch.full((8,), 2.0), "binary targets are 0/1 (or probabilities in [0, 1]), got values from 2 to 2"),
        ("regression", 1, torch.zeros(8, 2), "regression takes targets of the output's shape"),
    ],
)
def test_shapes_that_would_broadcast_are_refused_at_the_first_batch_naming_both(tmp_path, task, out, target, message):
    x = torch.randn(8, 4)
    with pytest.raises(ValueError) as error:
        fit(torch.nn.Linear(4, out), (x, target), output_dir=tmp_path, task=task, epochs=1, batch_size=8, **OPTIONS)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_validation_targets_that_do_not_fit_are_refused_at_the_first_validation_batch(tmp_path):
    x = torch.randn(16, 3)
    with pytest.raises(ValueError, match=r"^regression takes targets of the output's shape .*; got output \(16, 1\) and target \(16, 2\)$"):
        fit(torch.nn.Linear(3, 1), (x, torch.zeros(16)), (x, torch.zeros(16, 2)), output_dir=tmp_path, task="regression", epochs=1,
            batch_size=16, **OPTIONS)  # fmt: skip
    assert not list((tmp_path / "checkpoints").glob("*.pt"))  # it failed before the epoch's checkpoint
