"""When a run started and how long it ran, as the run records them.

``config.json`` keeps ``started`` (the run's first launch) and ``launched`` (the latest launch), ISO 8601
times with their UTC offset; each launch's ``summary`` record keeps ``wall_time``, the seconds all the
run's launches ran until then (a launch killed before its summary is not counted). ``flint runs``
reads them back (:func:`run_seconds`). Nothing here imports torch.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flint.recipes.app.config import UsageError
from flint.recipes.app.rundir import RunDir

__all__ = ["LaunchClock", "RECORDED", "iso_time", "parse_time", "run_seconds"]

RECORDED = ("started", "launched")
"""What ``config.json`` records of a run's time, beside its options."""


def iso_time(seconds: float) -> str:
    """A time (seconds since the epoch) as local ISO 8601 with its UTC offset, to the millisecond (runs sort by it)."""
    return datetime.datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="milliseconds")


def parse_time(text: Any) -> float | None:
    """The seconds since the epoch an :func:`iso_time` text stands for; None if it is not one.

    Example:
        >>> parse_time("1970-01-01T01:00:10+01:00"), parse_time("yesterday"), parse_time(None)
        (10.0, None, None)
    """
    try:
        moment = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


@dataclass(frozen=True)
class LaunchClock:
    """This launch's times: what it adds to ``config.json`` and the summary's ``wall_time``.

    Args:
        started: the run's first launch (:func:`iso_time`).
        launched: this launch's start, seconds since the epoch.
        before: the seconds the run's earlier launches ran.
        now: the clock. Default ``time.time``.

    Example:
        >>> ticks = iter([100.0, 160.5])
        >>> clock = LaunchClock("1970-01-01T00:00:50+00:00", launched=100.0, before=20.0, now=lambda: next(ticks))
        >>> clock.wall_time(), clock.wall_time()
        (20.0, 80.5)
    """

    started: str
    launched: float
    before: float = 0.0
    now: Callable[[], float] = field(default=time.time, compare=False)

    @classmethod
    def start(cls, run: RunDir, resuming: bool, now: Callable[[], float] = time.time) -> LaunchClock:
        """The clock of a launch starting now in ``run``: a resumed run keeps its first start and counts its earlier launches."""
        launched = now()
        try:
            saved = (run.config() or {}) if resuming else {}
        except UsageError:  # a config.json that does not read: resume says so, the clock starts over
            saved = {}
        started = saved.get("started") if parse_time(saved.get("started")) is not None else iso_time(launched)
        earlier = _last_wall_time(run.tail(phases=("summary",))) if resuming else None
        return cls(started, launched, earlier or 0.0, now)

    def fields(self) -> dict[str, str]:
        """What ``config.json`` records of this launch: ``started`` and ``launched``."""
        return dict(zip(RECORDED, (self.started, iso_time(self.launched))))

    def wall_time(self) -> float:
        """The seconds the run has run: its earlier launches and this one until now."""
        return self.before + self.now() - self.launched


def _last_wall_time(records: Sequence[Mapping[str, Any]]) -> float | None:
    """The ``wall_time`` of the latest summary record among ``records``, or None."""
    for record in reversed(records):
        if record.get("phase") == "summary":
            value = record.get("wall_time")
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return None


def run_seconds(config: Mapping[str, Any], records: Sequence[Mapping[str, Any]], running: bool, now: float) -> float | None:
    """How long a run has run, from what it recorded: its last summary's ``wall_time`` if that closes ``records``;
    while ``running``, that of the latest summary plus the time since ``config.json``'s ``launched``; else None.

    Example:
        >>> config = {"launched": "1970-01-01T00:01:40+00:00"}
        >>> run_seconds(config, [{"phase": "summary", "wall_time": 30.0}], False, now=500.0)
        30.0
        >>> run_seconds(config, [{"phase": "summary", "wall_time": 30.0}, {"phase": "training"}], True, now=160.0)
        90.0
    """
    if records and records[-1].get("phase") == "summary" and not running:
        return _last_wall_time(records[-1:])
    launched = parse_time(config.get("launched"))
    if not running or launched is None:
        return None
    return (_last_wall_time(records) or 0.0) + now - launched
