"""A task's outputs and metrics: shapes checked at the first batch, then the loss and every metric read one form.

:class:`TaskOutputs` checks the first ``(output, target)`` pair it sees against the task and brings
every pair to the task's form; :class:`TaskLoss` runs a loss on that form, :class:`TaskForm` puts
an evaluator's output in it before any metric reads it, and :func:`task_metrics` builds the
training metric and the validation metrics (Ignite's, by name from
:data:`flint.recipes.app.tasks.METRICS`, or your own).

The forms: multiclass ``(N, C)`` scores and ``(N,)`` class indices, as given; binary ``(N,)`` logits
and ``(N,)`` float targets; multilabel ``(N, K)`` logits and float 0/1 targets; regression the
output as given and float targets of its shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import (
    ROC_AUC,
    Accuracy,
    AveragePrecision,
    EpochMetric,
    Fbeta,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    Metric,
    Precision,
    Recall,
    RootMeanSquaredError,
    TopKCategoricalAccuracy,
)
from ignite.metrics.regression import R2Score

from flint.engine.metrics import TopOneAccuracy
from flint.recipes.app.tasks import TRAINING_METRIC

__all__ = ["TaskOutputs", "TaskLoss", "TaskForm", "task_metrics", "chosen_metrics", "target_reshaped"]

_TAKES = {
    "multiclass": "outputs (N, C) of C > 1 class scores and targets (N,) of class indices",
    "binary": "one logit per sample, (N,) or (N, 1), and targets (N,) or (N, 1)",
    "multilabel": "outputs (N, K) of K logits and 0/1 targets (N, K)",
    "regression": "targets of the output's shape ((N, 1) and (N,) are taken as one another)",
}


def _shape(shape: tuple[int, ...]) -> str:
    return f"({shape[0]},)" if len(shape) == 1 else str(tuple(shape))


def target_reshaped(task: str, output: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``task``'s targets of shape ``target`` are reshaped to fit outputs of shape ``output`` (else used as they are).

    Raises:
        ValueError: the shapes do not fit ``task``, in one line naming both (it would broadcast or fail).

    Example:
        >>> target_reshaped("binary", (8, 1), (8,)), target_reshaped("multiclass", (8, 3), (8,))
        (True, False)
        >>> target_reshaped("regression", (8, 1), (8, 2))
        Traceback (most recent call last):
        ...
        ValueError: regression takes targets of the output's shape ((N, 1) and (N,) are taken as one another); got output (8, 1) and target (8, 2)
    """
    one = ((), (1,))  # per sample: a scalar or one value
    if len(output) >= 1 and len(target) >= 1 and output[0] == target[0]:
        if task == "multiclass" and len(output) == 2 and output[1] > 1 and len(target) == 1:
            return False
        if task == "binary" and output[1:] in one and target[1:] in one:
            return target != output
        if task == "multilabel" and len(output) == 2 and target == output:
            return False
        if task == "regression" and (target == output or (output[1:] in one and target[1:] in one)):
            return target != output
    hint = ""
    if task == "multiclass" and output[1:] == (1,):
        hint = "; one logit per sample is task binary"
    elif task == "multiclass" and target == output:
        hint = "; 0/1 targets per class are task multilabel"
    raise ValueError(f"{task} takes {_TAKES[task]}; got output {_shape(output)} and target {_shape(target)}{hint}")


def _check_values(task: str, y_pred: torch.Tensor, y: torch.Tensor) -> None:
    """The first batch's target values (one read from the device, once per run)."""
    if task == "regression":
        return
    if task == "multiclass":
        if y.is_floating_point() or y.dtype == torch.bool:
            raise ValueError(f"multiclass targets are class indices (integers), got {y.dtype}; 0/1 targets per class are task multilabel")
        low, high, classes = int(y.min()), int(y.max()), y_pred.shape[1]
        if low < 0 or high >= classes:
            raise ValueError(f"multiclass targets are class indices from 0 to {classes - 1} (the output has {classes} scores), "
                             f"got values from {low} to {high}")  # fmt: skip
        return
    if y.dtype != torch.bool:
        low, high = float(y.min()), float(y.max())
        if low < 0 or high > 1:
            raise ValueError(f"{task} targets are 0/1 (or probabilities in [0, 1]), got values from {low:g} to {high:g}")


