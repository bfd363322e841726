"""``flint report RUN RUN ...``: several runs' training and validation curves overlaid in one figure.

One panel per metric of the runs' epoch records (the loss first), against the epoch; each run has
one colour, its training curve solid and its validation curve dashed; the legend names each run by
its directory. The table beside it is ``flint runs``'s (:mod:`flint.recipes.app.run_table`). matplotlib
is imported only by :func:`write_comparison`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flint.recipes.app.report import latest_per_epoch, finite_number, panel_grid, read_records, save_png

__all__ = ["Curve", "run_names", "comparison_curves", "write_comparison"]

PHASES = ("training", "validation")
_NOT_METRICS = frozenset({"phase", "epoch", "iteration", "samples", "epoch_time", "lr", "samples_per_sec"})


@dataclass
class Curve:
    """One run's curve of one metric in one phase: ``points`` are (epoch, value), one per epoch (the last record written)."""

    run: str
    phase: str
    points: list[tuple[int, float]] = field(default_factory=list)


def run_names(dirs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """What the legend calls each run: its directory's name, or the path as given where two names are the same.

    Example:
        >>> run_names(["runs/a", "runs/b"]), run_names(["x/a", "y/a", "runs/b"])
        (['a', 'b'], ['x/a', 'y/a', 'b'])
    """
    names = [Path(d).name or str(d) for d in dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, dirs)]


def comparison_curves(runs: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[Curve]]:
    """Metric -> its curves over the runs (name -> records in file order), the loss first, then as first seen.

    Example:
        >>> a = [{"phase": "training", "epoch": 1, "loss": 0.9, "lr": [0.1]}, {"phase": "validation", "epoch": 1, "loss": 0.7}]
        >>> b = [{"phase": "validation", "epoch": e, "loss": v, "accuracy": 1 - v} for e, v in [(1, 0.6), (2, 0.4)]]
        >>> curves = comparison_curves({"a": a, "b": b})
        >>> list(curves), [(c.run, c.phase, c.points) for c in curves["loss"]]
        (['loss', 'accuracy'], [('a', 'training', [(1, 0.9)]), ('a', 'validation', [(1, 0.7)]), ('b', 'validation', [(1, 0.6), (2, 0.4)])])
    """
    metrics: dict[str, list[Curve]] = {"loss": []}
    for name, records in runs.items():
        for phase in PHASES:
            per_epoch = latest_per_epoch(records, phase)
            for record in per_epoch:
                for key, value in record.items():
                    if key not in _NOT_METRICS and finite_number(value):
                        metrics.setdefault(key, [])
            for metric, curves in metrics.items():
                points = [(r["epoch"], float(r[metric])) for r in per_epoch if finite_number(r.get(metric))]
                if points:
                    curves.append(Curve(name, phase, points))
    return {metric: curves for metric, curves in metrics.items() if curves}


def write_comparison(dirs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str]) -> Path:
    """Draw the runs' curves (:func:`comparison_curves`) into the PNG ``output``, written atomically; its path.

    Raises:
        UsageError: a run has no ``metrics.jsonl``, or no record in it.
    """
    names = run_names(dirs)
    curves = comparison_curves({name: read_records(d) for name, d in zip(names, dirs)})
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    fig, axes = panel_grid(len(curves))  # imports matplotlib
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    for ax, (metric, lines) in zip(axes, curves.items()):
        for curve in lines:
            ax.plot(*zip(*curve.points), "-" if curve.phase == "training" else "--", color=colours[curve.run], marker="o", ms=2.5)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[name], label=name) for name in names]
    handles += [Line2D([], [], color="0.3", ls=ls, label=phase) for phase, ls in zip(PHASES, ("-", "--"))]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 6), fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    return save_png(fig, output, "comparison")
