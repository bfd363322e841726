"""A run's directory: the one object that knows its files, its lock and its status.

``flint run``/``resume`` hold it, ``flint runs`` lists it, ``evaluate``, ``export``, ``report`` and
``predict`` read it, all through :class:`RunDir`. Nothing here imports torch (``flint runs`` and a
refused second run answer at once); finding checkpoints asks :class:`flint.handlers.Checkpointing`,
which owns their names, and imports it only then.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import re
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from flint.recipes.app.config import UsageError, option_name
from flint.recipes.app.monitor import DIRECTIONS, Monitor

__all__ = ["RunDir", "LOCK_NAME", "STATUSES"]

logger = logging.getLogger(__name__)

LOCK_NAME = ".flint.lock"
STATUSES = ("running", "completed", "stopped early", "interrupted", "failed", "aborted", "new")
_TAIL_BYTES = 1 << 16  # the end of metrics.jsonl read for a run's status: its last records
_LAST_BYTES = 1 << 12  # read first for its last few records
_PHASE = re.compile(r'"phase"\s*:\s*"([^"]*)"')  # a record's phase, found without parsing its line
_BEST = re.compile(r"^best_checkpoint_(?P<epoch>\d+)_(?P<metric>.+)=(?P<value>[^=]+)\.pt$")  # flint.handlers.Checkpointing's names


class RunDir:
    """A run's directory and what it holds.

    Files: ``config.json`` (the resolved options), ``metrics.jsonl`` (every record), ``train.log`` (and
    ``train.log.1``, ... of runs it replaced), ``checkpoints/``, TensorBoard's events files, ``report.png``,
    ``predictions.csv``, ``lr_find.png``, ``mlflow.json`` (``--mlflow``'s run id), the default files of
    ``flint export`` and the lock ``.flint.lock``.

    Example:
        >>> import tempfile
        >>> run = RunDir(tempfile.mkdtemp())
        >>> run.status(), run.config_file.name, run.checkpoints.name
        ('new', 'config.json', 'checkpoints')
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    config_file = property(lambda self: self.path / "config.json")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    log_file = property(lambda self: self.path / "train.log")
    checkpoints = property(lambda self: self.path / "checkpoints")
    lock_file = property(lambda self: self.path / LOCK_NAME)
    report_file = property(lambda self: self.path / "report.png")
    predictions_file = property(lambda self: self.path / "predictions.csv")
    lr_find_file = property(lambda self: self.path / "lr_find.png")
    mlflow_file = property(lambda self: self.path / "mlflow.json")  # the MLflow run this run is tracked in

    # --- the lock: one run at a time --------------------------------------------------------------

    @contextmanager
    def lock(self, style: str = "cli") -> Iterator[RunDir]:
        """Hold an exclusive OS lock on the directory for the block; :class:`UsageError` if another process holds it.

        ``fcntl.flock`` on ``.flint.lock``: the kernel releases it when the process ends, however it ends
        (a SIGKILLed run never blocks its own relaunch). The file holds the owner's pid and command line,
        for the message a second run gets. It is opened without following a symbolic link and must be a
        regular file: a link planted there cannot make a run write into another file. ``style`` names
        options in the message as the caller does (:func:`flint.recipes.app.config.option_name`).
        """
        import fcntl

        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(f"cannot write to output dir {self.path}: {e.strerror or e}") from None
        f = self._open_lock(os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = f.read()
            f.close()
            raise self._in_use(owner, style) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()} ({_command()})\n")
            f.flush()
        except OSError as e:  # a full disk: the lock is released with the file
            with contextlib.suppress(OSError):  # its flush fails again
                f.close()
            raise _write_error(self.lock_file, e) from None
        try:
            yield self
        finally:
            f.close()  # releases the lock; the file stays (removing it would race a waiter)

    def in_use(self) -> str | None:
        """The process holding the directory (``PID (COMMAND)``), or None: a shared lock taken and dropped."""
        import fcntl

        try:
            f = self._open_lock(os.O_RDONLY)
        except (OSError, UsageError):  # no lock file yet; an unusable one is refused when a run claims the directory
            return None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return f.read().strip() or "another process"
        return None

    def check_not_in_use(self) -> None:
        """:class:`UsageError` at once if another run holds the directory (the CLI asks before importing torch)."""
        owner = self.in_use()
        if owner is not None:
            raise self._in_use(owner)

    def _open_lock(self, flags: int) -> IO[str]:
        path = self.lock_file
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UsageError(f"output dir {self.path}: its lock file {LOCK_NAME} is a symbolic link; remove it") from None
            if e.errno == errno.EISDIR:
                raise UsageError(f"output dir {self.path}: its lock file {LOCK_NAME} is not a regular file; remove it") from None
            if isinstance(e, FileNotFoundError):
                raise
            raise _write_error(path, e) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UsageError(f"output dir {self.path}: its lock file {LOCK_NAME} is not a regular file; remove it")
        return os.fdopen(fd, "r+" if flags & os.O_RDWR else "r", encoding="utf-8")

    def _in_use(self, owner: str, style: str = "cli") -> UsageError:
        who = owner.strip() or "another process"
        return UsageError(f"output dir {self.path} is in use by process {who}; wait for it or choose another {option_name('output_dir', style, True)}")

    # --- what it holds ------------------------------------------------------------------------------

    def config(self) -> dict[str, Any] | None:
        """``config.json`` as a dict; None if there is none. :class:`UsageError` naming the file if it does not read."""
        try:
            text = self.config_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UsageError(f"cannot read {self.config_file}: {e.strerror or e}") from None
        try:
            config = json.loads(text)
        except ValueError as e:
            raise UsageError(f"cannot read {self.config_file}: {e}".splitlines()[0]) from None
        if not isinstance(config, dict):
            raise UsageError(f"cannot read {self.config_file}: not a JSON object")
        return config

    def tail(self, last: int | None = None, phases: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The last records of ``metrics.jsonl`` (its final 64 KiB), in file order, skipping lines that do not parse; [] if none.

        ``last``: only the last ones (read from the end: the last record of a closed run costs one line).
        ``phases``: only records of these phases (a line naming another phase is not parsed)."""
        records: list[dict[str, Any]] = []
        for window in (_LAST_BYTES, _TAIL_BYTES) if last is not None else (_TAIL_BYTES,):
            lines, whole = self._end_lines(window)
            records = []
            for line in reversed(lines):  # from the end: `last` records parse only those
                if last is not None and len(records) >= last:
                    break
                if phases is not None and ((named := _PHASE.search(line)) is None or named[1] not in phases):
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("phase"), str) and (phases is None or record["phase"] in phases):
                    records.append(record)
            if whole or (last is not None and len(records) >= last):
                break
        return records[::-1]

    def _end_lines(self, window: int) -> tuple[list[str], bool]:
        """The lines of the last ``window`` bytes of ``metrics.jsonl`` (the first, maybe cut, left out) and whether that is all of it."""
        try:
            with self.metrics_file.open("rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(0, size - window))
                lines = f.read().decode("utf-8", "replace").split("\n")
        except OSError:
            return [], True
        return (lines[1:], False) if size > window else (lines, True)

    def summary(self) -> dict[str, Any] | None:
        """The run's last ``summary`` record if it is the last record (the latest launch closed), else None."""
        records = self.tail(last=1)
        return records[-1] if records and records[-1]["phase"] == "summary" else None

    def status(self, tail: list[dict[str, Any]] | None = None) -> str:
        """One of :data:`STATUSES`: ``running`` while a process holds the lock, else what the last launch
        recorded (``completed``, ``stopped early``, ``interrupted``, ``failed``, ``aborted``); ``failed`` for a
        launch that ended without a summary (killed), ``new`` for a directory with no records.

        ``tail``: what :meth:`tail` returned, when it was read already (its last record is enough)."""
        if self.in_use() is not None:
            return "running"
        records = self.tail(last=1) if tail is None else tail
        summary = records[-1] if records and records[-1]["phase"] == "summary" else None
        if summary is None:
            return "failed" if records or self.metrics_file.exists() else "new"
        status = str(summary.get("status"))
        if status == "completed" and summary.get("stopped_early"):
            return "stopped early"
        return status if status in STATUSES else "failed"

    def latest_checkpoint(self) -> Path | None:
        """The newest latest checkpoint (by iteration), or None."""
        from flint.handlers import Checkpointing

        return Checkpointing.find_latest(self.checkpoints)

    def monitor(self) -> Monitor | None:
        """The monitor ``config.json`` names, or None (the task's default, no config, or one that does not read)."""
        try:
            text = (self.config() or {}).get("monitor")
        except UsageError:
            return None
        return Monitor.of(text)

    def best_checkpoint(self) -> Path | None:
        """The best of the ``best_checkpoint_*.pt`` files by the value each recorded; None if there is none.

        The value and metric come from the file name (``best_checkpoint_<epoch>_<metric>=<value>.pt``),
        else from the ``best_score`` saved in the file. The direction is the run's monitor's
        (``config.json``) for its metric, else the metric's known one (:data:`flint.recipes.app.monitor.DIRECTIONS`),
        else the file's saved ``best_score`` mode. Ties go to the earlier epoch.
        """
        monitor = self.monitor()
        scored = []
        for path in self.checkpoints.glob("best_checkpoint_*.pt"):
            match = _BEST.match(path.name)
            metric, value, epoch = None, math.nan, math.inf
            if match:
                try:
                    metric, value, epoch = match["metric"], float(match["value"]), int(match["epoch"])
                except ValueError:
                    metric = None
            mode = monitor.mode if monitor is not None and metric == monitor.name else DIRECTIONS.get(metric or "")
            if metric is None or mode is None:  # the name does not tell: the score saved in the file does
                from flint.recipes.app.runs import read_checkpoint

                saved = read_checkpoint(path).get("best_score")
                if not isinstance(saved, dict) or saved.get("mode") not in ("min", "max") or saved.get("value") is None:
                    logger.warning("%s: no best score in its name or its content; skipped", path)
                    continue
                mode = saved["mode"]
                if metric is None:
                    value, epoch = float(saved["value"]), int(saved.get("epoch") or 0)
            if not math.isnan(value):
                scored.append((value if mode == "max" else -value, -epoch, path))
        return max(scored)[2] if scored else None

    def has_run(self) -> bool:
        """Whether a run wrote here: a checkpoint or records."""
        return self.metrics_file.exists() or self.latest_checkpoint() is not None

    # --- a new run in place of an old one -------------------------------------------------------------

    def flint_files(self) -> list[Path]:
        """The files a run and Flint's commands wrote here, but the lock and ``train.log`` (see :meth:`clear`).

        Only Flint's names: a file of yours in the directory is never among them."""
        from flint.recipes.app.export import FORMATS  # torch-free

        exports = [self.path / f"model{suffix}" for suffix in FORMATS.values()]  # flint export's defaults, and a state_dict's metadata
        names = [self.config_file, self.metrics_file, self.report_file, self.predictions_file, self.lr_find_file, self.mlflow_file, *exports,
                 (self.path / f"model{FORMATS['state_dict']}").with_suffix(".json")]  # fmt: skip
        found = [p for p in names if p.is_file()] + sorted(self.path.glob("events.out.tfevents.*"))
        for pattern in ("checkpoint_*.pt", "best_checkpoint_*.pt", "*.pt.corrupt", ".*.tmp"):  # .tmp: SafeDiskSaver.TEMP_FILES
            found += sorted(self.checkpoints.glob(pattern))
        return found

    def failed_before_checkpoint(self) -> bool:
        """Whether the run here ended (failed, aborted or killed) before writing any checkpoint: nothing to continue.

        Asked under the run's own lock (:meth:`status` would say ``running``)."""
        if any(p.parent == self.checkpoints for p in self.flint_files()):
            return False
        summary = self.summary()
        if summary is None:  # killed, or stopped before its first record
            return self.metrics_file.exists() or self.log_file.exists()
        return summary.get("status") in ("failed", "aborted")

    def clear(self) -> Path | None:
        """Remove :meth:`flint_files` (and ``checkpoints/`` if that leaves it empty) for a new run; ``train.log``
        becomes ``train.log.1`` (an earlier ``.1`` becomes ``.2``, and so on: no log is lost). Returns the
        renamed log, or None. Call it holding the lock (:meth:`lock`)."""
        for path in self.flint_files():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not there, or holding files of yours
            self.checkpoints.rmdir()
        if not self.log_file.is_file():
            return None
        kept = sorted((int(p.suffix[1:]) for p in self.path.glob("train.log.*") if p.suffix[1:].isdigit()), reverse=True)
        for n in kept:
            (self.path / f"train.log.{n}").replace(self.path / f"train.log.{n + 1}")
        first = self.path / "train.log.1"
        self.log_file.replace(first)
        return first


def _write_error(path: Path, error: OSError) -> OSError:
    from flint.handlers.files import WriteError  # imports torch: only when it fails

    return WriteError.from_error("lock file", path, error)


def _command() -> str:
    try:
        return Path("/proc/self/cmdline").read_text().replace("\0", " ").strip()
    except OSError:
        import sys

        return " ".join(sys.argv)
