"""``flint report RUN_DIR``: a run's curves as ``report.png`` and a short table of its results.

The run is read from ``RUN_DIR/metrics.jsonl``, as written by ``flint run`` or by any loop that
sends its records to a ``flint.handlers.JsonlSink``, and from ``RUN_DIR/config.json`` when there is one
(``flint run`` writes it: ``compile`` and ``monitor`` are read from it). matplotlib is imported only
by :func:`write_report`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from flint.recipes.app.config import UsageError
from flint.recipes.app.monitor import Monitor
from flint.recipes.app.rundir import RunDir

__all__ = ["read_records", "read_config", "latest_per_epoch", "finite_number", "summarise", "plot_data", "write_report", "panel_grid", "save_png", "Panel", "Plot", "CORE_PHASES"]

logger = logging.getLogger(__name__)

# Phases with a panel or a role of their own; any other phase with numeric fields gets a panel.
CORE_PHASES = ("batch", "training", "validation", "lr", "summary", "resume")
_POSITION = ("phase", "epoch", "iteration", "samples")
_INTEGER_FIELDS = ("epoch", "iteration", "samples")
# Fields of training/validation records that are not metrics to plot.
_NOT_METRICS = {*_POSITION, "loss", "epoch_time", "lr", "samples_per_sec"}
NO_SUMMARY = "no summary record (still running, or ended without writing one)"


def finite_number(value: Any) -> TypeGuard[float]:
    """A finite int or float (not a bool): what can be plotted or averaged."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(record: Any) -> str | None:
    """Why a parsed JSON line is not a usable record, or None."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not a record object"
    if not isinstance(record.get("phase"), str):
        return "no 'phase' string"
    for key in _INTEGER_FIELDS:
        value = record.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"'{key}' is {value!r}, not an integer"
    if record["phase"] in ("training", "validation") and record.get("epoch") is None:
        return f"a {record['phase']} record without an epoch"
    return None


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``, in file order.

    A line that is not a JSON record (a line cut short by a kill, garbage, a record without a phase
    or with a non-integer epoch) is skipped with one warning naming the file and the line number.

    Raises:
        UsageError: there is no ``metrics.jsonl``, or it holds no usable record.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "metrics.jsonl").write_text('{"phase": "validation", "epoch": 1, "loss": 0.5}\\n{"phase": "vali')
        >>> [r["loss"] for r in read_records(d)]  # the cut line is skipped with a warning
        [0.5]
    """
    path = RunDir(run_dir).metrics_file
    if not path.is_file():
        raise UsageError(f"report: no metrics.jsonl in {run_dir}")
    records = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            problem: str | None
            try:
                record = json.loads(line.rstrip("\n"))
            except json.JSONDecodeError as e:  # e.msg may end in "at": the position follows
                problem = f"not valid JSON ({e.msg.removesuffix(' at')} at column {e.colno})"
            except (ValueError, RecursionError) as e:  # e.g. nesting too deep to parse
                problem = f"not valid JSON ({type(e).__name__})"
            else:
                problem = _problem(record)
            if problem:
                logger.warning("%s line %d skipped: %s", path, number, problem)
                continue
            records.append(record)
    if not records:
        raise UsageError(f"report: {path} holds no records")
    return records


def read_config(run: RunDir) -> dict[str, Any]:
    """The run's ``config.json``; {} if there is none (a loop of your own) or it does not read (warned)."""
    try:
        return run.config() or {}
    except UsageError as e:
        logger.warning("%s; ignored", e)
        return {}


def latest_per_epoch(records: Iterable[dict], phase: str) -> list[dict]:
    """One record per epoch, the last written: an attempt that died before its checkpoint is superseded."""
    by_epoch = {r["epoch"]: r for r in records if r["phase"] == phase and r.get("epoch") is not None}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _launches(records: list[dict]) -> list[list[dict]]:
    """The records of each launch of the run, in order.

    A launch starts at the first record, at a ``resume`` record, after a ``summary`` record, and at
    a training record whose epoch is not above the previous one's (a relaunch that started over).
    """
    launches: list[list[dict]] = [[]]
    last_epoch: int | None = None
    for record in records:
        phase = record["phase"]
        restart = phase == "resume" or (phase == "training" and last_epoch is not None and record["epoch"] <= last_epoch)
        if restart and launches[-1]:
            launches.append([])
            last_epoch = None
        launches[-1].append(record)
        if phase == "training":
            last_epoch = record["epoch"]
        if phase == "summary":
            launches.append([])
            last_epoch = None
    return [launch for launch in launches if launch]


