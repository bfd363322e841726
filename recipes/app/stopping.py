"""Stopping: what SIGTERM and SIGINT do to a Flint process, from its start until it is gone, and its exit status.

One object, :data:`STOPS`, owns the process's stop signals through a run's whole life:

- **before training** (options, data, model, the checkpoint's load): the first signal ends the launch
  with :class:`StopSignal`; the CLI exits 3 if the run has a checkpoint to resume from, else 128 + N;
- **during training** (:meth:`Stops.training`): signals go to the run's :class:`flint.handlers.Preemption`,
  which stops at the next update boundary and saves (exit 3); a second one aborts (exit 128 + N);
- **spawned workers** (:meth:`Stops.forwarding`): the launching process passes each signal on to them;
- **once settled** (:meth:`Stops.settle`: the summary is being written, or a command's output): signals
  are ignored until the process exits, so nothing a scheduler sends then changes the exit status;
- **DataLoader workers** (:func:`dataloader_worker_init`) leave stopping to the main process.

At most one exception is raised per process for a stop: signals after it are ignored, so the one line
that reports it is never cut short.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

__all__ = [
    "STOPS", "Stops", "StopSignal", "dataloader_worker_init", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED",
    "exit_status",
]  # fmt: skip

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 3
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignal(BaseException):
    """SIGTERM or SIGINT before training started: the launch ends there, and nothing more is saved.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` on the way swallows it.
    """

    def __init__(self, signum: int) -> None:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        super().__init__(f"stopped by {name} before training started")
        self.signum = signum


def exit_status(summary: Mapping[str, Any]) -> int:
    """The exit status of a run that ended with ``summary``: 3 for a stop saved to resume from, else 0."""
    return EXIT_INTERRUPTED if summary.get("status") == "interrupted" else EXIT_OK


class Stops:
    """The stop signals of this process (see the module's docstring); use the one :data:`STOPS`.

    Example:
        >>> stops = Stops()
        >>> stops.install()
        >>> stops.settle()
        >>> os.kill(os.getpid(), signal.SIGTERM)  # ignored: the outcome is settled
        >>> stops.uninstall()
    """

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._route: Callable[[int, FrameType | None], None] | None = None
        self._raised = False
        self.settled = False

    def install(self) -> None:
        """Take SIGTERM and SIGINT for this process (main thread only; elsewhere signals are left alone)."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Not the main thread: stop signals are not handled")
            return
        self._route, self._raised, self.settled = None, False, False
        for s in SIGNALS:
            previous = signal.signal(s, self._handle)
            self._previous.setdefault(s, previous)

    def uninstall(self) -> None:
        """Give the signals back to the handlers found at :meth:`install` (``fit()`` returning to its caller)."""
        if threading.current_thread() is threading.main_thread():
            for s, handler in self._previous.items():
                signal.signal(s, handler)
        self._previous.clear()
        self._route, self.settled = None, False

    def settle(self) -> None:
        """The outcome is decided: from now on stop signals are ignored, until :meth:`uninstall` or exit."""
        self.settled = True
        if self._previous and threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, signal.SIG_IGN)

    @contextmanager
    def training(self, preemption: Any) -> Iterator[None]:
        """Inside the block, signals go to ``preemption.request`` (a :class:`flint.handlers.Preemption`)."""
        with self._routed(preemption.request):
            yield

    @contextmanager
    def forwarding(self) -> Iterator[None]:
        """Inside the block, each signal is passed on to this process's children (spawned workers), which stop and report."""

        def forward(signum: int, frame: FrameType | None) -> None:
            for child in multiprocessing.active_children():
                try:
                    os.kill(child.pid, signum)  # type: ignore[arg-type]
                except ProcessLookupError:  # it has just exited
                    pass

        with self._routed(forward):
            yield

    @contextmanager
    def _routed(self, route: Callable[[int, FrameType | None], None]) -> Iterator[None]:
        """``route`` takes the signals in the block; installed for the block if nothing installed them (a job run from Python)."""
        here = not self._previous
        if here:
            self.install()
        previous, self._route = self._route, route
        try:
            yield
        finally:
            self._route = previous
            if here:
                self.uninstall()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.settled or self._raised:
            return  # decided, or being reported: nothing may change the exit status now
        try:
            if self._route is not None:
                self._route(signum, frame)
                return
            raise StopSignal(signum)
        except BaseException:
            self._raised = True
            raise


STOPS = Stops()
"""This process's stop signals: signals belong to a process, so there is one."""


def dataloader_worker_init(worker_id: int) -> None:
    """A DataLoader's ``worker_init_fn``: its workers leave stopping to the main process.

    They share the process group, so a terminal's Ctrl-C or a scheduler's SIGTERM to the group reaches
    them too; the main process saves and then shuts them down itself. SIGTERM cannot simply be ignored:
    multiprocessing stops workers with it at exit (and would then wait forever). It is taken in a
    thread that knows the sender: from the parent, the worker exits; from anyone else, it is ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not POSIX: the default, a group SIGTERM kills the workers
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started from here inherit it

    def take_sigterm() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    threading.Thread(target=take_sigterm, name="flint-sigterm", daemon=True).start()
