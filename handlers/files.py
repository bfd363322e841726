"""Writing a run's files: one error that names the file and says why, and atomic text writes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["WriteError", "write_atomic", "write_text_atomic"]


def _os_error(error: BaseException) -> OSError | None:
    """``error`` if it is an ``OSError``, else the first ``OSError`` it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class WriteError(OSError):
    """A file that could not be written: ``cannot write <what> <path>: <reason>``, one line.

    An ``OSError`` with the failure's ``errno``, its reason in words as ``strerror`` (``No space left
    on device``, ``Permission denied``, ``Read-only file system``, ...) and the file as ``filename``.
    Every file of a Flint run (checkpoints, ``metrics.jsonl``, TensorBoard events, ``train.log``, the
    progress file) fails with one, so the CLI's one line names the file and the reason.

    Build one from what a write raised with :meth:`from_error`, which finds the ``OSError`` behind an
    error raised because of one: on a full disk ``torch.save`` raises ``RuntimeError: [enforce fail at
    inline_container.cc:672] . unexpected pos ...``, with the ``OSError`` as its context.

    Args:
        what: what the file is: ``"checkpoint"``, ``"metrics file"``, ``"log file"``, ...
        path: the file.
        reason: why it could not be written, in words.
        errno: the OS's error number, if there is one. Default None.

    Example:
        >>> import errno
        >>> error = WriteError.from_error("log file", "run/train.log", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        >>> str(error), error.errno == errno.ENOSPC
        ('cannot write log file run/train.log: No space left on device', True)
    """

    def __init__(self, what: str, path: str | os.PathLike[str], reason: str, errno: int | None = None) -> None:
        super().__init__(errno, reason, str(path))
        self.what = what

    @classmethod
    def from_error(cls, what: str, path: str | os.PathLike[str], error: BaseException) -> WriteError:
        """The ``WriteError`` for ``error``, raised while writing ``path``; the OS's reason if an ``OSError`` is behind it."""
        cause = _os_error(error)
        if cause is not None and cause.strerror:
            return cls(what, path, cause.strerror, cause.errno)
        text = str(error).strip()
        return cls(what, path, text.splitlines()[0] if text else type(error).__name__, cause.errno if cause else None)

    def __str__(self) -> str:
        return f"cannot write {self.what} {self.filename}: {self.strerror}"

    def __reduce__(self) -> tuple:  # OSError's would pass (errno, strerror) to __init__
        return type(self), (self.what, self.filename, self.strerror, self.errno)


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], object], what: str) -> None:
    """Replace ``path`` with what ``write(temp_path)`` writes, in one step: readers never see a part.

    ``write`` writes a hidden temp file beside ``path``, which is then renamed over ``path``. If
    either fails (a full disk), the temp file is removed, ``path`` keeps its old content and
    :class:`WriteError` is raised. Not fsync'd.

    Args:
        path: the file to write.
        write: writes the file's content to the path it is given.
        what: what the file is, for the error message, e.g. ``"progress file"``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        open(tmp, "wb").close()  # an unwritable place fails here with the OS's reason, whatever `write` would raise
        write(tmp)
        os.replace(tmp, path)
    except Exception as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if _os_error(e) is None:
            raise
        raise WriteError.from_error(what, path, e) from e


def write_text_atomic(path: str | os.PathLike[str], text: str, what: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one step: readers see the old file or the new one, never a part.

    :func:`write_atomic` for small text files that are rewritten often (a progress file, a config).

    Args:
        path: the file to write.
        text: its new content.
        what: what the file is, for the error message, e.g. ``"progress file"``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "progress.json"
        >>> write_text_atomic(path, '{"epoch": 1}\\n', "progress file")
        >>> path.read_text(), sorted(p.name for p in path.parent.iterdir())
        ('{"epoch": 1}\\n', ['progress.json'])
    """
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what)