@dataclass
class _Timing:
    avg_epoch_time: float | None
    samples_per_sec: float | None
    note: str  # which epochs the average counts
    rate_note: str  # what the throughput counts, or why it is unknown


def _timing(training: list[dict], launches: list[list[dict]], compiled: bool) -> _Timing:
    """Average epoch time and training throughput over the epochs that are not a launch's first.

    The first epoch of every launch (the run's start and each resume) includes warm-up, and with
    ``--compile`` the compile: it is left out. If no other epoch was timed, a plain run falls back
    on its first epochs, while a compiled run's throughput is unknown.
    """
    firsts = set()
    for launch in launches:
        first = next((r for r in launch if r["phase"] == "training"), None)
        if first is not None:
            firsts.add(id(first))
    timed = [r for r in training if finite_number(r.get("epoch_time")) and r["epoch_time"] > 0]
    steady = [r for r in timed if id(r) not in firsts]
    n_launches = sum(1 for launch in launches if any(r["phase"] == "training" for r in launch))
    if steady:
        basis = steady
        note = "without the first epoch" if n_launches <= 1 else f"without the first epoch of each of the {n_launches} launches"
    elif timed:
        basis = timed
        if compiled:
            note = "first epoch of a launch: includes the torch.compile"
        else:
            note = "first epoch of a launch: includes warm-up"
    else:
        return _Timing(None, None, "no epoch time recorded", "no epoch time recorded")
    avg = sum(r["epoch_time"] for r in basis) / len(basis)
    samples_at = {r["epoch"]: r.get("samples") for r in training}
    samples_at.setdefault(0, 0)
    counts = []
    for r in basis:
        before, after = samples_at.get(r["epoch"] - 1), r.get("samples")
        if not (finite_number(before) and finite_number(after)):
            break
        counts.append(after - before)
    if compiled and not steady:
        return _Timing(avg, None, note, "every timed epoch includes the torch.compile")
    if len(counts) < len(basis):
        return _Timing(avg, None, note, "the training records have no sample counts")
    return _Timing(avg, sum(counts) / sum(r["epoch_time"] for r in basis), note, "training")


def summarise(records: list[dict], monitor: Monitor | None = None, compiled: bool = False) -> dict[str, Any]:
    """Status, epochs, best and last value of the monitored metric, resumes, average epoch time and throughput.

    Args:
        records: the run's records in file order (:func:`read_records`).
        monitor: the metric and direction deciding the best epoch. Default None: validation
            accuracy (highest) if the records have it, else validation loss (lowest).
        compiled: the run used ``torch.compile``; a launch's first epoch then includes the compile,
            so throughput is unknown unless another epoch was timed. Default False.

    Example:
        >>> recs = [{"phase": "validation", "epoch": e, "loss": v} for e, v in [(1, 0.5), (2, 0.3), (3, 0.4)]]
        >>> s = summarise(recs)
        >>> s["metric"], s["best_epoch"], s["best_value"], s["status"][:17]
        ('loss', 2, 0.3, 'no summary record')
    """
    training, validation = latest_per_epoch(records, "training"), latest_per_epoch(records, "validation")
    if monitor is None:
        monitor = Monitor("accuracy", "max") if any(finite_number(r.get("accuracy")) for r in validation) else Monitor("loss", "min")
    metric = monitor.name
    scored = [r for r in validation if finite_number(r.get(metric))]
    best = None
    for r in scored:  # ties keep the earlier epoch, as the run's checkpointing does
        if monitor.better(r[metric], best[metric] if best is not None else None):
            best = r
    launches = _launches(records)
    last = launches[-1] if launches else []
    status = last[-1].get("status", "unknown") if last and last[-1]["phase"] == "summary" else NO_SUMMARY
    epochs = [r["epoch"] for r in training + validation]
    timing = _timing(training, launches, compiled)
    return {
        "status": status,
        "epochs": max(epochs) if epochs else 0,
        "metric": metric,
        "mode": monitor.mode,
        "best_epoch": best["epoch"] if best else None,
        "best_value": best[metric] if best else None,
        "last_value": scored[-1][metric] if scored else None,
        "resumes": [(r.get("epoch"), r.get("iteration")) for r in records if r["phase"] == "resume"],
        "avg_epoch_time": timing.avg_epoch_time,
        "samples_per_sec": timing.samples_per_sec,
        "timing": timing.note,
        "throughput": timing.rate_note,
    }


