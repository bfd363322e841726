"""Whole processes: ``flint run lenet`` against ``hand_lenet.py``, each timed from launch to exit.

Run through ``bench_loop.py --process`` (and ``--imports``); importing this module does nothing.
Each round launches both as fresh ``python`` processes, one after the other, the first alternating
between rounds (hand first in odd rounds), after one untimed warm-up round of one epoch each (the
file cache). A process's wall time runs from just before its launch to its exit. The result is
hand/flint (Flint's speed as a share of the hand script's, the issue's ratio) from the medians over
rounds, with the per-round ratios' range and a 90% bootstrap interval over rounds, and a verdict
against 0.95. Both runs' ``train.log`` timestamps split each process into phases (:func:`phases`),
and their ``metrics.jsonl`` say whether they did the same work (:func:`same_work`).
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TARGET = 0.95  # the issue: Flint's whole process within 5% of the hand-written one
LOOPS = ("hand", "flint")
PHASES = ("start-up", "to first log line", "set-up", "training", "epoch ends", "exit")


class Run(NamedTuple):
    """One process: wall seconds from launch to exit, its phases, its training and validation records."""

    seconds: float
    phases: dict[str, float]
    records: list[dict[str, Any]]


def command(loop: str, out: Path, epochs: int, importtime: bool = False) -> list[str]:
    """The command line of ``loop`` ("hand" or "flint") writing its run to ``out``."""
    python = [sys.executable, *(["-X", "importtime"] if importtime else [])]
    if loop == "hand":
        return [*python, str(HERE / "hand_lenet.py"), "--epochs", str(epochs), "-o", str(out)]
    return [*python, "-m", "flint", "run", "lenet", "--epochs", str(epochs), "-o", str(out)]


def launch(loop: str, out: Path, epochs: int, importtime: bool = False, threads: int | None = None) -> tuple[float, float, float]:
    """Runs ``loop`` in a fresh process (stdout and stderr to ``out``.log); (launched, exited, wall seconds).

    ``threads``: torch's intra-op threads through ``OMP_NUM_THREADS``; None or 0 leaves torch's default.
    """
    env = dict(os.environ)  # `python -m flint` runs this checkout's Flint
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(f"{out}.log", "wb") as console:
        launched, start = time.time(), time.perf_counter()
        code = subprocess.call(command(loop, out, epochs, importtime), cwd=REPO, env=env, stdout=console, stderr=console)
        wall, exited = time.perf_counter() - start, time.time()
    if code != 0:
        tail = Path(f"{out}.log").read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"{loop} exited with status {code}: " + " | ".join(tail))
    return launched, exited, wall


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def stamped(lines: list[str]) -> list[tuple[float, str]]:
    """The lines of a train.log that start with a logging timestamp, as (Unix time, line).

    >>> lines = ["2026-12-02 10:22:27,580 INFO x: Run config: {}", "Traceback (most recent call last):"]
    >>> [(round(t - datetime.datetime(2026, 12, 2, 10, 22, 27).timestamp(), 3), line[-14:]) for t, line in stamped(lines)]
    [(0.58, 'Run config: {}')]
    """
    out = []
    for line in lines:
        m = _STAMP.match(line)
        if m:
            out.append((datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), line))
    return out


def phases(launched: float, exited: float, lines: list[str], epoch_times: list[float]) -> dict[str, float]:
    """Where a process's wall time went, in seconds, from its train.log lines and its epochs' times.

    ``start-up``: launch to the first epoch's start (its training record's time less its
    ``epoch_time``), split into ``to first log line`` (the interpreter, imports, options: up to the
    "Run config" line) and ``set-up`` (data, model, optimizer, writers, engines and handlers);
    ``training``: the epochs' ``epoch_time`` (first to last iteration, as ``flint.handlers.EpochTimer``);
    ``epoch ends``: the rest up to the summary record (records, histograms, validation, checkpoints,
    each epoch's start); ``exit``: the summary record to the process's exit (closing files, waiting
    for checkpoint writes, the interpreter's shut-down). Log times have millisecond resolution.

    >>> log = ["2026-12-02 10:00:02,000 INFO x: Run config: {}",
    ...        "2026-12-02 10:00:04,500 INFO x: [Epoch 1] training: loss=1",
    ...        "2026-12-02 10:00:05,500 INFO x: [Epoch 2] training: loss=1",
    ...        "2026-12-02 10:00:05,700 INFO x: summary: status=completed"]
    >>> t0 = datetime.datetime(2026, 12, 2, 10, 0, 0).timestamp()
    >>> {k: round(v, 3) for k, v in phases(t0, t0 + 6.0, log, [0.5, 0.8]).items()}
    {'start-up': 4.0, 'to first log line': 2.0, 'set-up': 2.0, 'training': 1.3, 'epoch ends': 0.4, 'exit': 0.3}
    """
    times = stamped(lines)
    first = times[0][0]
    first_epoch_end = next(t for t, line in times if "[Epoch 1] training:" in line)
    summary = next(t for t, line in reversed(times) if " summary: " in line)
    start = first_epoch_end - epoch_times[0]
    training = sum(epoch_times)
    return {"start-up": start - launched, "to first log line": first - launched, "set-up": start - first,
            "training": training, "epoch ends": summary - start - training, "exit": exited - summary}  # fmt: skip


def read_run(out: Path, launched: float, exited: float, wall: float) -> Run:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["phase"] in ("training", "validation")]
    epoch_times = [r["epoch_time"] for r in epochs if r["phase"] == "training"]
    lines = (out / "train.log").read_text(encoding="utf-8").splitlines()
    return Run(wall, phases(launched, exited, lines, epoch_times), epochs)


def ratio_interval(pairs: list[tuple[float, float]], level: float = 0.9, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval of median(hand) / median(flint) over rounds, each round a (hand, flint) pair.

    >>> ratio_interval([(9.0, 10.0)] * 3)
    (0.9, 0.9)
    >>> lo, hi = ratio_interval([(9.0, 10.0), (9.5, 10.0), (9.0, 9.5), (8.8, 10.1)])
    >>> lo < 0.92 < hi
    True
    """
    if len(pairs) < 2:
        raise ValueError(f"an interval needs at least 2 rounds, got {len(pairs)}")
    draw = random.Random(seed)
    values = []
    for _ in range(resamples):
        picks = [pairs[draw.randrange(len(pairs))] for _ in pairs]
        values.append(statistics.median(h for h, _ in picks) / statistics.median(f for _, f in picks))
    values.sort()
    tail = (1 - level) / 2  # each end rounded outwards
    return values[int(tail * (resamples - 1))], values[-int(tail * (resamples - 1)) - 1]


def _values(run: Run) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "epoch_time"} for r in run.records]


