"""A crash-safe ``DiskSaver``: durable atomic writes, and no old checkpoint removed before the new one is on disk."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.handlers import DiskSaver

__all__ = ["SafeDiskSaver"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SafeDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` with two fixes for crashes and full disks.

    Ignite's ``Checkpoint`` asks its saver to remove the oldest file *before* writing the new one, and
    ``DiskSaver(atomic=True)`` renames its temp file without ``fsync``: a crash in between can leave no
    checkpoint at all. This saver defers each removal until the next checkpoint is written in full:
    to a hidden temp file in the same directory, flushed and fsync'd, renamed over the final name, and
    the directory fsync'd. If writing fails (disk full, kill), the temp file is removed and every
    older checkpoint is still there. Files ending in ``.pt`` are therefore always complete. A temp
    file left by a writer that was killed (SIGKILL, power loss) is removed when the next saver for
    the directory is made.

    Args:
        dirname: the checkpoint directory, created if missing. Unlike ``DiskSaver``'s default it may
            already hold checkpoints (a resumed run writes beside its own).
        save_on_rank: the rank that writes. Default 0.
        **kwargs: passed to ``torch.save``.

    Example:
        >>> import tempfile, torch
        >>> from ignite.engine import Engine, Events
        >>> from ignite.handlers import Checkpoint
        >>> d = tempfile.mkdtemp()
        >>> model = torch.nn.Linear(1, 1)
        >>> engine = Engine(lambda e, b: None)
        >>> _ = engine.add_event_handler(Events.ITERATION_COMPLETED, Checkpoint({"model": model}, SafeDiskSaver(d), n_saved=2))
        >>> _ = engine.run([0] * 5)
        >>> sorted(os.listdir(d))
        ['model_4.pt', 'model_5.pt']
    """

    def __init__(self, dirname: str | os.PathLike[str], save_on_rank: int = 0, **kwargs: Any) -> None:
        super().__init__(Path(dirname), atomic=True, create_dir=True, require_empty=False, save_on_rank=save_on_rank, **kwargs)
        self._pending_removals: list[str] = []
        if idist.get_rank() == save_on_rank:
            self._remove_stale_temp_files()

    def _remove_stale_temp_files(self) -> None:
        for tmp in self.dirname.glob(".*.tmp"):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
                tmp.unlink(missing_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        self._pending_removals = [f for f in self._pending_removals if f != filename]
        super().__call__(checkpoint, filename, metadata)
        for name in self._pending_removals:
            if idist.get_rank() == self.save_on_rank:
                (self.dirname / name).unlink(missing_ok=True)
        self._pending_removals = []

    def remove(self, filename: str) -> None:
        self._pending_removals.append(filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                func(checkpoint, f, **self.kwargs)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except Exception as e:  # disk full, quota, I/O error: say which file, keep the older ones
            tmp.unlink(missing_ok=True)
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
            raise OSError(f"cannot write checkpoint {path}: {reason}") from e
        except BaseException:  # interrupted: no partial file either
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.dirname)
