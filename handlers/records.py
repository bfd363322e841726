"""One stream of training records, fanned out to Python logging, a JSON-lines file and TensorBoard.

A record is a flat dict with a ``"phase"`` (``"batch"``, ``"training"``, ``"validation"``, ``"lr"``,
``"summary"``, ...) and plain values: numbers, strings, ``None`` or lists of numbers (one per param
group). Reporting handlers build records and call ``stream.emit(record)``; each sink decides how
to show it. Ignite's loggers write straight to one backend each; this keeps one record feeding all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flint.handlers.files import WriteError
from flint.handlers.log_file import raise_log_file_errors

__all__ = ["Record", "RecordStream", "LoggingSink", "JsonlSink", "TensorBoardSink"]

Record = dict[str, Any]
_log = logging.getLogger(__name__)

# Keys that say where a record sits on the run rather than what was measured.
_POSITION_KEYS = ("phase", "epoch", "iteration", "samples")


class RecordStream:
    """Sends every emitted record to each sink, in order.

    Args:
        sinks: callables taking a record. More can be added with :meth:`add`.

    Example:
        >>> seen = []
        >>> stream = RecordStream([seen.append])
        >>> stream.emit({"phase": "training", "epoch": 1, "loss": 0.5})
        >>> seen
        [{'phase': 'training', 'epoch': 1, 'loss': 0.5}]
    """

    def __init__(self, sinks: Iterable[Callable[[Record], None]] = ()) -> None:
        self.sinks: list[Callable[[Record], None]] = list(sinks)

    def add(self, sink: Callable[[Record], None]) -> RecordStream:
        self.sinks.append(sink)
        return self

    def emit(self, record: Record) -> None:
        """Send ``record`` to every sink; if some fail (a full disk), the others still get it, then the first error is raised."""
        error: Exception | None = None
        for sink in self.sinks:
            try:
                sink(record)
            except Exception as e:
                error = error or e
        if error is not None:
            raise error

    def close(self) -> None:
        """Close every sink that has ``close``; if some fail, the others still close, then the first error is raised."""
        errors = []
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as e:  # e.g. a full disk: still close (flush) the other sinks
                    errors.append(e)
        if errors:
            raise errors[0]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


class LoggingSink:
    """Logs each record as one readable line, e.g. ``[Epoch 2] validation: loss=0.0931 accuracy=0.975``.

    Python's ``logging`` does not raise when a handler cannot write. If a :class:`flint.handlers.LogFile`
    that the logger's records reach has failed (a full disk), the next record and ``close()`` raise
    its :class:`flint.handlers.WriteError`, naming the log file.

    Args:
        logger: where lines go. Default: this module's logger.
        quiet_phases: phases logged at DEBUG instead of INFO. Default ``("lr",)``: the LR is already
            on the batch and training lines.
    """

    def __init__(self, logger: logging.Logger | None = None, quiet_phases: Iterable[str] = ("lr",)) -> None:
        self.logger = logger or _log
        self.quiet_phases = frozenset(quiet_phases)

    def __call__(self, record: Record) -> None:
        head = f"[Epoch {record['epoch']}]" if "epoch" in record else ""
        if record.get("phase") == "batch":
            head += f" [iter {record.get('iteration')}, {record.get('samples')} samples]"
        body = " ".join(f"{k}={_fmt(v)}" for k, v in record.items() if k not in _POSITION_KEYS)
        level = logging.DEBUG if record.get("phase") in self.quiet_phases else logging.INFO
        self.logger.log(level, "%s%s: %s", f"{head} " if head else "", record.get("phase"), body)
        raise_log_file_errors(self.logger)

    def close(self) -> None:
        """Raise the error of a log file that failed since the last record, if any."""
        raise_log_file_errors(self.logger)


class JsonlSink:
    """Appends each record as one JSON line to ``path`` and flushes it, so no written line is lost.

    Non-finite floats are written as ``null`` to keep every line valid JSON. If a line cannot be
    written (a full disk), the part of it that was is cut off again, so the file holds whole lines
    only (a resumed run appends after them), the file is closed and :class:`flint.handlers.WriteError` is
    raised: ``cannot write metrics file PATH: No space left on device``. Every later call raises it
    again.

    Args:
        path: the file, created or appended to; opened at once, so an unwritable one fails here.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "metrics.jsonl"
        >>> sink = JsonlSink(path)
        >>> sink({"phase": "validation", "epoch": 1, "loss": float("nan")})
        >>> sink.close()
        >>> path.read_text()
        '{"phase": "validation", "epoch": 1, "loss": null}\\n'
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.error: WriteError | None = None
        try:
            self._file = open(self.path, "ab")
        except OSError as e:
            raise WriteError.from_error("metrics file", self.path, e) from e
        self._size = self._file.seek(0, os.SEEK_END)  # where the last line written in full ends

    def __call__(self, record: Record) -> None:
        if self.error is not None:
            raise self.error
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        line = (json.dumps(clean) + "\n").encode()
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as e:
            self.error = WriteError.from_error("metrics file", self.path, e)
            with contextlib.suppress(OSError):  # its flush fails again; the file is closed all the same
                self._file.close()
            with contextlib.suppress(OSError):
                os.truncate(self.path, self._size)
            raise self.error from e
        self._size += len(line)

    def close(self) -> None:
        if self.error is not None:
            raise self.error
        self._file.close()


class TensorBoardSink:
    """Writes each numeric field as a scalar ``<phase>/<field>`` against samples seen.

    Underscores in field names become hyphens (``epoch_time`` -> ``training/epoch-time``); a list is
    one scalar per param group (``<field>/group_<i>``). Records of phase ``"lr"`` go to
    ``training/lr/group_<i>``, the one LR curve (LR lists on other phases are not plotted twice).

    Write errors are the writer's: :class:`flint.handlers.TensorBoardWriter` raises one naming the events
    file at the call that hit it. (tensorboardX's own ``SummaryWriter`` writes in a thread: on a full
    disk the thread dies and the next ``add_scalar`` blocks forever.)

    Args:
        writer: anything with ``add_scalar(tag, value, step)``, ``flush()`` and ``close()``, e.g. a
            :class:`flint.handlers.TensorBoardWriter` or a ``tensorboardX.SummaryWriter``.
    """

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def __call__(self, record: Record) -> None:
        phase = record.get("phase")
        if phase == "summary":
            return
        prefix = "training" if phase == "lr" else phase
        step = record.get("samples", record.get("iteration", 0))
        for key, value in record.items():
            if key in _POSITION_KEYS or (key == "lr" and phase != "lr"):
                continue
            tag = f"{prefix}/{key.replace('_', '-')}"
            if isinstance(value, list):
                for i, v in enumerate(value):
                    self.writer.add_scalar(f"{tag}/group_{i}", float(v), step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, float(value), step)
        if phase in ("training", "validation"):  # once an epoch; batch points wait in the events file's buffer
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
