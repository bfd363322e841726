"""``flint runs [DIR ...]``: one line per run directory found under the DIRs, and the same table for ``flint report RUN RUN ...``.

A row reads only what a run records: ``config.json`` (recipe, epochs, start time), the lock (running
or not) and the end of ``metrics.jsonl`` (:meth:`RunDir.tail`: the last record only, for a run whose
last launch closed). A file that does not read makes its row say so; the table goes on. Nothing here
imports torch.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flint.recipes.app.config import UsageError
from flint.recipes.app.console import duration, significant
from flint.recipes.app.launch_clock import parse_time, run_seconds
from flint.recipes.app.monitor import Monitor
from flint.recipes.app.report import summarise
from flint.recipes.app.rundir import LOCK_NAME, RunDir

__all__ = ["RunRow", "find_runs", "read_row", "run_rows", "format_table", "as_json"]

_MARKS = frozenset({"config.json", "metrics.jsonl", LOCK_NAME})  # a directory holding one of these is a run's
_EPOCHS = frozenset({"training", "validation", "summary"})  # what a row reads of a run that has not closed


@dataclass
class RunRow:
    """What ``flint runs`` says of one run directory (``--json`` gives these keys)."""

    dir: str
    recipe: str | None
    status: str  # :meth:`RunDir.status`
    epochs: int | None  # done
    epochs_total: int | None
    best_metric: str | None  # the monitored validation metric
    best_value: float | None
    best_epoch: int | None
    wall_time: float | None  # seconds the run has run (:mod:`flint.recipes.app.launch_clock`)
    started: str | None  # the run's first launch, ISO 8601
    problem: str | None = None  # a file that does not read


def find_runs(roots: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The run directories at or under each of ``roots`` (one holding ``config.json``, ``metrics.jsonl`` or
    the lock); a run directory's own subdirectories, hidden ones and symbolic links are not searched.

    Raises:
        UsageError: a root is not a directory.
    """
    found: list[Path] = []

    def visit(path: Path) -> None:
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        if any(e.name in _MARKS for e in entries):
            found.append(path)
            return
        for entry in sorted(entries, key=lambda e: e.name):
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                visit(Path(entry.path))

    for root in roots:
        if not Path(root).is_dir():
            raise UsageError(f"runs: {root} is not a directory")
        visit(Path(root))
    return found


def read_row(path: str | os.PathLike[str], now: float | None = None) -> RunRow:
    """One run directory's :class:`RunRow`; ``now`` (default the current time) for a running run's wall time."""
    run, problems = RunDir(path), []
    try:
        config = run.config()
        if config is None:
            problems.append("no config.json")
    except UsageError as e:
        config, problems = None, [str(e)]
    config = config or {}
    last = run.tail(last=1)
    status = run.status(tail=last)
    closed = status != "running" and bool(last) and last[-1]["phase"] == "summary"
    records = last if closed else run.tail(phases=("validation", "summary"))  # running or killed: what the tail says of it
    if not last and run.metrics_file.exists():
        problems.append("metrics.jsonl holds no records")
    epochs, best_metric, best_value, best_epoch = _progress(run, records, config, closed)
    total = config.get("epochs")
    return RunRow(
        dir=str(path),
        recipe=config.get("recipe") if isinstance(config.get("recipe"), str) else None,
        status=status,
        epochs=epochs,
        epochs_total=total if isinstance(total, int) else None,
        best_metric=best_metric,
        best_value=best_value,
        best_epoch=best_epoch,
        wall_time=run_seconds(config, records, status == "running", time.time() if now is None else now),
        started=config.get("started") if parse_time(config.get("started")) is not None else None,
        problem="; ".join(problems) or None,
    )


def _progress(run: RunDir, records: list[dict[str, Any]], config: dict[str, Any], closed: bool) -> tuple[int | None, str | None, Any, Any]:
    """(epochs done, monitored metric, its best value, its epoch): the closing summary's, else the tail's latest epoch
    and its validation records' best."""
    if closed:
        summary = records[-1]
        monitor = Monitor.of(summary.get("monitor"))
        return summary.get("epochs"), monitor.name if monitor else None, summary.get("best_value"), summary.get("best_epoch")
    latest = [r.get("epoch") for r in run.tail(last=2, phases=("training", "validation"))]
    epochs = max((e for e in latest if isinstance(e, int)), default=None)
    validation = [r for r in records if r["phase"] == "validation" and isinstance(r.get("epoch"), int)]
    if not validation:
        return epochs, None, None, None
    seen = summarise(validation, Monitor.of(config.get("monitor")))  # report's rule: the default is accuracy, else loss
    return epochs, seen["metric"], seen["best_value"], seen["best_epoch"]


def run_rows(dirs: Iterable[str | os.PathLike[str]], now: float | None = None) -> list[RunRow]:
    """A :class:`RunRow` for each directory, by start time (runs that recorded none first, by directory)."""
    rows = [read_row(path, now) for path in dirs]
    return sorted(rows, key=lambda row: (parse_time(row.started) or -1.0, row.dir))


def format_table(rows: Sequence[RunRow]) -> str:
    """The rows as aligned text columns: run, recipe, status, epochs, best, wall time, start (local time).

    Example:
        >>> row = RunRow("runs/a", "lenet", "completed", 10, 10, "accuracy", 0.99443, 4, 14.2, "2025-06-01T10:34:56+00:00")
        >>> print(format_table([row]))  # doctest: +NORMALIZE_WHITESPACE
        run     recipe  status     epochs  best                        wall   started
        runs/a  lenet   completed  10/10   accuracy 0.9944 (epoch 4)  14.2s  2025-06-01 10:34
    """
    lines = [("run", "recipe", "status", "epochs", "best", "wall", "started", "")]
    for row in rows:
        epochs = f"{'?' if row.epochs is None else row.epochs}/{'?' if row.epochs_total is None else row.epochs_total}"
        best = "-" if row.best_value is None else f"{row.best_metric} {significant(float(row.best_value))} (epoch {row.best_epoch})"
        when = "?" if row.started is None else datetime.datetime.fromisoformat(row.started).strftime("%Y-%m-%d %H:%M")  # as recorded: local
        wall = "?" if row.wall_time is None else duration(row.wall_time)
        lines.append((row.dir, row.recipe or "?", row.status, epochs, best, wall, when, row.problem or ""))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(line, widths)).rstrip() + (f"  ({line[-1]})" if line[-1] else "") for line in lines)


def as_json(rows: Sequence[RunRow]) -> list[dict[str, Any]]:
    """The rows as ``--json`` prints them."""
    return [dict(vars(row)) for row in rows]  # its fields are plain values: no deep copy