def same_work(hand: list[Run], flint: list[Run]) -> str:
    """Whether the two scripts trained alike: the final validation accuracy to 3 decimals, every epoch's records compared."""
    h, f = hand[0].records, flint[0].records
    final = [r["accuracy"] for r in (h[-1], f[-1])]
    diffs = [abs(a[k] - b[k]) for a, b in zip(h, f) for k in ("loss", "accuracy") if k in a and k in b]
    repeat = all(_values(r) == _values(hand[0]) for r in hand) and all(_values(r) == _values(flint[0]) for r in flint)
    verdict = "equal to 3 decimals" if round(final[0], 3) == round(final[1], 3) else "DIFFERENT: not the same work"
    return (f"final validation accuracy hand {final[0]:.4f}, flint {final[1]:.4f}: {verdict}; each epoch's training and "
            f"validation loss and accuracy differ by at most {max(diffs, default=0.0):.2g}"
            + ("" if repeat else "; RUNS OF ONE SCRIPT DIFFER"))  # fmt: skip


def _timed_round(epochs: int, order: tuple[str, ...], root: Path, tag: str, threads: int | None) -> dict[str, Run]:
    runs = {}
    for loop in order:
        out = root / f"{tag}_{loop}"
        runs[loop] = read_run(out, *launch(loop, out, epochs, threads=threads))
    return runs


