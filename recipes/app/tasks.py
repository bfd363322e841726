"""What a run is trained for: its task, and the metrics it validates by name. Nothing here imports torch.

A task decides the default loss (:data:`flint.recipes.app.config.LOSSES`), the shapes a batch's
output and target must have (:mod:`flint.recipes.app.task_metrics`), the metric computed on training
batches and the catalogue of validation metrics a run may name (``--metrics``, ``fit(metrics=...)``).
Each metric's direction is :data:`flint.recipes.app.monitor.DIRECTIONS`'.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["TASKS", "ALIASES", "METRICS", "TRAINING_METRIC", "task_problem", "canonical_task", "metrics_problem", "own_metrics_problem",
           "run_task", "validated"]  # fmt: skip

TASKS = ("multiclass", "binary", "multilabel", "regression")
ALIASES = {"classification": "multiclass"}
# The validation metrics each task computes by name (precision, recall and f1: macro over the classes or labels).
METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("accuracy", "top5", "precision", "recall", "f1"),
    "binary": ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision"),
    "multilabel": ("accuracy", "precision", "recall", "f1"),
    "regression": ("mae", "mse", "rmse", "r2"),
}
# The cheap metric every run computes, on training batches too.
TRAINING_METRIC = {"multiclass": "accuracy", "binary": "accuracy", "multilabel": "accuracy", "regression": "mae"}
_PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")  # it names a checkpoint file and a TensorBoard tag


def task_problem(value: Any) -> str | None:
    """What is wrong with a task name (``""``: the recipe's, else multiclass), or None."""
    if value == "" or value in TASKS or value in ALIASES:
        return None
    return f"choose from {', '.join(TASKS)} (classification is multiclass)"


def canonical_task(name: str) -> str:
    """The task ``name`` means: ``"classification"`` is ``"multiclass"``.

    Example:
        >>> canonical_task("classification"), canonical_task("binary")
        ('multiclass', 'binary')
    """
    problem = task_problem(name) if name else "choose from " + ", ".join(TASKS)
    if problem:
        raise ValueError(f"task {name!r}: {problem}")
    return ALIASES.get(name, name)


def run_task(recipe_task: str | None, given: str = "") -> str:
    """The task a run trains for: the recipe's if it sets one, else the one ``given`` (``--task``), else multiclass.

    Example:
        >>> run_task(None, "binary"), run_task("classification", ""), run_task(None)
        ('binary', 'multiclass', 'multiclass')
    """
    return canonical_task(recipe_task or given or "multiclass")


def metrics_problem(names: Any, task: str, own: Iterable[str] = ()) -> str | None:
    """What is wrong with the metric names a run asks for (catalogue names of ``task``, or ``own`` metrics), or None.

    Example:
        >>> metrics_problem(["f1", "auc"], "binary")
        'auc is not a metric of binary; choose from accuracy, precision, recall, f1, roc_auc, average_precision, or give your own'
    """
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "must be a list of metric names"
    unknown = [n for n in names if n not in METRICS[task] and n not in set(own)]
    if unknown:
        return f"{', '.join(unknown)} is not a metric of {task}; choose from {', '.join(METRICS[task])}, or give your own"
    return None


def own_metrics_problem(metrics: Any) -> str | None:
    """What is wrong with a recipe's (or ``fit()``'s) ``metrics``: a list of names, or a mapping name -> metric; or None."""
    if isinstance(metrics, Mapping):
        bad = [f"{name!r}" for name in metrics if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name == "loss"]
        if bad:
            return f"names {', '.join(bad)}: a metric's name is a plain word (letters, digits, '_', '-', '.'), not 'loss'"
        wrong = [f"{name} is a {type(m).__name__}" for name, m in metrics.items() if not (callable(m) or hasattr(m, "attach"))]
        return f"{'; '.join(wrong)}: give an Ignite Metric or a callable (y_pred, y) -> float" if wrong else None
    if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Iterable) or not all(isinstance(n, str) for n in metrics):
        return "must be metric names, or a dict of name -> Ignite Metric or callable (y_pred, y) -> float"
    return None


def validated(task: str, metrics: Iterable[str]) -> tuple[str, ...]:
    """The names a run's validation computes: the loss, the task's training metric, then ``metrics``.

    Example:
        >>> validated("regression", ["r2", "mae"])
        ('loss', 'mae', 'r2')
    """
    return tuple(dict.fromkeys(("loss", TRAINING_METRIC[task], *metrics)))