def _lr_series(records: list[dict], x_key: str) -> list[tuple[float, list[float]]]:
    """(x, LRs) points from the lr records and the training records' epoch-end LRs, in order.

    An epoch's end and the next epoch's start share an x: both are kept, end first, so that a step
    schedule is drawn as a step. A record written again (an attempt that died, then a resume)
    replaces the earlier one at its x.
    """
    points: dict[tuple[float, int], list[float]] = {}
    for r in records:
        lr = [r["lr"]] if finite_number(r.get("lr")) else r.get("lr")  # a loop of your own may write one number
        if r["phase"] not in ("lr", "training") or not isinstance(lr, list) or not lr or not all(finite_number(v) for v in lr):
            continue
        x = r.get(x_key)
        if finite_number(x):
            points[(x, 0 if r["phase"] == "training" else 1)] = lr
    width = max((len(v) for v in points.values()), default=0)
    series: list[tuple[float, list[float]]] = []
    for (x, _), lr in sorted(points.items()):
        if len(lr) == width and (not series or series[-1] != (x, lr)):
            series.append((x, lr))
    return series


def _lr_groups(points: list[tuple[float, list[float]]]) -> list[tuple[str, list[float]]]:
    """(label, values) per distinct LR curve: param groups with identical curves are drawn once."""
    if not points:
        return []
    columns = [[lrs[i] for _, lrs in points] for i in range(len(points[0][1]))]
    curves: list[tuple[list[int], list[float]]] = []
    for i, column in enumerate(columns):
        same = next((c for c in curves if c[1] == column), None)
        if same is None:
            curves.append(([i], column))
        else:
            same[0].append(i)
    label = "group" if len(curves) > 1 else "param group"
    return [(f"{label}{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}", values) for ids, values in curves]


def _constant_lr(points: list[tuple[float, list[float]]]) -> list[float] | None:
    """Each param group's LR if none ever changes, else None."""
    if not points or any(lrs != points[0][1] for _, lrs in points):
        return None
    return points[0][1]


def _x_key(records: list[dict]) -> str:
    """The x axis: samples seen if the epoch records have them, else iterations, else epochs."""
    epoch_records = [r for r in records if r["phase"] in ("training", "validation")] or records
    for key in ("samples", "iteration"):
        if epoch_records and all(finite_number(r.get(key)) for r in epoch_records):
            return key
    return "epoch"