class TaskOutputs:
    """Brings a task's ``(output, target)`` pairs to the task's form; the first pair is checked.

    At the first pair: the model's output must be a tensor, the shapes must fit
    (:func:`target_reshaped`) and the targets' values too (multiclass: class indices below the number of
    scores; binary and multilabel: within [0, 1]). Later pairs are brought to the same form
    without a check (no read from the device).

    Example:
        >>> outputs = TaskOutputs("binary")
        >>> y_pred, y = outputs(torch.zeros(4, 1), torch.tensor([0, 1, 1, 0]))
        >>> tuple(y_pred.shape), y.tolist()
        ((4,), [0.0, 1.0, 1.0, 0.0])
    """

    def __init__(self, task: str) -> None:
        self.task = task
        self.checked = False
        self._reshape = False

    def __call__(self, y_pred: Any, y: Any) -> tuple[Any, Any]:
        if not self.checked:
            self._check(y_pred, y)
        if self.task == "multiclass":
            return y_pred, y
        if self.task == "binary":
            return y_pred.reshape(-1), y.reshape(-1).to(y_pred.dtype)
        if self._reshape:
            y = y.reshape(y_pred.shape)
        return y_pred, (y if self.task == "regression" and y.is_floating_point() else y.to(y_pred.dtype))

    def _check(self, y_pred: Any, y: Any) -> None:
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            got = type(y_pred).__name__ if not isinstance(y_pred, torch.Tensor) else f"target {type(y).__name__}"
            raise ValueError(f"{self.task} needs the model's output and the target as tensors, got {got}")
        self._reshape = target_reshaped(self.task, tuple(y_pred.shape), tuple(y.shape))
        _check_values(self.task, y_pred, y)
        self.checked = True


class TaskLoss:
    """``loss(y_pred, y)`` on the task's form (:class:`TaskOutputs`): a ``(N, 1)`` output against ``(N,)`` targets trains
    what ``(N, 1)`` targets train; shapes that do not fit are refused at the first batch."""

    def __init__(self, loss: Callable[[Any, Any], torch.Tensor], task: str) -> None:
        self.loss, self.outputs = loss, TaskOutputs(task)
        self._as_given = False  # multiclass, once checked: the pair goes to the loss as it is

    def __call__(self, y_pred: Any, y: Any) -> torch.Tensor:
        if self._as_given:
            return self.loss(y_pred, y)
        y_pred, y = self.outputs(y_pred, y)
        self._as_given = self.outputs.task == "multiclass"
        return self.loss(y_pred, y)


class TaskForm:
    """An evaluator's output in the task's form before any metric reads it (attach it before the metrics)."""

    def __init__(self, task: str) -> None:
        self.outputs = TaskOutputs(task)

    def attach(self, evaluator: Engine) -> TaskForm:
        evaluator.add_event_handler(Events.ITERATION_COMPLETED, self)
        return self

    def __call__(self, engine: Engine) -> None:
        output: Any = engine.state.output
        output["y_pred"], output["y"] = self.outputs(output["y_pred"], output["y"])


