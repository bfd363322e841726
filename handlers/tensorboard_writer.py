"""tensorboardX's ``SummaryWriter``, writing in the calling thread so that a write error reaches the run."""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import RecordWriter, directory_check
from tensorboardX.writer import FileWriter

from flint.handlers.files import WriteError

__all__ = ["TensorBoardWriter"]

_files = itertools.count()


class TensorBoardWriter(SummaryWriter):
    """tensorboardX's ``SummaryWriter`` that writes each event in the calling thread and raises its errors there.

    tensorboardX queues events (10 at most) for a thread that writes them. When a write fails (a full
    disk, a quota) that thread dies, printing a traceback, and nothing empties the queue again: the
    next ``add_*`` call blocks forever, and so do ``close()`` and the interpreter's exit; signals
    cannot end the wait. This writer has no queue and no thread (what it adds): each event goes into
    the events file's buffer at the call, ``flush()`` writes the buffer out and fsyncs it, and an
    error is raised by the call that hit it as a :class:`WriteError` naming the events file, e.g.
    ``cannot write TensorBoard events file RUN/events.out.tfevents.1700000000.host.123.0: No space
    left on device``. After an error the file is closed and every later ``add_*``, ``flush`` or
    ``close`` raises the same error. Everything else (the ``add_*`` methods, the events file format)
    is tensorboardX's. Use it from one thread.

    Args:
        logdir: the directory of the events file, created if missing.
        filename_suffix: appended to the events file's name. Default ``""``.

    Example:
        >>> import tempfile
        >>> logdir = tempfile.mkdtemp()
        >>> writer = TensorBoardWriter(logdir)
        >>> writer.add_scalar("training/loss", 0.5, 32)
        >>> writer.close()
        >>> [name.startswith("events.out.tfevents.") for name in os.listdir(logdir)]
        [True]
    """

    def __init__(self, logdir: str | os.PathLike[str], filename_suffix: str = "") -> None:
        self._suffix = filename_suffix  # read by _get_file_writer, which SummaryWriter.__init__ calls
        super().__init__(logdir=str(logdir), filename_suffix=filename_suffix)

    def _get_file_writer(self) -> FileWriter:  # tensorboardX's private hook: docs/engine.md, "Private surfaces"
        if self.file_writer is None:  # the first call, or one after close(): a new events file, as tensorboardX does
            self.file_writer = _FileWriter(self.logdir, self._suffix)
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
        return self.file_writer

    @property
    def path(self) -> str | None:
        """The events file being written; None after ``close()``."""
        return None if self.file_writer is None else self.file_writer.event_writer.path


class _FileWriter(FileWriter):
    """tensorboardX's ``FileWriter`` over an :class:`_EventFile` instead of its queue and thread."""

    def __init__(self, logdir: str, filename_suffix: str) -> None:  # not FileWriter's (it starts the thread): its two attributes
        self.event_writer = _EventFile(logdir, filename_suffix)
        self._default_metadata: dict[str, Any] = {}


class _EventFile:
    """One events file written in the calling thread (the interface of tensorboardX's ``EventFileWriter``)."""

    def __init__(self, logdir: str, filename_suffix: str) -> None:
        self.logdir = logdir
        # TensorBoard's own writer's name: the time orders the files; pid and count keep two writers apart.
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_files)}"
        self.path = os.path.join(logdir, name + filename_suffix)
        self.error: WriteError | None = None
        try:
            directory_check(logdir)
            self._records = RecordWriter(self.path)
        except OSError as e:
            raise WriteError.from_error("TensorBoard events file", self.path, e) from e
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()  # an unwritable file fails here, and no buffered event is left for the garbage collector to write

    def get_logdir(self) -> str:
        return self.logdir

    def add_event(self, event: event_pb2.Event) -> None:
        self._do(self._records.write, event.SerializeToString())

    def flush(self) -> None:
        self._do(self._records.flush)

    def close(self) -> None:
        self._do(self._records.close)

    def reopen(self) -> None:
        """Nothing to do: ``SummaryWriter`` makes a new events file when used after ``close()``."""

    def _do(self, action: Callable[..., None], *args: Any) -> None:
        if self.error is not None:
            raise self.error
        try:
            action(*args)
        except OSError as e:
            self.error = WriteError.from_error("TensorBoard events file", self.path, e)
            with contextlib.suppress(OSError):  # close it now: never again a flush of the failed buffer
                self._records.close()
            raise self.error from e
