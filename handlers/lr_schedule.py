"""Per-iteration learning-rate schedules (step, cosine, poly, constant) with linear warmup."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import ParamScheduler

from flint.engine.engine import register_state

__all__ = ["LRSchedule", "lr_multiplier", "LR_MODES"]

LR_MODES = ("constant", "step", "cosine", "poly")


def lr_multiplier(
    step: int,
    *,
    mode: str,
    steps_per_epoch: int,
    epochs: int,
    milestones: Sequence[int] = (),
    factor: float = 0.1,
    warmup_epochs: int = 0,
    warmup_start: float = 0.0,
    power: float = 2.0,
) -> float:
    """The factor on the base LR for 0-based iteration ``step``.

    Warmup rises linearly from ``warmup_start`` to 1 over ``warmup_epochs``. Then ``constant`` keeps 1;
    ``step`` multiplies by ``factor`` at each epoch in ``milestones``; ``cosine`` and ``poly`` decay to 0
    at the end of ``epochs`` (poly as ``(1 - t) ** power``), counting from the end of warmup.

    Example:
        >>> [lr_multiplier(s, mode="step", steps_per_epoch=2, epochs=4, milestones=[1, 3]) for s in range(8)]
        [1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.010000000000000002, 0.010000000000000002]
        >>> [lr_multiplier(s, mode="cosine", steps_per_epoch=2, epochs=3, warmup_epochs=1) for s in range(6)]
        [0.0, 0.5, 1.0, 0.8535533905932737, 0.5, 0.14644660940672627]
    """
    warmup = warmup_epochs * steps_per_epoch
    if step < warmup:
        return warmup_start + (1.0 - warmup_start) * step / warmup
    if mode == "constant":
        return 1.0
    if mode == "step":
        return factor ** sum(step >= epoch * steps_per_epoch for epoch in milestones)
    t = min(1.0, (step - warmup) / max(1, epochs * steps_per_epoch - warmup))
    if mode == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if mode == "poly":
        return (1.0 - t) ** power
    raise ValueError(f"Argument mode should be one of {', '.join(LR_MODES)}, got {mode!r}")


class LRSchedule(ParamScheduler):
    """Sets each param group's LR to its base LR times ``multiplier(iteration)``, every iteration.

    An Ignite ``ParamScheduler``: :meth:`attach` registers it at ITERATION_STARTED, and its state (the
    iteration count) is saved with the engine's checkpoints under ``state_key`` ``"scheduler"``.
    Ignite's own schedulers give every group the same value; this scales each group's own base LR,
    so per-group LR multipliers survive the schedule. The LR for the first iteration is set at
    construction, so anything reading the optimizer before training sees it.

    Args:
        optimizer: whose groups' current ``lr`` are the base LRs.
        multiplier: 0-based iteration -> factor, e.g. ``functools.partial(lr_multiplier, mode=...)``.

    Example:
        >>> from functools import partial
        >>> from ignite.engine import Engine, Events
        >>> opt = torch.optim.SGD([{"params": [torch.zeros(1)]}, {"params": [torch.zeros(1)], "lr": 0.1}], lr=1.0)
        >>> engine = Engine(lambda e, b: [g["lr"] for g in opt.param_groups])
        >>> _ = LRSchedule(opt, partial(lr_multiplier, mode="poly", steps_per_epoch=2, epochs=1, power=1)).attach(engine)
        >>> engine.run([0, 0]).output
        [0.5, 0.05]
    """

    state_key = "scheduler"

    def __init__(self, optimizer: torch.optim.Optimizer, multiplier: Callable[[int], float]) -> None:
        super().__init__(optimizer, "lr")
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.multiplier = multiplier
        for group, value in zip(optimizer.param_groups, self.get_param()):
            group["lr"] = value

    def attach(self, engine: Engine, event: Any = Events.ITERATION_STARTED) -> LRSchedule:  # type: ignore[override]
        super().attach(engine, event)
        register_state(engine, self.state_key, self)
        return self

    def get_param(self) -> list[float]:
        factor = self.multiplier(self.event_index)
        return [base * factor for base in self.base_lrs]
