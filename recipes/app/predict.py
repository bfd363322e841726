"""Predictions: a model's outputs for your data (:func:`predict`), and ``flint predict``'s table of a run's
validation set (:func:`write_predictions`), from the checkpoint ``flint evaluate`` uses.

How outputs become scores is the task's (:func:`output_kind`): softmax probabilities for one class
among several, sigmoid scores for binary and multi-label tasks, the values themselves for regression.
Importing this module imports no torch.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["OUTPUT_KINDS", "OUTPUTS", "output_kind", "predict", "prediction_table", "write_predictions"]

# task -> how its outputs become scores
OUTPUT_KINDS = {"classification": "softmax", "multiclass": "softmax", "binary": "sigmoid", "multilabel": "sigmoid", "regression": "values"}
# output kind -> what an exported model's output is, in words (flint export's metadata)
OUTPUTS = {
    "softmax": "logits, one per class (softmax gives probabilities)",
    "sigmoid": "logits, one per label (sigmoid gives scores; above 0.5 is positive)",
    "values": "the predicted values",
}


def output_kind(task: str) -> str:
    """``"softmax"``, ``"sigmoid"`` or ``"values"``: how the outputs of a model of ``task`` become scores.

    Example:
        >>> output_kind("multiclass"), output_kind("multilabel"), output_kind("regression")
        ('softmax', 'sigmoid', 'values')
    """
    if task not in OUTPUT_KINDS:
        raise ValueError(f"Argument task should be one of {', '.join(OUTPUT_KINDS)}, got {task!r}")
    return OUTPUT_KINDS[task]


def predict(run_dir_or_model: Any, data: Any, *, batch_size: int = 256, device: str | None = None) -> torch.Tensor:
    """The outputs of a model for each sample of ``data``, in order, as one tensor on the CPU.

    The model is a ``torch.nn.Module``, or a run directory or checkpoint of ``flint run``, whose model
    is rebuilt with the checkpoint ``flint evaluate`` takes (the run's best, else its latest). It runs
    in eval mode without gradients (a module of yours is given back in the mode it was in). The
    outputs are the model's own (logits for a classifier: ``.softmax(1)`` gives probabilities).

    Args:
        run_dir_or_model: a ``torch.nn.Module``, or a run directory or checkpoint file.
        data: a tensor of inputs (the first dimension indexes samples), or a map-style dataset whose
            items are inputs or ``(input, target)`` pairs.
        batch_size: samples per forward pass. Default 256.
        device: where to run (a module of yours is moved there); default None: a module where its
            parameters are, a run's model on the CPU.

    Raises:
        ValueError: a bad ``batch_size``; flint.recipes.app.config.UsageError (a ValueError): a path
            that is not a run or checkpoint of ``flint run`` (a ``fit()`` run's model is yours: load
            its checkpoint's ``"model"`` into it and pass the model).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> predict(model, torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from flint.engine import create_evaluator

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"Argument batch_size should be a positive integer, got {batch_size!r}")
    if isinstance(run_dir_or_model, torch.nn.Module):
        model = run_dir_or_model
    elif isinstance(run_dir_or_model, (str, os.PathLike)):
        from flint.recipes.app.runs import open_run

        model = open_run(run_dir_or_model).model()
    else:
        raise ValueError(f"Argument run_dir_or_model should be a torch.nn.Module or a run directory or checkpoint, got {type(run_dir_or_model).__name__}")
    dataset = TensorDataset(data) if isinstance(data, torch.Tensor) else data
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    if device is not None:
        model = model.to(device)
    was_training = model.training
    evaluator = create_evaluator(model, device=device, prepare_batch=_inputs)
    try:
        outputs, _ = _collect(evaluator, loader)
    finally:
        model.train(was_training)
    return outputs


def _inputs(batch: Any, device: Any, non_blocking: bool) -> tuple[Any, None]:
    """A batch's inputs on ``device`` (its first part when it is ``(inputs, targets)``), and no target."""
    from ignite.utils import convert_tensor

    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return convert_tensor(x, device=device, non_blocking=non_blocking), None


def _collect(evaluator: Any, loader: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``evaluator`` over ``loader``; (its outputs, the targets or None), concatenated on the CPU (one copy at the end)."""
    import torch
    from ignite.engine import Events

    outputs: list[torch.Tensor] = []
    targets: list[Any] = []

    def keep(engine: Any) -> None:  # on the device: no sync per batch
        outputs.append(engine.state.output["y_pred"])
        targets.append(engine.state.output["y"])

    handle = evaluator.add_event_handler(Events.ITERATION_COMPLETED, keep)
    try:
        evaluator.run(loader)
    finally:
        handle.remove()
    if not outputs:
        raise ValueError("Argument data should hold at least one sample, got none")
    y = torch.cat(targets).cpu() if all(isinstance(t, torch.Tensor) for t in targets) else None
    return torch.cat(outputs).cpu(), y


def prediction_table(task: str, outputs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str] | None = None) -> list[list[Any]]:
    """``flint predict``'s rows, the header first: ``index``, ``target``, ``prediction``, the class names when
    ``classes`` fits the outputs, then the probabilities (``p_<class>``), the score or nothing (regression).

    Softmax tasks predict the most probable class; sigmoid ones each label scoring above 0.5 (a
    multi-label target or prediction is its positive labels' indices, space-separated); regression
    the values (several per sample space-separated).

    Example:
        >>> import torch
        >>> for row in prediction_table("multiclass", torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1]), ["cat", "dog"]):
        ...     print(row)
        ['index', 'target', 'prediction', 'target_class', 'predicted_class', 'p_cat', 'p_dog']
        [0, 0, 0, 'cat', 'cat', '0.880797', '0.119203']
        [1, 1, 0, 'dog', 'cat', '0.5', '0.5']
    """
    kind = output_kind(task)
    outputs = outputs.float()
    if kind == "values":
        return [["index", "target", "prediction"], *([i, _text(t), _text(p)] for i, (t, p) in enumerate(zip(targets, outputs)))]
    if kind == "softmax":
        scores, labels = outputs.softmax(dim=1), [str(i) for i in range(outputs.shape[1])]
        predicted = scores.argmax(dim=1)
    elif task == "binary":
        scores, labels = outputs.reshape(len(outputs), -1)[:, :1].sigmoid(), ["0", "1"]
        predicted = (scores[:, 0] > 0.5).long()
    else:
        scores, labels = outputs.sigmoid(), [str(i) for i in range(outputs.shape[1])]
        predicted = scores > 0.5
    names = list(classes) if classes is not None and len(classes) == len(labels) else None
    score_columns = ["score"] if task == "binary" else [f"p_{name}" for name in names or labels]
    rows: list[list[Any]] = [["index", "target", "prediction", *(["target_class", "predicted_class"] if names else []), *score_columns]]
    for i, (target, guess, score) in enumerate(zip(targets, predicted, scores)):
        target_labels, guessed = _labels(target), _labels(guess)
        named = [" ".join(names[j] for j in target_labels), " ".join(names[j] for j in guessed)] if names else []
        shown = [" ".join(map(str, target_labels)), " ".join(map(str, guessed))]
        rows.append([i, *(int(v) if kind == "softmax" or task == "binary" else v for v in shown), *named, *(f"{float(s):.6g}" for s in score)])
    return rows


def _labels(value: torch.Tensor) -> list[int]:
    """A class index as ``[index]``; a multi-label 0/1 vector as the indices of its positive labels."""
    if value.dim() == 0:
        return [int(round(float(value)))]
    if value.numel() == 1:
        return [int(round(float(value.reshape(()))))]
    return [int(j) for j in value.nonzero().flatten()]


def _text(value: torch.Tensor) -> str:
    """A regression target or prediction: its number, or its numbers space-separated."""
    return " ".join(f"{float(v):.6g}" for v in value.flatten())


def write_predictions(path: str | os.PathLike[str], dataset: str | None = None, output: str | os.PathLike[str] | None = None,
                      device: str = "auto") -> tuple[Path, dict[str, float]]:  # fmt: skip
    """``flint predict``: one CSV row per validation sample (:func:`prediction_table`) of the checkpoint
    ``flint evaluate`` takes, its batches and device as there (:func:`flint.recipes.app.evaluate.validating`);
    class names from the recipe or its dataset (:func:`flint.recipes.app.export.data_metadata`).

    Returns the CSV's path (default ``RUN_DIR/predictions.csv``, written atomically) and the pass's
    validation metrics, which equal ``flint evaluate``'s."""
    from flint.handlers.files import write_text_atomic
    from flint.recipes.app.evaluate import validating
    from flint.recipes.app.export import data_metadata
    from flint.recipes.app.rundir import RunDir

    job = validating(path, dataset, device)
    outputs, targets = _collect(job.evaluator, job.loader)
    classes = data_metadata(job.run.recipe, job.cfg.dataset, job.cfg.task)["classes"]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(prediction_table(job.cfg.task, outputs, targets, classes))
    target = Path(output) if output else RunDir(job.run.run_dir).predictions_file
    write_text_atomic(target, text.getvalue(), "predictions file")
    return target, {k: float(v) for k, v in job.evaluator.state.metrics.items()}
