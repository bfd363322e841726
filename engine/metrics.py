"""A lean training accuracy: top-1 correct predictions counted on the device, one in-place add per batch.

Ignite's ``Accuracy`` checks the shapes, types and values of every batch and handles the binary and
multilabel cases too; updated at every training iteration, that costs more than the rest of
Flint's handlers together (docs/performance.md). :class:`TopOneAccuracy` keeps Ignite's ``Metric``
interface (attach, reset at epoch start, all-reduce across ranks at compute, ``state_dict``) and
does the one case a classifier's training output has: scores over classes and class indices.
Validation keeps Ignite's ``Accuracy``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import sync_all_reduce

__all__ = ["TopOneAccuracy"]


class TopOneAccuracy(Metric):
    """The share of targets whose class has the highest score: ``y_pred`` ``(N, C, ...)`` with C >= 2, ``y`` ``(N, ...)``.

    The class is the argmax over ``y_pred``'s dimension 1, compared with ``y`` element by element
    (one prediction per sample, or per pixel of a segmentation). Any other pair of shapes, a
    single score per sample among them, raises ``ValueError`` naming both shapes: it has no top-1
    class (use Ignite's ``Accuracy`` on thresholded predictions). The count stays on ``device``;
    one value is read back at ``compute``. Unlike Ignite's metrics, it reads the engine's output
    directly (``Metric.iteration_completed`` overridden) and checks the shapes of the first one after
    each reset: a trainer's outputs keep their form.

    Args:
        output_transform: engine output -> ``(y_pred, y)``. Default ``output["y_pred"], output["y"]``.
        device: where the count is kept. Default CPU.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> engine = Engine(lambda e, b: {"y_pred": b[0], "y": b[1]})
        >>> TopOneAccuracy().attach(engine, "accuracy")
        >>> engine.run([(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))]).metrics["accuracy"]
        0.5
    """

    _state_dict_all_req_keys = ("_correct", "_count")  # what Ignite's Metric.state_dict saves

    def __init__(
        self,
        output_transform: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(output_transform=output_transform or _scores_and_targets, device=device)
        self._default_output = output_transform is None  # then read in place

    def reset(self) -> None:
        self._correct = torch.zeros((), dtype=torch.int64, device=self._device)
        self._count = 0
        self._checked = False

    def iteration_completed(self, engine: Engine) -> None:
        output: Any = engine.state.output
        y_pred, y = (output["y_pred"], output["y"]) if self._default_output else self._output_transform(output)
        if not self._checked:  # a trainer's outputs keep their form: checked once per reset
            _check_shapes(y_pred, y)
            self._checked = True
        self._correct.add_(torch.count_nonzero(y_pred.argmax(dim=1) == y))  # half the cost of a bool .sum()
        self._count += y.numel()

    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        y_pred, y = output
        _check_shapes(y_pred, y)
        self._correct.add_(torch.count_nonzero(y_pred.argmax(dim=1) == y))
        self._count += y.numel()

    @sync_all_reduce("_correct", "_count")
    def compute(self) -> float:
        if self._count == 0:
            raise NotComputableError("TopOneAccuracy needs at least one batch before it can be computed")
        return float(self._correct.item()) / self._count


def _check_shapes(y_pred: torch.Tensor, y: torch.Tensor) -> None:
    shape = y_pred.shape
    if len(shape) < 2 or shape[1] < 2 or shape[:1] + shape[2:] != y.shape:
        raise ValueError(f"TopOneAccuracy needs y_pred of shape (N, C, ...) with C >= 2 and y of shape (N, ...), "
                         f"got y_pred {tuple(shape)} and y {tuple(y.shape)}")  # fmt: skip


def _scores_and_targets(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return output["y_pred"], output["y"]
