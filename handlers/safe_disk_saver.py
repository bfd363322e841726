"""A crash-safe ``DiskSaver``: durable atomic writes, no old checkpoint removed before the new one is on disk, an optional checksum."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import ignite.distributed as idist
import torch
from ignite.handlers import DiskSaver

from flint.handlers.checkpoint_io import CHECKSUM_KEY, checksum
from flint.handlers.files import WriteError

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


def _write_error(path: Path, e: BaseException) -> WriteError:
    return WriteError.from_error("checkpoint", path, e)  # torch.save's "unexpected pos" becomes the OSError behind it


class SafeDiskSaver(DiskSaver):
    """A ``DiskSaver`` that writes crash-safely: durable atomic writes, no old checkpoint removed before the new one is on disk.

    Ignite's ``Checkpoint`` asks its saver to remove the oldest file *before* writing the new one, and
    ``DiskSaver(atomic=True)`` renames its temp file without ``fsync``: a crash in between can leave no
    checkpoint at all. This saver defers each removal until the next checkpoint is written in full:
    to a hidden temp file in the same directory, flushed and fsync'd, renamed over the final name, and
    the directory fsync'd. If writing fails (disk full, kill), the temp file is removed and every
    older checkpoint is still there. Files ending in ``.pt`` are therefore always complete. A temp
    file left by a writer that was killed (SIGKILL, power loss) is removed when the next saver for
    the directory is made. Only ``__call__`` and ``remove`` are its own: as a ``DiskSaver`` (its
    ``dirname``) it gets full paths from Ignite's ``Checkpoint`` (``last_checkpoint``, ``reload_objects``).

    With ``sync_in_background``, the call returns once the temp file is written (the state is
    serialised, so training may change it again) and a thread does the rest, fsync (most of a save's
    time), rename, directory fsync, removals, in that order, so the guarantees above hold. :meth:`wait`
    joins the thread and raises its error; the next save waits first, so a failed write stops the run
    one save later at the latest. Call :meth:`wait` before reading the directory or exiting (a pending
    thread also finishes at interpreter exit). Every write error is a :class:`flint.handlers.WriteError`,
    e.g. ``cannot write checkpoint PATH: No space left on device``.

    With ``add_checksum``, each file also holds :func:`flint.handlers.checkpoint_io.checksum` of its
    content under the key ``"checksum"`` (verified by ``checkpoint_io.read_state``). For a dict of
    objects, as ``Checkpointing`` writes: ``Checkpoint`` saves a lone object's state unwrapped, which
    would then no longer load strictly.

    Args:
        dirname: the checkpoint directory, created if missing. Unlike ``DiskSaver``'s default it may
            already hold checkpoints (a resumed run writes beside its own).
        save_on_rank: the rank that writes. Default 0.
        sync_in_background: finish each save (fsync, rename, removals) in a thread. Default False.
        add_checksum: store a checksum of the content in each file. Default False.
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

    TEMP_FILES = ".*.tmp"  # the glob of its temp files: ".NAME.PID.tmp" beside each file being written

    def __init__(self, dirname: str | os.PathLike[str], save_on_rank: int = 0, sync_in_background: bool = False,
                 add_checksum: bool = False, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(Path(dirname), create_dir=True, require_empty=False, save_on_rank=save_on_rank, **kwargs)
        self.sync_in_background, self.add_checksum = sync_in_background, add_checksum
        self._pending_removals: list[str] = []
        self._finishing: threading.Thread | None = None
        self._error: WriteError | None = None  # from the thread, raised by wait()
        self._unremoved: list[str] = []  # removals a failed background save did not make
        if idist.get_rank() == save_on_rank:
            self._remove_stale_temp_files()

    def _remove_stale_temp_files(self) -> None:
        for tmp in self.dirname.glob(self.TEMP_FILES):
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
                tmp.unlink(missing_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        self.wait()  # the previous save is complete (or its error is raised here)
        self._pending_removals = [f for f in self._pending_removals if f != filename]
        if idist.get_rank() != self.save_on_rank:  # another rank: nothing written, nothing to remove
            self._pending_removals = []
            return
        if self.add_checksum:
            checkpoint = {**checkpoint, CHECKSUM_KEY: checksum(checkpoint)}
        written = self._write(checkpoint, self.dirname / filename)  # if it fails, the removals wait for the next save
        removals, self._pending_removals = self._pending_removals, []
        if not self.sync_in_background:
            self._finish(*written, removals)
            self.wait()
            return
        self._finishing = threading.Thread(target=self._finish, args=(*written, removals), name="checkpoint-sync")
        self._finishing.start()  # not a daemon: a pending save completes even if the program exits

    def wait(self) -> None:
        """Block until the last save is durable; raise its ``OSError`` if it failed."""
        if self._finishing is not None:
            self._finishing.join()
            self._finishing = None
        self._pending_removals = self._unremoved + self._pending_removals
        self._unremoved = []
        error, self._error = self._error, None
        if error is not None:
            raise error

    def remove(self, filename: str) -> None:
        self._pending_removals.append(filename)

    def _write(self, checkpoint: Mapping, path: Path) -> tuple[IO[bytes], Path, Path]:
        """Serialise ``checkpoint`` into a temp file beside ``path``: (the open file, the temp file, ``path``)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            f = open(tmp, "wb")
        except OSError as e:
            raise _write_error(path, e) from e
        try:
            torch.save(checkpoint, f, **self.kwargs)
            f.flush()
        except BaseException as e:  # disk full, quota, I/O error, interrupted: no partial file, older ones kept
            with contextlib.suppress(OSError):  # flushing what is left in its buffer fails again on a full disk
                f.close()
            tmp.unlink(missing_ok=True)
            if isinstance(e, Exception):
                raise _write_error(path, e) from e
            raise
        return f, tmp, path

    def _finish(self, f: IO[bytes], tmp: Path, path: Path, removals: list[str]) -> None:
        """Make the temp file durable under its final name, then remove what it replaces; errors go to wait()."""
        try:
            try:
                os.fsync(f.fileno())
            finally:
                f.close()
            os.replace(tmp, path)
        except Exception as e:
            tmp.unlink(missing_ok=True)
            self._error, self._unremoved = _write_error(path, e), removals
            return
        _fsync_dir(self.dirname)
        for name in removals:
            (self.dirname / name).unlink(missing_ok=True)