class _Read:
    """An output transform: the evaluator's (or, with ``outputs``, the trainer's) ``(y_pred, y)`` as ``kind`` reads them."""

    def __init__(self, kind: str, outputs: TaskOutputs | None = None) -> None:
        self.kind, self.outputs = kind, outputs

    def __call__(self, output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        y_pred, y = output["y_pred"], output["y"]
        if self.outputs is not None:
            y_pred, y = self.outputs(y_pred, y)
        if self.kind == "labels":  # logit > 0 is sigmoid > 0.5
            return (y_pred > 0).long(), (y > 0.5).long()
        if self.kind == "scores":
            return torch.sigmoid(y_pred), (y > 0.5).long()
        if self.kind == "top5" and y_pred.shape[1] < 5:  # fewer classes than 5: every one is in the top 5
            return torch.nn.functional.pad(y_pred, (0, 5 - y_pred.shape[1]), value=float("-inf")), y
        return (y_pred.reshape(-1), y.reshape(-1)) if self.kind == "flat" else (y_pred, y)


def _catalogue(task: str, name: str, device: torch.device) -> Metric:
    """The Ignite metric ``name`` of ``task``'s catalogue, reading the evaluator's output in the task's form."""
    labels, multilabel = _Read("labels"), task == "multilabel"
    if task == "multiclass":
        made: dict[str, Callable[[], Metric]] = {
            "accuracy": lambda: Accuracy(device=device),
            "top5": lambda: TopKCategoricalAccuracy(5, _Read("top5"), device=device),
            "precision": lambda: Precision(average="macro", device=device),
            "recall": lambda: Recall(average="macro", device=device),
            "f1": lambda: Fbeta(1.0, precision=Precision(average=False, device=device), recall=Recall(average=False, device=device)),
        }
    elif task == "regression":
        made = {
            "mae": lambda: MeanAbsoluteError(device=device),
            "mse": lambda: MeanSquaredError(device=device),
            "rmse": lambda: RootMeanSquaredError(device=device),
            "r2": lambda: R2Score(_Read("flat"), device=device),
        }
    else:
        average: Any = "macro" if multilabel else False
        made = {
            "accuracy": lambda: Accuracy(labels, is_multilabel=multilabel, device=device),
            "precision": lambda: Precision(labels, average=average, is_multilabel=multilabel, device=device),
            "recall": lambda: Recall(labels, average=average, is_multilabel=multilabel, device=device),
            "f1": lambda: Fbeta(1.0, precision=Precision(labels, is_multilabel=multilabel, device=device),
                                recall=Recall(labels, is_multilabel=multilabel, device=device)),  # fmt: skip
            "roc_auc": lambda: ROC_AUC(_Read("scores"), check_compute_fn=False, device=device),
            "average_precision": lambda: AveragePrecision(_Read("scores"), check_compute_fn=False, device=device),
        }
    return made[name]()


def _training_metric(task: str, device: torch.device) -> Metric:
    """The task's cheap metric on training batches, exact for the task: Flint's lean top-1 accuracy for multiclass
    (the loss has checked the shapes before any metric reads them), Ignite's on the task's form for the others."""
    if task == "multiclass":
        return TopOneAccuracy(device=device)
    outputs = TaskOutputs(task)
    if task == "regression":
        return MeanAbsoluteError(_Read("form", outputs), device=device)
    return Accuracy(_Read("labels", outputs), is_multilabel=task == "multilabel", device=device)


def chosen_metrics(names: Sequence[str], own: Any = ()) -> dict[str, Any]:
    """Each name -> what :func:`task_metrics` builds it from: ``own``'s metric of that name (a recipe's mapping), else the name.

    Example:
        >>> chosen_metrics(["f1", "mine"], {"mine": max})
        {'f1': 'f1', 'mine': <built-in function max>}
    """
    mine = own if isinstance(own, Mapping) else {}
    return {name: mine.get(name, name) for name in names}


def task_metrics(task: str, loss_fn: Callable, device: torch.device, chosen: Mapping[str, Any] | None = None) -> tuple[dict[str, Metric], dict[str, Metric]]:
    """(training metrics, validation metrics) of ``task``, accumulated on ``device``.

    Training: the task's cheap metric (accuracy, or MAE for regression; the loss comes from the
    trainer's running sum, ``flint.engine.TrainProgress.epoch_loss``). Validation: the loss, that metric and
    ``chosen``: name -> a catalogue name (:data:`flint.recipes.app.tasks.METRICS`), an Ignite ``Metric``
    (as built; it reads the evaluator's output in the task's form) or a callable ``(y_pred, y) -> float``
    run once on the whole validation set (Ignite's ``EpochMetric``, gathered from every worker).
    """
    name = TRAINING_METRIC[task]
    val: dict[str, Metric] = {"loss": Loss(loss_fn, device=device), name: _catalogue(task, name, device)}
    for key, given in (chosen or {}).items():
        if isinstance(given, str):
            val[key] = _catalogue(task, given, device)
        elif isinstance(given, Metric):
            val[key] = given
        else:
            val[key] = EpochMetric(given, check_compute_fn=False, device=device)
    return {name: _training_metric(task, device)}, val
