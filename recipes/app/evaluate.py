"""``flint evaluate``: a run's best checkpoint (or a given one) on its recipe's validation set, as training validated it."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from flint.recipes.app.config import Config, UsageError

if TYPE_CHECKING:
    from ignite.engine import Engine

    from flint.recipes.app.runs import Run

__all__ = ["evaluate", "Validating", "validating"]


@dataclass
class Validating:
    """A checkpoint's model ready to run over a validation set as training validated it."""

    run: Run
    cfg: Config  # the run's options, ``dataset`` the one evaluated
    evaluator: Engine  # the model with the task's validation metrics attached
    loader: Any  # the validation batches, in order


def validating(path: str | os.PathLike[str], dataset: str | None = None, device: str = "auto") -> Validating:
    """The checkpoint of ``path`` (a run directory's best, or the file given) and its recipe's validation set.

    The run's ``config.json`` (or the options the checkpoint carries) names its recipe and options;
    the validation set, its batches and the metrics are built as training built them
    (``flint.recipes.app.loaders.make_val_loader``, ``flint.recipes.app.task_metrics.task_metrics``).
    ``dataset`` picks another of the recipe's datasets.

    Raises:
        UsageError: not a run or checkpoint (see :func:`flint.recipes.app.runs.open_run`), an unknown
            ``dataset``, or a dataset without a validation set.
    """
    import torch

    from flint.engine import create_evaluator
    from flint.recipes.app.data_forms import KeywordInputs, checked_data
    from flint.recipes.app.loaders import make_val_loader
    from flint.recipes.app.task_metrics import TaskForm, TaskLoss, chosen_metrics, task_metrics
    from flint.recipes.app.optim import make_loss
    from flint.recipes.app.runs import open_run
    from flint.recipes.app.tasks import run_task
    from flint.recipes.app.train import resolve_device

    run = open_run(path)
    known = {f.name for f in fields(Config)}
    cfg = Config(**{k: v for k, v in run.config.items() if k in known})
    if dataset is not None:
        if dataset not in run.recipe.datasets:
            raise UsageError(f"--dataset {dataset!r}: {run.recipe.name} takes {', '.join(run.recipe.datasets)}")
        cfg.dataset = dataset
    where = resolve_device(device)
    cfg.task = run_task(run.recipe.task, cfg.task)  # config.json without a task: its recipe's
    _, val_set = run.recipe.datasets[cfg.dataset](cfg)
    if val_set is None:
        raise UsageError(f"{cfg.dataset} of {run.recipe.name} has no validation set")
    (val_set,), batches = checked_data([(f"recipe {run.recipe.name}'s validation set", val_set)], cfg, run.recipe)
    val_loader = make_val_loader(cfg, val_set, where)
    model = run.model().to(where)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    loss_fn = TaskLoss(make_loss(cfg.task, cfg.loss, cfg.label_smoothing), cfg.task)
    _, metrics = task_metrics(cfg.task, loss_fn, where, chosen_metrics(cfg.metrics, run.recipe.metrics))
    called = KeywordInputs(model) if batches.keyword_inputs else model
    evaluator = create_evaluator(called, device=where, amp=cfg.amp, prepare_batch=batches.prepare_batch)
    TaskForm(cfg.task).attach(evaluator)  # before the metrics, as in training
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    return Validating(run, cfg, evaluator, val_loader)


def evaluate(path: str | os.PathLike[str], dataset: str | None = None, device: str = "auto") -> dict[str, Any]:
    """The validation metrics of a checkpoint: the best of a run directory, or the file given (see :func:`validating`).

    On the same device the numbers equal the ``validation`` record of the checkpoint's epoch.

    Returns:
        ``{"checkpoint", "epoch", "dataset", "loss", <metric>...}``: ``accuracy`` (``mae`` for regression) and the run's ``metrics``.

    Raises:
        UsageError: see :func:`validating`.
    """
    job = validating(path, dataset, device)
    results = job.evaluator.run(job.loader).metrics
    return {"checkpoint": str(job.run.checkpoint), "epoch": job.run.epoch, "dataset": job.cfg.dataset, **{k: float(v) for k, v in results.items()}}
