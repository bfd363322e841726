"""Lean training metrics: the epoch's mean loss and top-1 accuracy, summed on the device in one op each.

Ignite's ``Average`` and ``Accuracy`` check shapes and types, reshape and move tensors on every
batch: about 75 us per training iteration on a CPU, more than the rest of Flint's handlers together
(docs/performance.md). These two keep Ignite's ``Metric`` interface (attach, reset at epoch start,
all-reduce across ranks at compute, ``state_dict``) and do only the sums, for the one case a
trainer's output always has: a mean loss and multiclass scores. Validation keeps Ignite's metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from flint.engine.trainer import batch_size_of

__all__ = ["MeanLoss", "TopOneAccuracy"]


class _LeanMetric(Metric):
    """A ``Metric`` whose per-iteration update goes straight to the sums (``_accumulate``).

    Ignite's ``iteration_completed`` enters ``no_grad`` and checks the output for mappings and lists
    of tensors on every batch (about 8 us on a CPU); these metrics only read detached tensors with
    non-differentiable ops, so they skip both, and skip ``update``'s decorator too (two Python
    calls, each 1-3.5 us in a real training loop) by doing what it does here. With the default
    output transform, the two outputs are read here too (one call less).
    """

    _first: str | None = None  # the default transform, (output[_first], output["y"]), read inline: one call less

    def iteration_completed(self, engine: Engine) -> None:
        output: Any = engine.state.output
        if self._first is not None:
            self._accumulate(output[self._first], output["y"])
        else:
            self._accumulate(*self._output_transform(output))
        if "_result" in self.__dict__:  # as Ignite's reinit__is_reduced after an update
            self._result = None

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, Any]) -> None:
        self._accumulate(*output)

    def _accumulate(self, a: torch.Tensor, b: Any) -> None:
        raise NotImplementedError


class MeanLoss(_LeanMetric):
    """The sample-weighted mean of a trainer's batch losses: ``sum(loss_b * n_b) / sum(n_b)``.

    Args:
        output_transform: engine output -> ``(mean loss tensor, target)``. Default: the trainer's
            ``output["loss"]`` and ``output["y"]``.
        device: where the sum is kept. Default CPU.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> engine = Engine(lambda e, b: {"loss": torch.tensor(b[0]), "y": torch.zeros(b[1])})
        >>> MeanLoss().attach(engine, "loss")
        >>> engine.run([(1.0, 1), (4.0, 3)]).metrics["loss"]
        3.25
    """

    _state_dict_all_req_keys = ("_sum", "_count")

    def __init__(
        self,
        output_transform: Callable[[Any], tuple[torch.Tensor, Any]] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(output_transform=output_transform or (lambda out: (out["loss"], out["y"])), device=device)
        self._first = "loss" if output_transform is None else None

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._count = 0

    def _accumulate(self, loss: torch.Tensor, y: Any) -> None:
        n = batch_size_of(y)
        self._sum.add_(loss.detach(), alpha=n)
        self._count += n

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        if self._count == 0:
            raise NotComputableError("MeanLoss needs at least one batch before it can be computed")
        return float(self._sum.item()) / self._count


class TopOneAccuracy(_LeanMetric):
    """The share of samples whose highest score is the target class (multiclass ``y_pred`` [N, C], ``y`` [N]).

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

    _state_dict_all_req_keys = ("_correct", "_count")

    def __init__(
        self,
        output_transform: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(output_transform=output_transform or (lambda out: (out["y_pred"], out["y"])), device=device)
        self._first = "y_pred" if output_transform is None else None

    @reinit__is_reduced
    def reset(self) -> None:
        self._correct = torch.zeros((), dtype=torch.int64, device=self._device)
        self._count = 0

    def iteration_completed(self, engine: Engine) -> None:  # _LeanMetric's with _accumulate inline: one call less per step
        output: Any = engine.state.output
        y_pred, y = (output["y_pred"], output["y"]) if self._first is not None else self._output_transform(output)
        self._correct.add_(torch.count_nonzero(y_pred.argmax(dim=1) == y))
        self._count += int(y.shape[0])
        if "_result" in self.__dict__:
            self._result = None

    def _accumulate(self, y_pred: torch.Tensor, y: torch.Tensor) -> None:  # update(); the same two lines as above
        self._correct.add_(torch.count_nonzero(y_pred.argmax(dim=1) == y))  # half the cost of bool .sum()
        self._count += int(y.shape[0])

    @sync_all_reduce("_correct", "_count")
    def compute(self) -> float:
        if self._count == 0:
            raise NotComputableError("TopOneAccuracy needs at least one batch before it can be computed")
        return float(self._correct.item()) / self._count
