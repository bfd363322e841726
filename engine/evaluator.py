"""The evaluation engine: eval mode, no gradients, metrics attached."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Events
from ignite.metrics import Metric

from flint.engine.engine import Engine
from flint.engine.trainer import PrepareBatch, _autocast_dtype, _default_prepare, _resolve_device

__all__ = ["create_evaluator"]


def create_evaluator(
    model: torch.nn.Module,
    metrics: Mapping[str, Metric] | None = None,
    *,
    device: str | torch.device | None = None,
    amp: bool = False,
    prepare_batch: PrepareBatch | None = None,
    non_blocking: bool = False,
) -> Engine:
    """Create an engine that evaluates ``model`` and computes ``metrics`` over one pass of the data.

    The model is put in eval mode when a run starts; every batch runs forward under
    ``torch.no_grad()`` (and autocast if ``amp``). ``engine.state.output`` is
    ``{"y_pred": ..., "y": ..., "criterion_kwargs": {}}``, the form Ignite's metrics (``Loss`` too)
    read directly. Each metric is reset when the run starts and computed into
    ``engine.state.metrics[name]`` when it ends. Under ``amp`` the predictions are cast back to
    float32 for the metrics. The engine fires Flint's events (``flint.engine.FlintEvents``) as the
    trainer's does.

    Args:
        model: the network, already on ``device``.
        metrics: name -> Ignite metric. Default: none.
        device: where batches go; default: the device of the model's first parameter.
        amp: autocast as the trainer does. Default False.
        prepare_batch: ``prepare_batch(batch, device, non_blocking) -> (x, y)``; default
            :func:`flint.engine.prepare_batch`.
        non_blocking: passed to ``prepare_batch``. Default False.

    Example:
        >>> import torch
        >>> from ignite.metrics import Accuracy
        >>> model = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2)), model.bias.zero_()
        >>> evaluator = create_evaluator(model, {"accuracy": Accuracy()})
        >>> data = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))]
        >>> evaluator.run(data).metrics["accuracy"]
        0.5
    """
    device = _resolve_device(model, device)
    prepare: Callable[..., Any] = prepare_batch or _default_prepare
    amp_dtype = _autocast_dtype(device)

    def evaluate(engine: Engine, batch: Any) -> dict[str, Any]:
        x, y = prepare(batch, device, non_blocking)
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            y_pred = model(x)
        if amp and y_pred.is_floating_point():
            y_pred = y_pred.float()  # metrics (Loss) then run in float32, outside autocast
        return {"y_pred": y_pred, "y": y, "criterion_kwargs": {}}

    evaluator = Engine(evaluate)
    evaluator.fire_flint_events()
    evaluator.add_event_handler(Events.STARTED, lambda _: model.eval())
    for name, metric in (metrics or {}).items():
        metric.attach(evaluator, name)
    return evaluator
