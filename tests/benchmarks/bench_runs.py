"""``flint runs`` over many run directories: the table's time, in-process and as a whole command.

    python tests/benchmarks/bench_runs.py [--runs 1000] [--rounds 5]

Makes ``--runs`` run directories in a temporary folder, shaped like ``flint run lenet``'s (a real
``config.json`` with its data fingerprint, ``metrics.jsonl`` of 10 epochs at ``--log-interval 10``:
51 records, 8 KB, ``train.log``, ``checkpoints/``): 90% completed, 4% interrupted, 3% killed (no
summary), 3% running (their lock held by this process). A second set has every run killed after
240 epochs (185 KB of records), so that each row reads the whole 64 KiB tail (the worst case). It
prints the median over ``--rounds`` of: ``run_rows(find_runs(...))`` in this process, and ``python -m
flint runs DIR --json`` from launch to exit (interpreter start-up included), wall and CPU time. The
issue's bar: 1,000 runs in under a second on 2 cores. Importing this module does nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BAR = 1.0  # seconds for 1,000 runs


def config(i: int) -> dict[str, Any]:
    from flint.recipes.app.config import Config
    from flint.recipes.app.launch_clock import iso_time

    options = {k: v for k, v in vars(Config("lenet")).items()}
    sample = [["float", [1, 28, 28], -0.8, 3.1, [0.1, -0.2, 0.3]], ["torch.int64", [], "af5570f5" * 8]]
    started = iso_time(1.7e9 + 60 * i)
    return {**options, "dataset": "digits", "output_dir": f"runs/r{i}", "lr": 0.05, "epochs": 10, "lr_mode": "cosine",
            "fingerprint": {"recipe_file": None, "recipe_sha256": None, "data": {"train": 1438, "val": 359, "samples": [sample] * 6}},
            "started": started, "launched": started}  # fmt: skip


def records(epochs: int, closed: str | None, rng: random.Random) -> list[dict[str, Any]]:
    """A run's records as flint run writes them: lr, batch, training and validation per epoch, then its summary."""
    out: list[dict[str, Any]] = []
    for epoch in range(1, epochs + 1):
        it = (epoch - 1) * 23
        out.append({"phase": "lr", "epoch": epoch, "iteration": it, "samples": it * 64, "lr": [0.05, 0.05]})
        for step in (10, 20):
            out.append({"phase": "batch", "epoch": epoch, "iteration": it + step, "samples": (it + step) * 64, "loss": rng.random(),
                        "samples_per_sec": 1000 + rng.random(), "lr": [0.05, 0.05], "accuracy": rng.random()})  # fmt: skip
        out.append({"phase": "training", "epoch": epoch, "iteration": it + 23, "samples": (it + 23) * 64 - 2, "accuracy": rng.random(),
                    "loss": rng.random(), "epoch_time": 0.9 + rng.random(), "lr": [0.05, 0.05]})  # fmt: skip
        out.append({"phase": "validation", "epoch": epoch, "iteration": it + 23, "samples": (it + 23) * 64 - 2, "loss": rng.random(),
                    "accuracy": rng.random()})  # fmt: skip
    if closed:
        out.append({"phase": "summary", "status": closed, "epochs": epochs, "samples": epochs * 1438, "monitor": "accuracy:max",
                    "best_epoch": 4, "best_value": 0.9944, "avg_epoch_time": 1.4, "stopped_early": False, "wall_time": 14.2,
                    "samples_per_sec": 1010.0, "model_tflops": 0.0004})  # fmt: skip
    return out


def make_runs(root: Path, n: int, worst: bool) -> list[Path]:
    """``n`` run directories under ``root``; the ones to hold as running."""
    rng = random.Random(0)
    running = []
    for i in range(n):
        run = root / f"r{i:04d}"
        (run / "checkpoints").mkdir(parents=True)
        kind = "killed" if worst else rng.choices(["completed", "interrupted", "killed", "running"], [90, 4, 3, 3])[0]
        recs = records(240 if worst else 10, None if kind in ("killed", "running") else kind, rng)
        (run / "config.json").write_text(json.dumps(config(i), indent=2) + "\n")
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (run / "train.log").write_text("10:34:56 INFO flint.recipes.app.console: ...\n" * 50)
        (run / ".flint.lock").write_text("")
        if kind == "running":
            running.append(run)
    return running


def timed(rounds: int, call: Any) -> tuple[float, float]:
    """Median wall seconds of ``call()`` over ``rounds``, and median CPU seconds of the child processes it ran
    (on a busy machine the wall time waits for a core; the CPU time does not)."""
    times, cpu = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from flint.recipes.app.rundir import RunDir
    from flint.recipes.app.run_table import find_runs, run_rows

    print(f"flint runs over {args.runs} run directories, median of {args.rounds} rounds (bar: {BAR:.1f} s per 1,000 runs)")
    for worst in (False, True):
        with tempfile.TemporaryDirectory(prefix="flint-bench-runs-") as tmp, contextlib.ExitStack() as held:
            root = Path(tmp) / "runs"
            for run in make_runs(root, args.runs, worst):
                held.enter_context(RunDir(run).lock())
            rows = run_rows(find_runs([root]))
            statuses = {status: sum(r.status == status for r in rows) for status in dict.fromkeys(r.status for r in rows)}
            size = sum((root / name / "metrics.jsonl").stat().st_size for name in ("r0000",)) / 1024
            inside, _ = timed(args.rounds, lambda: run_rows(find_runs([root])))
            command = [sys.executable, "-m", "flint", "runs", str(root), "--json"]
            whole, whole_cpu = timed(args.rounds, lambda: subprocess.run(command, cwd=REPO, capture_output=True, check=True, timeout=600))
            start_up, start_cpu = timed(args.rounds, lambda: subprocess.run([sys.executable, "-m", "flint", "--version"], cwd=REPO,
                                                                            capture_output=True, check=True, timeout=600))  # fmt: skip
            label = "worst case: every run killed, 64 KiB tails parsed" if worst else "typical: 10-epoch lenet runs"
            print(f"\n{label} ({size:.0f} KB metrics.jsonl each; {statuses})")
            print(f"  in-process run_rows(find_runs(...)): {inside:.3f} s wall ({inside / args.runs * 1e3:.2f} ms a run)")
            print(f"  python -m flint runs --json:         {whole:.3f} s wall, {whole_cpu:.3f} s CPU")
            print(f"  python -m flint --version alone:     {start_up:.3f} s wall, {start_cpu:.3f} s CPU")
            verdict = "met" if whole * 1000 / args.runs < BAR else "met in CPU time" if whole_cpu * 1000 / args.runs < BAR else "NOT met"
            print(f"  the whole command per 1,000 runs: {whole * 1000 / args.runs:.3f} s wall (bar {BAR:.1f} s: {verdict}); "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip


if __name__ == "__main__":
    main()
