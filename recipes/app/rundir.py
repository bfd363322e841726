"""A run's directory: one run at a time (an OS lock), and what a checkpoint says of the run it belongs to."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from flint.recipes.app.config import UsageError

__all__ = ["RunDirLock", "RunConfig", "config_changes", "RESUMABLE_CHANGES"]

LOCK_NAME = ".flint.lock"

# Options a resumed run may change: they do not alter what is trained or how.
RESUMABLE_CHANGES = (
    "epochs", "resume", "interrupt_at", "progress", "progress_file", "device", "output_dir", "log_interval", "data_dir",
    "download", "profile", "nproc_per_node", "num_workers",
)  # fmt: skip


def config_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``name=old, now new`` for each option that differs from the saved run's and may not change.

    ``epochs`` may grow, not shrink. Options the saved run did not have (an older Flint) are not compared.

    Example:
        >>> config_changes({"batch_size": 32, "epochs": 10, "seed": 1}, {"batch_size": 64, "epochs": 5, "seed": 1})
        ['epochs=10, now 5 (it may grow, not shrink)', 'batch_size=32, now 64']
    """
    changes = []
    if "epochs" in saved and now.get("epochs", saved["epochs"]) < saved["epochs"]:
        changes.append(f"epochs={saved['epochs']}, now {now['epochs']} (it may grow, not shrink)")
    changes += [f"{key}={saved[key]!r}, now {now[key]!r}" for key in now
                if key in saved and key not in RESUMABLE_CHANGES and saved[key] != now[key]]  # fmt: skip
    return changes


class RunConfig:
    """The run's options, kept in its checkpoints (``flint.engine.register_state`` key ``config``).

    ``load_state_dict`` refuses, with a :class:`flint.recipes.app.config.UsageError` naming each change, a
    checkpoint saved under options that change what is trained (:func:`config_changes`): wherever
    a checkpoint is resumed, it continues the run it belongs to.
    """

    def __init__(self, options: dict[str, Any], source: str = "checkpoint") -> None:
        self.options, self.source = options, source

    def state_dict(self) -> dict[str, Any]:
        return {"json": json.dumps(self.options)}  # one string: plain data whatever the options hold

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        changed = config_changes(json.loads(state["json"]), self.options)
        if changed:
            raise UsageError(f"--resume: the {self.source} was trained with {'; '.join(changed)}; resume it unchanged")


class RunDirLock:
    """Holds an exclusive OS lock on ``DIR/.flint.lock`` while a run uses the directory.

    ``fcntl.flock``: the kernel releases it when the process ends, however it ends (a SIGKILLed run
    never blocks its own relaunch). The file holds the owner's pid and command line, for the message
    a second run gets: :class:`UsageError` ``output dir DIR is in use by process PID (COMMAND)``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._file: IO[str] | None = None

    def __enter__(self) -> RunDirLock:
        import fcntl

        path = self.directory / LOCK_NAME
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot write to output dir {self.directory}: {e.strerror or e}") from None
        try:
            f = open(path, "a+", encoding="utf-8")
        except OSError as e:
            raise _write_error(path, e) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read()
            f.close()
            raise _in_use(self.directory, owner) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()} ({_command()})\n")
            f.flush()
        except OSError as e:  # a full disk: the lock is released with the file
            f.close()
            raise _write_error(path, e) from None
        self._file = f
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock; the file stays (removing it would race a waiter)
            self._file = None


def check_not_in_use(directory: str | os.PathLike[str]) -> None:
    """Refuse a directory another run holds, at once: the CLI asks before it imports torch.

    A shared lock taken and dropped: it fails while a :class:`RunDirLock` holds the directory.
    The run claims the directory itself later; this only makes the usual refusal immediate.
    """
    import fcntl

    try:
        f = open(Path(directory) / LOCK_NAME, encoding="utf-8")
    except OSError:  # a new directory, or an unreadable file: RunDirLock decides
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(Path(directory), f.read()) from None


def _in_use(directory: Path, owner: str) -> UsageError:
    return UsageError(f"output dir {directory} is in use by process {owner.strip() or 'another process'}; wait for it or choose another -o")


def _write_error(path: Path, error: OSError) -> OSError:
    from flint.handlers.files import WriteError  # imports torch: only when it fails

    return WriteError.from_error("lock file", path, error)


def _command() -> str:
    try:
        return Path("/proc/self/cmdline").read_text().replace("\0", " ").strip()
    except OSError:
        import sys

        return " ".join(sys.argv)
