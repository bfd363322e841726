"""``flint report RUN_DIR``: curves of a run as ``report.png`` and a short table of its results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from handlers.meters import average_excluding_first
from recipes.config import UsageError

__all__ = ["read_records", "summarise", "write_report"]


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UsageError(f"report: no metrics.jsonl in {run_dir}")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _latest_per_epoch(records: list[dict], phase: str) -> list[dict]:
    """One record per epoch, the last written: an attempt that died before its checkpoint is superseded."""
    by_epoch = {r["epoch"]: r for r in records if r["phase"] == phase}
    return [by_epoch[e] for e in sorted(by_epoch)]


def summarise(records: list[dict]) -> dict[str, Any]:
    """Best epoch and value of the monitored metric, last values, average epoch time and throughput."""
    training, validation = _latest_per_epoch(records, "training"), _latest_per_epoch(records, "validation")
    metric = "accuracy" if any("accuracy" in r for r in validation) else "loss"
    pick = max if metric == "accuracy" else min
    best = pick(validation, key=lambda r: r[metric]) if validation else None
    times = [r["epoch_time"] for r in training if r.get("epoch_time")]
    avg_time = average_excluding_first(times)
    per_epoch = training[-1]["samples"] / training[-1]["epoch"] if training else None
    summaries = [r for r in records if r["phase"] == "summary"]
    return {
        "status": summaries[-1]["status"] if summaries else "running",
        "epochs": training[-1]["epoch"] if training else 0,
        "metric": metric,
        "best_epoch": best["epoch"] if best else None,
        "best_value": best[metric] if best else None,
        "last_value": validation[-1][metric] if validation else None,
        "avg_epoch_time": avg_time,
        "samples_per_sec": per_epoch / avg_time if per_epoch and avg_time else None,
    }


def _table(summary: dict[str, Any]) -> str:
    def show(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    rows = [
        ("status", summary["status"]),
        ("epochs", str(summary["epochs"])),
        (f"best validation {summary['metric']}", f"{show(summary['best_value'], '.4f')} (epoch {summary['best_epoch']})"),
        (f"last validation {summary['metric']}", show(summary["last_value"], ".4f")),
        ("average epoch time", f"{show(summary['avg_epoch_time'], '.3f')} s (without the first epoch)"),
        ("throughput", f"{show(summary['samples_per_sec'], ',.0f')} samples/s (training)"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_report(run_dir: str | Path) -> tuple[Path, str]:
    """Plot loss, the task's metric and the LR against samples seen; returns (PNG path, table text)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_records(run_dir)
    summary = summarise(records)
    metric = "accuracy" if summary["metric"] == "accuracy" else "mae"
    training, validation = _latest_per_epoch(records, "training"), _latest_per_epoch(records, "validation")
    batches = [r for r in records if r["phase"] == "batch"]
    lrs = sorted({r["samples"]: r["lr"] for r in records if r["phase"] == "lr"}.items())

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [("loss", "loss"), (metric, metric)]
    for ax, (key, title) in zip(axes, panels):
        if key == "loss" and batches:
            ax.plot([r["samples"] for r in batches], [r["loss"] for r in batches], color="0.75", lw=1, label="batch (interval mean)")
        for recs, label, style in ((training, "training", "o-"), (validation, "validation", "s-")):
            points = [(r["samples"], r[key]) for r in recs if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), style, ms=3, label=label)
        if key == "loss":
            ax.set_yscale("log")
        ax.set(title=title, xlabel="samples seen")
        ax.grid(alpha=0.3)
        ax.legend()
    if lrs:
        for i in range(len(lrs[0][1])):
            axes[2].plot([s for s, _ in lrs], [lr[i] for _, lr in lrs], label=f"group {i}")
        axes[2].legend()
    axes[2].set(title="learning rate", xlabel="samples seen")
    axes[2].grid(alpha=0.3)
    best = "-" if summary["best_value"] is None else f"{summary['best_value']:.4f}"
    fig.suptitle(f"{run_dir.name}: best validation {summary['metric']} {best} at epoch {summary['best_epoch']}")
    fig.tight_layout()
    path = run_dir / "report.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path, _table(summary)