def _table(summary: dict[str, Any], lr: list[float] | None, classes: list[str] | None = None) -> str:
    def show(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    metric = summary["metric"]
    best = "-" if summary["best_value"] is None else f"{summary['best_value']:.4f} (epoch {summary['best_epoch']})"
    rows = [
        ("status", summary["status"]),
        ("epochs", str(summary["epochs"])),
        (f"best validation {metric}", best),
        (f"last validation {metric}", show(summary["last_value"], ".4f")),
    ]
    if summary["resumes"]:
        rows.append(("resumed", ", ".join(f"at iteration {it} (epoch {ep})" for ep, it in summary["resumes"])))
    if classes:  # the recipe's or fit()'s, or the dataset's (config.json's "metadata")
        rows.append(("classes", f"{len(classes)}: {', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}"))
    if lr is not None:
        rows.append(("learning rate", f"{', '.join(format(v, '.6g') for v in dict.fromkeys(lr))} (constant)"))
    if summary["avg_epoch_time"] is not None:
        rows.append(("average epoch time", f"{summary['avg_epoch_time']:.3f} s ({summary['timing']})"))
    rate = summary["samples_per_sec"]
    if rate is not None:
        rows.append(("throughput", f"{rate:,.0f} samples/s ({summary['throughput']})"))
    else:
        rows.append(("throughput", f"unknown ({summary['throughput']})"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _custom_phases(records: list[dict]) -> dict[str, list[str]]:
    """Phase -> its numeric fields, for every phase that is not one of CORE_PHASES, in first-seen order."""
    phases: dict[str, dict[str, None]] = {}
    for r in records:
        if r["phase"] in CORE_PHASES:
            continue
        fields = phases.setdefault(r["phase"], {})
        for key, value in r.items():
            if key not in _POSITION and finite_number(value):
                fields[key] = None
    return {phase: list(fields) for phase, fields in phases.items() if fields}


@dataclass
class Panel:
    """One plot of the report: a title and its lines as (label, [(x, y), ...])."""

    title: str
    lines: list[tuple[str, list[tuple[float, float]]]]
    log_y: bool = False


@dataclass
class Plot:
    """What :func:`write_report` draws, as data."""

    x_label: str  # "samples seen", "iteration" or "epoch"
    epoch_ends: list[tuple[int, float]]  # (epoch, x at its end): the top axis; empty if x is the epoch
    panels: list[Panel]
    best_x: float | None  # where the best epoch is marked
    resume_xs: list[float]  # where each resume is marked
    constant_lr: list[float] | None  # each group's LR when it never changes (and gets no panel)


def plot_data(records: list[dict], summary: dict[str, Any]) -> Plot:
    """The panels, lines and marks of a run's report (see :func:`write_report`), without drawing them.

    Example:
        >>> recs = [{"phase": "lr", "epoch": 1, "samples": 0, "lr": [0.1, 0.1]}]
        >>> recs += [{"phase": "validation", "epoch": e, "samples": 10 * e, "loss": 1 / e} for e in (1, 2)]
        >>> plot = plot_data(recs, summarise(recs))
        >>> [p.title for p in plot.panels], plot.epoch_ends, plot.best_x, plot.constant_lr
        (['loss'], [(1, 10), (2, 20)], 20.0, [0.1, 0.1])
    """
    training, validation = latest_per_epoch(records, "training"), latest_per_epoch(records, "validation")
    x_key = _x_key(records)
    ends = sorted({r["epoch"]: r[x_key] for r in training + validation if finite_number(r.get(x_key))}.items()) if x_key != "epoch" else []

    def x_of(record: dict) -> float | None:
        if finite_number(record.get(x_key)):
            return float(record[x_key])
        if ends and finite_number(record.get("epoch")):  # a record with an epoch only: at that epoch's end
            return _interpolate(record["epoch"], [0] + [e for e, _ in ends], [0] + [x for _, x in ends])
        return None

    def series(recs: Iterable[dict], key: str) -> list[tuple[float, float]]:
        return [(x, float(r[key])) for r in recs if finite_number(r.get(key)) and (x := x_of(r)) is not None]

    metric = summary["metric"]
    batches = [r for r in records if r["phase"] == "batch"]
    loss = [("batch (interval mean)", series(batches, "loss")), ("training", series(training, "loss")),
            ("validation", series(validation, "loss"))]  # fmt: skip
    losses = [y for _, points in loss for _, y in points]
    # a log scale for a loss that spans a wide range; a narrow one reads better on a linear scale
    panels = [Panel("loss", loss, log_y=bool(losses) and min(losses) > 0 and max(losses) / min(losses) >= 3)]
    metrics = dict.fromkeys([metric] if metric != "loss" else [])
    for r in training + validation:
        metrics.update(dict.fromkeys(k for k, v in r.items() if k not in _NOT_METRICS and finite_number(v)))
    for name in metrics:
        panels.append(Panel(name, [("training", series(training, name)), ("validation", series(validation, name))]))
    lr_points = _lr_series(records, x_key)
    constant_lr = _constant_lr(lr_points)
    if lr_points and constant_lr is None:
        xs = [x for x, _ in lr_points]
        panels.append(Panel("learning rate", [(label, list(zip(xs, values))) for label, values in _lr_groups(lr_points)]))
    for phase, fields in _custom_phases(records).items():
        recs = [r for r in records if r["phase"] == phase]
        panels.append(Panel(phase, [(field, series(recs, field)) for field in fields]))
    for panel in panels:
        panel.lines = [(label, points) for label, points in panel.lines if points]
    return Plot(
        x_label={"samples": "samples seen", "iteration": "iteration", "epoch": "epoch"}[x_key],
        epoch_ends=ends,
        panels=[panel for panel in panels if panel.lines],
        best_x=next((x_of(r) for r in validation if r["epoch"] == summary["best_epoch"]), None),
        resume_xs=[x for r in records if r["phase"] == "resume" and (x := x_of(r)) is not None],
        constant_lr=constant_lr,
    )


def _interpolate(value: float, xs: list[float], ys: list[float]) -> float:
    """Piecewise-linear ys(value) through the points (xs, ys), xs increasing; clamped at both ends."""
    if value <= xs[0]:
        return float(ys[0])
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if value <= x1:
            return float(y0 if x1 == x0 else y0 + (y1 - y0) * (value - x0) / (x1 - x0))
    return float(ys[-1])


def panel_grid(count: int) -> tuple[Any, list[Any]]:
    """A figure of ``count`` panels, at most 3 a row (matplotlib's Agg backend); ``(figure, the panels' axes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(3, max(1, count))
    nrows = max(1, math.ceil(count / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def save_png(fig: Any, path: str | Path, what: str) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically (:func:`flint.handlers.write_atomic`), and close it."""
    import matplotlib.pyplot as plt

    from flint.handlers.files import write_atomic

    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), what)
    finally:
        plt.close(fig)
    return Path(path)


def _epoch_axis(plot: Plot) -> Any:
    """``add(ax)``, drawing the epochs on a top axis over samples seen; None when the epochs' ends do not map one-to-one."""
    import numpy as np
    from matplotlib.ticker import FixedLocator

    anchors = ([] if plot.epoch_ends and plot.epoch_ends[0][0] <= 0 else [(0, 0)]) + plot.epoch_ends  # epoch 0 at x 0
    epochs_at, x_at = [float(e) for e, _ in anchors], [float(x) for _, x in anchors]
    if len(anchors) < 2 or not all(b > a for v in (epochs_at, x_at) for a, b in zip(v, v[1:])):
        return None

    def line(v: Any, xs: list[float], ys: list[float]) -> Any:
        """Piecewise linear through (xs, ys), extended past both ends: the top axis needs an invertible map."""
        v = np.asarray(v, dtype=float)
        first, last = (ys[1] - ys[0]) / (xs[1] - xs[0]), (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        inside = np.interp(v, xs, ys)
        return np.where(v < xs[0], ys[0] + (v - xs[0]) * first, np.where(v > xs[-1], ys[-1] + (v - xs[-1]) * last, inside))

    def add(ax: Any) -> None:
        top = ax.secondary_xaxis("top", functions=(lambda x: line(x, x_at, epochs_at), lambda e: line(e, epochs_at, x_at)))
        step = math.ceil(len(plot.epoch_ends) / 8)  # at most about 8 epoch ticks, the last one always
        top.xaxis.set_major_locator(FixedLocator([e for e, _ in plot.epoch_ends][::-1][::step][::-1]))
        top.set_xlabel("epoch", fontsize="small")

    return add


def _draw(ax: Any, panel: Panel, plot: Plot, summary: dict[str, Any]) -> None:
    """One panel of the report: its lines, the best epoch, the resumes."""
    metric = summary["metric"]
    for label, points in panel.lines:
        style = {"training": "o-", "validation": "s-"}.get(label, "-" if len(points) > 1 else "o")
        extra = {"color": "0.7", "lw": 1} if label.startswith("batch") else {}
        ax.plot(*zip(*points), style, ms=3, label=label, **extra)
    if panel.log_y:
        ax.set_yscale("log")
    if plot.best_x is not None:
        ax.axvline(plot.best_x, color="tab:green", ls="--", lw=1, label=f"best {metric} (epoch {summary['best_epoch']})")
        if panel.title == metric:
            ax.plot([plot.best_x], [summary["best_value"]], "*", color="tab:green", ms=12, zorder=5)
    for i, x in enumerate(plot.resume_xs):
        ax.axvline(x, color="0.3", ls=":", lw=1.2, label="resumed" if i == 0 else None)
    ax.set_xlabel(plot.x_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(panel.title)


def write_report(run_dir: str | Path, output: str | Path | None = None) -> tuple[Path, str]:
    """Plot a run's curves into ``output`` (default ``run_dir/report.png``; written atomically); returns (PNG path, table text).

    Panels, each against samples seen (iterations or epochs if the records lack samples) with the
    epochs on a top axis: the loss (training and validation per epoch, the batch records' interval
    means; log scale), each other metric of the training and validation records (accuracy, MAE...),
    the learning rate (one line per distinct param-group curve; no panel if it never changes) and
    one panel per other record phase with numeric fields. A dashed line marks the best epoch of
    the monitored metric (``config.json``'s ``monitor`` ``"NAME:min|max"`` if set, else accuracy,
    else loss) and dotted lines mark resumes.
    """
    run = RunDir(run_dir)
    records = read_records(run.path)
    config = read_config(run)
    monitor = Monitor.of(config.get("monitor"))
    if config.get("monitor") and monitor is None:
        logger.warning("config.json: monitor %r is not NAME[:min|max]; using the default (accuracy, else loss)", config["monitor"])
    summary = summarise(records, monitor, bool(config.get("compile")))
    plot = plot_data(records, summary)
    fig, axes = panel_grid(len(plot.panels))
    epoch_axis = _epoch_axis(plot)
    for ax, panel in zip(axes, plot.panels):
        _draw(ax, panel, plot, summary)
        if epoch_axis is not None:
            epoch_axis(ax)
    best = "-" if summary["best_value"] is None else f"{summary['best_value']:.4f} at epoch {summary['best_epoch']}"
    fig.suptitle(f"{run.path.name}: best validation {summary['metric']} {best}")
    fig.tight_layout()
    path = save_png(fig, output if output is not None else run.report_file, "report")
    metadata = config.get("metadata")
    return path, _table(summary, plot.constant_lr, metadata.get("classes") if isinstance(metadata, dict) else None)