def run(args: argparse.Namespace) -> int:
    """``bench_loop.py --process``: ``args.rounds`` alternating rounds of ``args.epochs`` epochs; prints the table."""
    epochs = args.epochs or 15
    print(f"# each round: `python -m flint run lenet --epochs {epochs} -o DIR` (flint) and `python {HERE.relative_to(REPO)}/hand_lenet.py "
          f"--epochs {epochs} -o DIR` (hand), each a fresh process, timed from launch to exit; "
          f"{args.rounds} round(s), the first process alternating (hand first in odd rounds), after an untimed warm-up round of 1 epoch; medians")  # fmt: skip
    runs: dict[str, list[Run]] = {loop: [] for loop in LOOPS}
    with tempfile.TemporaryDirectory(prefix="bench_process_") as tmp:
        root = Path(tmp)
        _timed_round(1, LOOPS, root, "warmup", args.threads)
        for i in range(args.rounds):
            order = LOOPS if i % 2 == 0 else LOOPS[::-1]
            result = _timed_round(epochs, order, root, f"round{i + 1}", args.threads)
            for loop in LOOPS:
                runs[loop].append(result[loop])
            h, f = result["hand"].seconds, result["flint"].seconds
            print(f"# round {i + 1}/{args.rounds} ({order[0]} first): hand {h:.2f} s, flint {f:.2f} s, hand/flint {h / f:.3f}",
                  file=sys.stderr, flush=True)  # fmt: skip
    med = {loop: statistics.median(r.seconds for r in runs[loop]) for loop in LOOPS}
    phase_med = {loop: {p: statistics.median(r.phases[p] for r in runs[loop]) for p in PHASES} for loop in LOOPS}
    print("process, wall s, " + ", ".join(PHASES) + " (medians, seconds)")
    for loop in LOOPS:
        print(f"{loop}, {med[loop]:.2f}, " + ", ".join(f"{phase_med[loop][p]:.3f}" for p in PHASES))
    print(f"flint - hand, {med['flint'] - med['hand']:+.2f}, " + ", ".join(f"{phase_med['flint'][p] - phase_med['hand'][p]:+.3f}" for p in PHASES))
    pairs = [(h.seconds, f.seconds) for h, f in zip(runs["hand"], runs["flint"])]
    ratios = [h / f for h, f in pairs]
    ratio = med["hand"] / med["flint"]
    line = f"# lenet digits {epochs} epochs, whole process: hand/flint {ratio:.3f} (ratio of medians)"
    if len(pairs) < 2:
        print(f"{line}; one round: no interval, no verdict")
    else:
        from bench_loop import verdict

        interval = ratio_interval(pairs)
        print(f"{line}; per-round ratios {min(ratios):.3f}-{max(ratios):.3f}; 90% bootstrap interval over rounds "
              f"{interval[0]:.3f}-{interval[1]:.3f}; target {TARGET}: {verdict(interval, TARGET, more='--rounds')}")  # fmt: skip
    per_epoch = (phase_med["flint"]["epoch ends"] - phase_med["hand"]["epoch ends"]) / epochs * 1e3
    iterations = max(r["iteration"] for r in runs["hand"][0].records)
    per_it = (phase_med["flint"]["training"] - phase_med["hand"]["training"]) / iterations * 1e6
    print(f"# flint - hand: epoch ends {per_epoch:+.1f} ms per epoch; training {per_it:+.0f} us per iteration ({iterations} iterations)")
    print(f"# same work: {same_work(runs['hand'], runs['flint'])}")
    return 0


def import_table(stderr: str) -> dict[str, tuple[int, float]]:
    """``python -X importtime`` output -> top-level package: (modules imported, their own seconds summed).

    >>> import_table("import time: self [us] | cumulative | imported package\\n"
    ...              "import time:       120 |        120 |   torch.nn\\nimport time:   80 |   200 | torch\\nother line")
    {'torch': (2, 0.0002)}
    """
    table: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for line in stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].split(":")[1].strip().isdigit():
            continue
        entry = table[parts[2].strip().split(".")[0]]
        entry[0] += 1
        entry[1] += int(parts[0].split(":")[1]) / 1e6
    return {k: (int(n), s) for k, (n, s) in table.items()}


def imports(args: argparse.Namespace, top: int = 12) -> int:
    """``bench_loop.py --imports``: one run of each under ``python -X importtime``: what each process imports, by package.

    Module counts are deterministic; the seconds (self time, under the profiler's own overhead) are one run's.
    """
    epochs = args.epochs or 1
    tables = {}
    with tempfile.TemporaryDirectory(prefix="bench_imports_") as tmp:
        for loop in LOOPS:
            out = Path(tmp) / loop
            launch(loop, out, epochs, importtime=True, threads=args.threads)
            tables[loop] = import_table(Path(f"{out}.log").read_text(errors="replace"))
    total = {loop: (sum(n for n, _ in t.values()), sum(s for _, s in t.values())) for loop, t in tables.items()}
    print(f"# one {epochs}-epoch run of each under `python -X importtime`: modules imported and their own import time, by top-level package")
    print("package, hand modules, hand s, flint modules, flint s")
    packages = sorted(set(tables["hand"]) | set(tables["flint"]),
                      key=lambda p: -max(tables["hand"].get(p, (0, 0.0))[1], tables["flint"].get(p, (0, 0.0))[1]))  # fmt: skip
    for p in packages[:top]:
        (hn, hs), (fn, fs) = tables["hand"].get(p, (0, 0.0)), tables["flint"].get(p, (0, 0.0))
        print(f"{p}, {hn}, {hs:.3f}, {fn}, {fs:.3f}")
    print(f"all, {total['hand'][0]}, {total['hand'][1]:.3f}, {total['flint'][0]}, {total['flint'][1]:.3f}")
    only = sorted(set(tables["flint"]) - set(tables["hand"]), key=lambda p: -tables["flint"][p][1])
    print("# imported by flint only: " + ", ".join(f"{p} ({tables['flint'][p][0]})" for p in only))
    return 0
