"""Preemption: on SIGTERM or SIGINT, finish the update cycle and stop the run, which then saves a checkpoint."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from ignite.engine import Engine, Events

from flint.engine.engine import FlintEvents, when
from flint.engine.progress import TrainProgress, progress
from flint.engine.trainer import is_last_update_of_epoch

__all__ = ["Preemption"]

logger = logging.getLogger(__name__)


class Preemption:
    """Turns a first SIGTERM/SIGINT into a clean stop; a second one aborts at once.

    Ignite has no signal handling; cluster schedulers send SIGTERM some time before they kill a job.
    While :meth:`signal_handlers` is active, the first signal only sets a flag; the trainer then
    finishes the current iteration (on a Flint trainer, the current update cycle, so no accumulated
    gradient is lost) and terminates, and ``triggered`` is True: ``flint.handlers.Checkpointing`` saves
    the stopped run at COMPLETED, and the CLI exits 3 for a relaunch with ``--resume``. A signal in
    an epoch's last iteration or during validation takes effect at the epoch's ``FlintEvents.SAVE``,
    after its records and validation. A second signal raises ``KeyboardInterrupt`` where the
    program is; one within ``grace`` seconds of the first is the same event delivered twice (to the
    process group and forwarded by a parent) and is ignored, and so is any before the trainer
    started (the stop is decided), once the trainer is stopping (``triggered``) or the run is
    settled (:meth:`settle`); a signal during the last epoch's end changes nothing (the run is complete). :meth:`request` does what a
    signal does, for code and tests.

    In data-parallel training every rank must stop at the same iteration, or the others wait forever
    in their next collective: pass ``agree``, called by every rank at every possible stop with its
    own "stop requested", returning whether any rank asked (an all-reduce with MAX).

    Args:
        signals: the signals to catch. Default ``(SIGTERM, SIGINT)``.
        agree: ``agree(requested) -> bool`` across ranks. Default None (one process).
        grace: seconds in which a repeated signal counts as the same one. Default 1.0.

    Example:
        >>> from ignite.engine import Engine
        >>> trainer = Engine(lambda e, b: None)
        >>> stop = Preemption().attach(trainer)
        >>> _ = trainer.add_event_handler(Events.ITERATION_STARTED(once=3), lambda _: stop.request())
        >>> state = trainer.run(range(10), max_epochs=2)
        >>> state.iteration, stop.triggered
        (3, True)
    """

    def __init__(
        self,
        signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
        agree: Callable[[bool], bool] | None = None,
        grace: float = 1.0,
    ) -> None:
        self.signals, self.agree, self.grace = tuple(signals), agree, grace
        self._requested_at = 0.0
        self.requested: int | None = None  # the signal number received, 0 for request()
        self.triggered = False
        self.settled = False  # see settle()
        self._running = False  # the trainer has started: a repeated signal may abort
        self._counts: TrainProgress | None = None  # a Flint trainer's: its update cycle in progress

    def attach(self, engine: Engine) -> Preemption:
        self._counts = progress(engine)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)
        engine.add_event_handler(when(engine, FlintEvents.SAVE), self._at_epoch_end)
        return self

    def settle(self) -> None:
        """The run's outcome is decided (trained, or stopped): from now on signals are ignored, so that
        closing it (the summary, the last checkpoint's write) is never cut short."""
        self.settled = True

    def request(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """Ask for a stop at the next update boundary; a second request raises KeyboardInterrupt.

        Ignored once the stop is under way (``triggered``: the trainer stops and saves) or the run is
        :meth:`settle`d."""
        if self.triggered or self.settled:
            return  # logged by nothing: a handler writing to a stream the program writes to can fail
        if self.requested is not None and not self._running:
            return  # before training: the stop is already decided, nothing to abort
        if self.requested is not None:
            if signum and time.monotonic() - self._requested_at < self.grace:
                return  # the same signal, delivered twice
            error = KeyboardInterrupt(f"signal {signum} received again: aborting without a checkpoint")
            error.signum = signum or signal.SIGINT  # type: ignore[attr-defined]  # for the exit status, 128 + signum
            raise error
        self.requested, self._requested_at = signum, time.monotonic()  # logged by the engine, not here:
        # a signal handler that writes to a stream the program is writing to can fail (reentrant call)

    @contextmanager
    def signal_handlers(self) -> Iterator[Preemption]:
        """Route ``signals`` to :meth:`request` inside the block (main thread only), then restore them."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Preemption: not the main thread, signals are not handled")
            yield self
            return
        previous = {s: signal.signal(s, self.request) for s in self.signals}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _started(self, engine: Engine) -> None:
        self._running = True

    def _on_iteration(self, engine: Engine) -> None:
        if self.requested is None and self.agree is None:
            return  # nothing to decide: the usual case, first
        if is_last_update_of_epoch(engine):
            return  # the epoch's end (records, validation, checkpoint) comes first: SAVE decides
        if self._counts is None or not self._counts.cycle_batches:  # not mid update cycle: no gradient is lost
            self._maybe_stop(engine)

    def _at_epoch_end(self, engine: Engine) -> None:
        if engine.state.max_epochs is not None and engine.state.epoch >= engine.state.max_epochs:
            return  # the run is complete and saves at its end anyway: nothing to stop (every rank alike)
        self._maybe_stop(engine)

    def any_requested(self) -> bool:
        """Whether a stop was requested here or, with ``agree``, on any rank: every rank must call it at the same point."""
        return self.agree(self.requested is not None) if self.agree is not None else self.requested is not None

    def _maybe_stop(self, engine: Engine) -> None:
        if self.triggered:
            return
        if not self.any_requested():
            return
        name = signal.Signals(self.requested).name if self.requested else "a stop request"
        logger.warning("Received %s: stopping at iteration %d", name, engine.state.iteration)
        self.triggered = True
        engine.terminate()
