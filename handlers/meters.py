"""Pure decision logic behind the handlers, testable with plain numbers (no engine, no clock)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["Throughput", "BestScore", "average_excluding_first", "remaining_time"]


class Throughput:
    """Samples per second over a window: from the last :meth:`start` (or reading) to now.

    Averaging over the window instead of timing the last batch smooths out the batch-to-batch jitter
    of asynchronous devices, whose time is only settled at the point where a value is read back.

    Example:
        >>> meter = Throughput()
        >>> meter.start(samples=0, now=10.0)
        >>> meter.rate(samples=640, now=12.0)
        320.0
        >>> meter.rate(samples=960, now=13.0)  # the window restarts at each reading
        320.0
    """

    def __init__(self) -> None:
        self._samples = 0
        self._time: float | None = None

    def start(self, samples: int, now: float) -> None:
        self._samples, self._time = samples, now

    def rate(self, samples: int, now: float) -> float:
        """Samples/sec since the window started, then start a new window here (NaN if none started)."""
        if self._time is None:
            value = math.nan
        else:
            elapsed = now - self._time
            value = (samples - self._samples) / elapsed if elapsed > 0 else math.nan
        self.start(samples, now)
        return value


def remaining_time(done: float, total: float, elapsed: float) -> float | None:
    """Seconds left if the rest goes at the rate so far; never negative; None before any progress.

    Example:
        >>> remaining_time(done=25, total=100, elapsed=10.0)
        30.0
        >>> remaining_time(done=120, total=100, elapsed=10.0), remaining_time(0, 100, 1.0)
        (0.0, None)
    """
    if done <= 0:
        return None
    return max(0.0, elapsed / done * (total - done))


def average_excluding_first(times: Sequence[float]) -> float | None:
    """Mean of ``times`` without the first (warm-up) entry; the only entry if there is one; None if empty.

    Example:
        >>> average_excluding_first([9.0, 2.0, 4.0])
        3.0
        >>> average_excluding_first([9.0])
        9.0
    """
    if not times:
        return None
    rest = times[1:] or times
    return sum(rest) / len(rest)


class BestScore:
    """The best value of a monitored metric so far and the epoch it came from.

    Args:
        mode: ``"max"`` (accuracy) or ``"min"`` (loss). Default ``"max"``.

    Example:
        >>> best = BestScore("max")
        >>> best.update(0.90, epoch=1), best.update(0.85, epoch=2), best.update(0.95, epoch=3)
        (True, False, True)
        >>> best.value, best.epoch
        (0.95, 3)
    """

    def __init__(self, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"Argument mode should be 'max' or 'min', got {mode!r}")
        self.mode = mode
        self.value: float | None = None
        self.epoch: int | None = None

    def is_better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.value is None:
            return True
        return value > self.value if self.mode == "max" else value < self.value

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` if it beats the best; return whether it did."""
        if not self.is_better(value):
            return False
        self.value, self.epoch = float(value), int(epoch)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "value": self.value, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mode, self.value, self.epoch = state["mode"], state["value"], state["epoch"]
