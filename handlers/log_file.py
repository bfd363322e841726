"""A log file that keeps its first write error for the run to raise, instead of printing tracebacks."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from flint.handlers.files import WriteError

__all__ = ["LogFile", "raise_log_file_errors"]


class LogFile(logging.FileHandler):
    """A ``logging.FileHandler`` that stops at its first write error and keeps it as ``error``.

    When a handler cannot write (a full disk), Python's ``logging`` prints ``--- Logging error ---``
    and a traceback to stderr for that record and for every later one, and the program goes on. This
    handler instead keeps the first ``OSError`` as ``error``, a :class:`WriteError` naming the file
    (``cannot write log file RUN/train.log: No space left on device``), closes the file and drops
    the records that follow, printing nothing (what it adds). Something must raise the error:
    :class:`flint.handlers.LoggingSink` does at its next record and when closed (see
    :func:`raise_log_file_errors`), so a run that reports through one stops within one log interval.
    Other errors (a bad format string) are reported by ``logging`` as usual.

    Args:
        path: the log file, appended to; opened at once, so an unwritable one fails here.
        encoding: of the file. Default ``"utf-8"``.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "train.log")
        >>> handler = LogFile(path)
        >>> log = logging.getLogger("log-file-example")
        >>> log.addHandler(handler)
        >>> log.warning("written")
        >>> handler.close()
        >>> log.removeHandler(handler)
        >>> open(path).read(), handler.error
        ('written\\n', None)
    """

    def __init__(self, path: str | os.PathLike[str], encoding: str = "utf-8") -> None:
        try:
            super().__init__(path, encoding=encoding)
        except OSError as e:
            raise WriteError.from_error("log file", os.path.abspath(path), e) from e
        self.error: WriteError | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.error is None:  # after an error, nothing more: FileHandler would reopen the file
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            super().handleError(record)
            return
        self.error = WriteError.from_error("log file", self.baseFilename, error)
        stream, self.stream = self.stream, None  # type: ignore[assignment]
        if stream is not None:
            with contextlib.suppress(OSError):  # its flush fails again; the file is closed all the same
                stream.close()


def raise_log_file_errors(logger: logging.Logger) -> None:
    """Raise the write error kept by a :class:`LogFile` that ``logger``'s records reach, if any.

    Looks at the handlers of ``logger`` and of its ancestors while it propagates, as ``logging`` does
    to pass a record on.
    """
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, LogFile) and handler.error is not None:
                raise handler.error
        current = current.parent if current.propagate else None
