"""The progress bar of ``flint run`` on a terminal: Ignite's ``ProgressBar`` with the log interval's mean loss."""

from __future__ import annotations

import math
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from flint.engine import FlintEvents, progress
from flint.engine.engine import when
from flint.handlers import ETA
from flint.recipes.app.console import significant

__all__ = ["IntervalLoss", "attach_progress_bar", "BAR_FORMAT"]


class IntervalLoss:
    """The trainer's mean loss per sample over the current log interval, read when a progress bar redraws.

    The interval is :class:`flint.handlers.BatchLogger`'s: it restarts every ``every`` iterations, at each
    epoch's start and where a launch starts (a resume). At a log point the value is the one the
    ``"batch"`` record gets (on one worker; with several, this worker's own). The trainer keeps the
    epoch's running sum on the device (``TrainProgress.loss_sum``); the interval's start is kept there too
    (a copy, no host sync), and :meth:`value` reads the difference back once.

    Ignite's ``ProgressBar`` shows whatever its output transform returns, the last batch's loss in
    its examples; this adds the interval mean from Flint's running sum.

    Args:
        every: iterations per log interval (``--log-interval``).

    Example:
        >>> from flint.engine import create_trainer
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> _ = torch.nn.init.zeros_(model.weight)
        >>> trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), torch.nn.functional.l1_loss)
        >>> loss = IntervalLoss(every=2).attach(trainer)
        >>> seen = []
        >>> _ = trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda t: seen.append(loss.value(t)))
        >>> _ = trainer.run([(torch.zeros(1, 1), torch.full((1, 1), float(b))) for b in (1, 3, 5, 7)], max_epochs=1)
        >>> seen
        [1.0, 2.0, 5.0, 6.0]
    """

    def __init__(self, every: int) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Argument every should be a positive integer, got {every!r}")
        self.every = every
        self._start: tuple[torch.Tensor | None, int] = (None, 0)  # (loss sum, samples) where the interval started

    def attach(self, trainer: Engine) -> IntervalLoss:
        progress(trainer, "IntervalLoss")  # refuses another engine now
        trainer.add_event_handler(Events.STARTED, self._restart)
        trainer.add_event_handler(when(trainer, FlintEvents.NEW_EPOCH), self._new_epoch)
        # After ITERATION_COMPLETED's handlers, the bar's among them: a bar drawn at a log point shows the whole interval.
        trainer.add_event_handler(when(trainer, FlintEvents.ITERATION_REPORT), self._on_iteration)
        return self

    def _restart(self, trainer: Engine) -> None:
        counts = progress(trainer, "IntervalLoss")
        self._start = (counts.loss_sum.clone(), counts.epoch_samples)

    def _new_epoch(self, trainer: Engine) -> None:
        self._start = (None, 0)  # the trainer's running sum starts again from zero

    def _on_iteration(self, trainer: Engine) -> None:
        if not trainer.state.iteration % self.every:
            self._restart(trainer)

    def value(self, trainer: Engine) -> float:
        """The mean loss per sample since the interval started (NaN before its first batch); one host sync."""
        counts = progress(trainer, "IntervalLoss")
        start_sum, start_samples = self._start
        samples = (counts.epoch_samples - start_samples) / idist.get_world_size()  # epoch_samples counts every rank's
        if samples <= 0:
            return math.nan
        total = counts.loss_sum if start_sum is None else counts.loss_sum - start_sum
        return float(total.item()) / samples


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


# Ignite's default bar_format puts {postfix} right after {bar}; tqdm prefixes a postfix with ", " for
# its own layout ("[elapsed<remaining, rate, postfix]"), hence Ignite's "███ , loss=1.3". Here the
# postfix goes where tqdm's separator belongs.
BAR_FORMAT = "{desc}[{n_fmt}/{total_fmt}] {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"


def attach_progress_bar(trainer: Engine, eta: ETA, log_interval: int, every: int = 1, **tqdm_kwargs: Any) -> ProgressBar:
    """Ignite's ``ProgressBar`` on ``trainer``: the epoch's progress and ETA, the log interval's mean loss, the run's ETA.

    Reads like ``Epoch [2/10]: [12/23]  52%|█████▏    | [00:00<00:00, loss=0.2134, run ETA=0:00:07]``.
    The bar is redrawn, and the loss read back, every ``every`` iterations.

    Args:
        trainer: a trainer from ``flint.engine.create_trainer``.
        eta: the :class:`flint.handlers.ETA` attached to it, for the run's ETA.
        log_interval: iterations per log interval (see :class:`IntervalLoss`).
        every: iterations between redraws. Default 1.
        **tqdm_kwargs: passed to tqdm through ``ProgressBar`` (``file=``, ``mininterval=``...).
    """
    loss = IntervalLoss(log_interval).attach(trainer)

    def fields(output: Any) -> dict[str, str]:  # tqdm shows the epoch's ETA itself
        return {"loss": significant(loss.value(trainer)), "run ETA": _clock(eta.estimate(trainer)["run_eta_s"])}

    bar = ProgressBar(persist=False, bar_format=BAR_FORMAT, **tqdm_kwargs)
    bar.attach(trainer, output_transform=fields, event_name=Events.ITERATION_COMPLETED(every=every))
    return bar
