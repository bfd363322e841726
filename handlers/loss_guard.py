"""Loss guard: stop the run, before anything is saved, when the loss becomes NaN or infinite."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events

__all__ = ["LossGuard", "NonFiniteLoss"]

logger = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


class LossGuard:
    """Raises :class:`NonFiniteLoss` once a training loss has been NaN or infinite.

    Ignite's ``TerminateOnNan`` reads every output back to the host (a device sync per iteration)
    and only asks the engine to terminate, so handlers later on the same event still run and can
    save the broken weights. This guard sums the losses on their device (the sum is NaN or infinite
    once any loss was; no sync), reads the sum every ``every`` iterations, at each
    EPOCH_COMPLETED (attach it before validation and checkpointing) and whenever :meth:`check` is
    called (call it before any other save), and raises: nothing after it runs, so the last
    checkpoint on disk is the last good one.

    Args:
        every: iterations between reads of the flag. Default 50.
        output_transform: engine output -> loss tensor. Default ``output["loss"]``.

    Example:
        >>> import torch
        >>> from ignite.engine import Engine
        >>> engine = Engine(lambda e, b: {"loss": torch.tensor(b)})
        >>> _ = LossGuard(every=2).attach(engine)
        >>> try:
        ...     engine.run([1.0, float("nan"), 2.0, 3.0])
        ... except NonFiniteLoss as e:
        ...     print(e)
        the training loss became nan or inf at or before iteration 2 (epoch 1)
    """

    def __init__(self, every: int = 50, output_transform: Callable[[Any], torch.Tensor] = lambda out: out["loss"]) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Argument every should be a positive integer, got {every!r}")
        self.every, self.output_transform = every, output_transform
        self._flag: torch.Tensor | None = None

    def attach(self, engine: Engine) -> LossGuard:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)  # one handler: each costs
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check)  # several us per iteration in a real loop
        return self

    def _on_iteration(self, engine: Engine) -> None:
        loss = self.output_transform(engine.state.output).detach()  # one in-place add per iteration, on the device
        if self._flag is None:
            self._flag = loss.float().clone()
        else:
            self._flag.add_(loss)
        if engine.state.iteration % self.every == 0:
            self.check(engine)

    def check(self, engine: Engine) -> None:
        """Raise :class:`NonFiniteLoss` if any loss so far was NaN or infinite (reads one value back)."""
        # Summed over the ranks (a no-op in one process): every rank stops at the same check.
        total = idist.all_reduce(self._flag.float().clone()) if self._flag is not None else None
        if isinstance(total, torch.Tensor) and not bool(torch.isfinite(total)):
            raise NonFiniteLoss(
                f"the training loss became nan or inf at or before iteration {engine.state.iteration} (epoch {engine.state.epoch})"
            )
