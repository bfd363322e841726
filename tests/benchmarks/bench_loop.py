"""On-demand benchmark: a hand-written PyTorch training loop (A) against Flint's engine and handlers (B).

Run it from the repository root (not collected by pytest; importing this module does nothing)::

    .venv/bin/python tests/benchmarks/bench_loop.py            # about 3.5 minutes on 2 CPU cores
    .venv/bin/python tests/benchmarks/bench_loop.py --runs 5   # the same in 5 fresh processes, judged on their median
    .venv/bin/python tests/benchmarks/bench_loop.py --calls    # Python calls per iteration, deterministic; under a minute
    .venv/bin/python tests/benchmarks/bench_loop.py --process  # whole processes: flint run lenet against hand_lenet.py
    .venv/bin/python tests/benchmarks/bench_loop.py --help

Both loops train the same model from the same seed on the same in-memory fake data for the same
iterations, with the same features: interval loss and samples/sec every ``--log-interval`` iterations,
running training accuracy and epoch loss accumulated on the device, per-epoch validation, latest and
best checkpoints, log lines to a file, a JSON-lines file and TensorBoard scalars and histograms.
A is written by hand as a careful person would (seed 004 style); B is ``flint.engine.create_trainer`` and
``flint.engine.create_evaluator`` with the handlers attached exactly as ``flint.recipes.app.train`` attaches them.
Everything runs in one process: within each repetition A and B take turns every ``--interleave``
iterations (so a busy neighbour slows both alike), the first loop alternating between repetitions;
the table gives the ratio paired per chunk of iterations (:func:`paired_ratio`) and the implied
iterations/sec, and a detail line its 90% bootstrap interval over the repetitions
(:func:`ratio_interval`) with a verdict against the target. ``--against-itself`` runs A against a
copy of A: what the method resolves. On CPU it also checks that A and B end with bit-identical
weights, i.e. that they did the same work. ``--runs N`` repeats all this in N fresh processes and
judges each case on the median of their ratios; ``--process`` and ``--imports`` compare whole
``flint run lenet`` processes with ``hand_lenet.py`` instead (``bench_process.py``).
See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[2]

# name -> (recipe module, batch size, training iterations per epoch by default)
CASES = {
    "mlp": ("flint.recipes.builtin.mlp", 64, 500),
    "lenet": ("flint.recipes.builtin.lenet", 128, 170),
}


class Data(NamedTuple):
    """A loop's data: the hand loop iterates the loaders, Flint's job builds its own from the datasets as the recipe does."""

    train_loader: Any
    val_loader: Any
    sampler: Any
    train_set: Any
    val_set: Any


VAL_SIZE = 2560  # 10 validation batches of 256, the recipe's max(batch_size, 256)
LR = 0.05  # the mlp and lenet recipes' default
TARGET = 0.97  # issue 16: Flint's iterations/sec at least this share of the hand loop's


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fake_data(n_train: int, n_val: int, seed: int = 0) -> tuple[Any, Any]:
    """Random 1x28x28 images in [0, 1] and labels 0-9, fixed by ``seed``, as two TensorDatasets."""
    import torch
    from torch.utils.data import TensorDataset

    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    x = torch.rand(n, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def _loaders(train_set: Any, val_set: Any, batch_size: int, device: Any, kind: str, seed: int) -> Callable[[], Data]:
    """A factory of fresh (train loader, validation loader, train sampler), fed as ``flint.recipes.app.train`` feeds them.

    ``device``: the tensors on the device, batched by ``DeviceTensorLoader`` (``--data-on-device``);
    ``dataloader``: ``DataLoader``s over the datasets with ``EpochSampler``s. Each loop gets its own
    loaders (the sampler holds the epoch), over the same tensors.
    """
    from torch.utils.data import DataLoader, TensorDataset

    from flint.engine import EpochSampler
    from flint.recipes.builtin.data import DeviceTensorLoader

    val_batch = max(batch_size, 256)
    if kind == "device":
        train_set, val_set = (TensorDataset(*(t.to(device) for t in d.tensors)) for d in (train_set, val_set))  # once

        def on_device() -> Data:
            train = DeviceTensorLoader(train_set, batch_size, shuffle=True, device=device, seed=seed)
            return Data(train, DeviceTensorLoader(val_set, val_batch, shuffle=False, device=device), train.sampler, train_set, val_set)

        return on_device
    pin = device.type == "cuda"

    def loaders() -> Data:
        sampler = EpochSampler(len(train_set), seed=seed)
        train = DataLoader(train_set, batch_size=batch_size, sampler=sampler, generator=sampler.generator, pin_memory=pin)
        val_sampler = EpochSampler(len(val_set), shuffle=False, pad=False)
        return Data(train, DataLoader(val_set, batch_size=val_batch, sampler=val_sampler, pin_memory=pin), sampler, train_set, val_set)

    return loaders


def _config(case: str, out: Path, epochs: int, batch_size: int, device: Any, args: argparse.Namespace) -> Any:
    from flint.recipes.app.config import Config

    return Config(
        recipe=case, dataset="fake", epochs=epochs, batch_size=batch_size, lr=LR, optimizer="sgd", momentum=0.9,
        wd=1e-4, loss="cross-entropy", lr_mode="constant", log_interval=args.log_interval, seed=args.seed,
        device=str(device), output_dir=str(out), progress=False, data_on_device=args.data == "device",
    )  # fmt: skip


def _fresh_model(case: str, device: Any, seed: int) -> Any:
    import importlib

    from flint.engine import seed_everything

    seed_everything(seed)  # the model's init and the first shuffle draw from here, in both loops
    return importlib.import_module(CASES[case][0]).RECIPE.build_model().to(device)


# --------------------------------------------------------------------------------------------------
# A: the hand-written loop
# --------------------------------------------------------------------------------------------------


def _finite(loss: float, iteration: int) -> float:
    """The hand loop's NaN guard: the loss it reads anyway at each log point and epoch end must be finite."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"the training loss became nan or inf at or before iteration {iteration}")
    return loss


def hand_loop(case: str, cfg: Any, data: Data, device: Any, out: Path, chunk: int = 0,
              logger: str = "bench.hand") -> Generator[str, None, tuple[int, Any]]:  # fmt: skip
    """Seed 004's loop by hand with the same features as Flint's recipe, as a :func:`drive` generator."""
    import torch
    from tensorboardX import SummaryWriter  # type: ignore[import-untyped]

    from flint.recipes.app.optim import make_loss
    from flint.recipes.app.train import build_optimizer

    log = logging.getLogger(logger)
    model = _fresh_model(case, device, cfg.seed)
    optimizer = build_optimizer(cfg, model)
    loss_fn = make_loss("classification", cfg.loss, cfg.label_smoothing)
    train_loader, val_loader, sampler = data.train_loader, data.val_loader, data.sampler
    non_blocking = device.type == "cuda"
    stop = {"requested": False}  # what a SIGTERM handler would set; `flint run` saves and exits 3 on it
    writer = SummaryWriter(logdir=str(out))
    jsonl = open(out / "metrics.jsonl", "a", encoding="utf-8")
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir()
    latest: list[Path] = []
    best_acc, best_path = -math.inf, None
    every = cfg.log_interval
    steps = len(train_loader)

    def emit(record: dict[str, Any], level: int = logging.INFO) -> None:
        log.log(level, "[Epoch %d] %s: %s", record["epoch"], record["phase"],
                " ".join(f"{k}={v}" for k, v in record.items() if k not in ("phase", "epoch")))  # fmt: skip
        jsonl.write(json.dumps(record) + "\n")
        jsonl.flush()

    def lrs() -> list[float]:
        return [float(g["lr"]) for g in optimizer.param_groups]

    def histograms(kind: str, step: int) -> None:
        for name, p in model.named_parameters():
            t = p if kind == "weights" else p.grad
            if t is not None:
                writer.add_histogram(f"{kind}/{name}", t.detach().float().cpu(), step, bins=64)

    yield "ready"
    iteration = samples = 0
    for epoch in range(1, cfg.epochs + 1):
        sampler.set_epoch(epoch)  # this epoch's shuffle, as with a DistributedSampler
        model.train()
        epoch_start = interval_start = time.perf_counter()
        interval_samples, interval_batches = samples, 0
        interval_loss = torch.zeros((), device=device)
        epoch_loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        emit({"phase": "lr", "epoch": epoch, "iteration": iteration + 1, "samples": samples, "lr": lrs()}, logging.DEBUG)
        for i, (x, y) in enumerate(train_loader, 1):
            x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
            optimizer.zero_grad(set_to_none=True)
            y_pred = model(x)
            loss = loss_fn(y_pred, y)
            loss.backward()
            n = x.shape[0]
            iteration, samples, seen = iteration + 1, samples + n, seen + n
            if i == steps:
                histograms("grads", samples)
            optimizer.step()
            with torch.no_grad():  # running metrics stay on the device: no host sync here
                loss = loss.detach()
                interval_loss += loss
                epoch_loss += loss * n
                correct += (y_pred.argmax(1) == y).sum()
            interval_batches += 1
            if iteration % every == 0:
                now = time.perf_counter()
                record = {
                    "phase": "batch", "epoch": epoch, "iteration": iteration, "samples": samples,
                    "loss": _finite(interval_loss.item() / interval_batches, iteration),
                    "samples_per_sec": (samples - interval_samples) / (now - interval_start),
                    "lr": lrs(), "accuracy": correct.item() / seen,
                }  # fmt: skip
                emit(record)
                for key in ("loss", "samples_per_sec", "accuracy"):
                    writer.add_scalar(f"batch/{key.replace('_', '-')}", record[key], samples)
                emit({"phase": "lr", "epoch": epoch, "iteration": iteration, "samples": samples, "lr": record["lr"]}, logging.DEBUG)
                for g, lr in enumerate(record["lr"]):
                    writer.add_scalar(f"training/lr/group_{g}", lr, samples)
                interval_start, interval_samples, interval_batches = now, samples, 0
                interval_loss = torch.zeros((), device=device)
            if stop["requested"]:
                break  # (a checkpoint would be saved here)
            if chunk and iteration % chunk == 0 and iteration < cfg.epochs * steps:
                yield "chunk"
        epoch_time = time.perf_counter() - epoch_start
        train = {"loss": _finite(epoch_loss.item() / seen, iteration), "accuracy": correct.item() / seen, "epoch_time": epoch_time}
        emit({"phase": "training", "epoch": epoch, "iteration": iteration, "samples": samples, **train, "lr": lrs()})
        for key, value in train.items():
            writer.add_scalar(f"training/{key.replace('_', '-')}", value, samples)
        writer.flush()
        histograms("weights", samples)

        model.eval()
        val_loss = torch.zeros((), device=device)
        val_correct = torch.zeros((), dtype=torch.int64, device=device)
        val_seen = 0
        with torch.no_grad():
            for x, y in val_loader:
                x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
                y_pred = model(x)
                val_loss += loss_fn(y_pred, y) * y.shape[0]
                val_correct += (y_pred.argmax(1) == y).sum()
                val_seen += y.shape[0]
        val = {"loss": val_loss.item() / val_seen, "accuracy": val_correct.item() / val_seen}
        emit({"phase": "validation", "epoch": epoch, "iteration": iteration, "samples": samples, **val})
        for key, value in val.items():
            writer.add_scalar(f"validation/{key}", value, samples)
        writer.flush()

        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "iteration": iteration,
                 "samples": samples, "best_accuracy": max(best_acc, val["accuracy"])}  # fmt: skip
        if val["accuracy"] > best_acc:
            best_acc = val["accuracy"]
            path = ckpt_dir / f"best_checkpoint_{epoch}_accuracy={best_acc:.4f}.pt"
            torch.save(state, path)
            if best_path is not None:
                best_path.unlink()
            best_path = path
        path = ckpt_dir / f"checkpoint_{iteration}.pt"
        torch.save(state, path)
        latest.append(path)
        if len(latest) > 2:
            latest.pop(0).unlink()
    yield "done"
    writer.close()
    jsonl.close()
    return iteration, model


# --------------------------------------------------------------------------------------------------
# B: Flint, wired as flint.recipes.app.train wires it
# --------------------------------------------------------------------------------------------------


def build_flint(case: str, cfg: Any, data: Data, device: Any, out: Path) -> Any:
    """The trainer, evaluator and handlers of ``flint.recipes.app.train.build_job`` (the recipe's own wiring) on the case's data."""
    import importlib

    from flint.recipes.app.registry import Recipe
    from flint.recipes.app.rundir import RunDir
    from flint.recipes.app.train import Place, build_job

    recipe: Recipe = importlib.import_module(CASES[case][0]).RECIPE
    fake = Recipe(recipe.name, "", recipe.build_model, {"fake": lambda cfg: (data.train_set, data.val_set)})
    return build_job(cfg, fake, RunDir(out), Place(device))


def flint_loop(case: str, cfg: Any, data: Data, device: Any, out: Path, chunk: int = 0,
               profiler: Any = None) -> Generator[str, None, tuple[int, Any]]:  # fmt: skip
    """Flint's job from :func:`build_flint`, as a :func:`drive` generator (paused with ``Engine.interrupt``)."""
    from ignite.engine import Events

    job = build_flint(case, cfg, data, device, out)
    trainer = job.trainer
    total = cfg.epochs * len(job.train_loader)
    paused = [False]

    def pause(engine: Any) -> None:  # a plain handler with its own modulo, as A checks its counter
        if not engine.state.iteration % chunk and engine.state.iteration < total:
            paused[0] = True
            engine.interrupt()

    if chunk:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, pause)
    if profiler is not None:
        profiler.attach(trainer)
    yield "ready"
    with job.safety.preemption.signal_handlers():  # as `flint run`: SIGTERM/SIGINT save and stop
        while True:
            paused[0] = False
            trainer.run(job.train_loader, max_epochs=cfg.epochs)
            if not paused[0]:
                break
            yield "chunk"
    yield "done"
    job.report.stream.close()
    return trainer.state.iteration, job.model.module


LoopFn = Callable[..., Generator[str, None, tuple[int, Any]]]  # a loop for drive(): hand_loop, flint_loop
LOOPS: dict[str, LoopFn] = {
    "hand": hand_loop, "flint": flint_loop,
    "hand-again": functools.partial(hand_loop, logger="bench.hand-again"),  # --against-itself
}  # fmt: skip


class Timed(NamedTuple):
    """One loop's repetition: total timed seconds, iterations, the trained model, seconds of each timed step."""

    seconds: float
    iterations: int
    model: Any
    steps: list[float]


def drive(loops: dict[str, Generator[str, None, tuple[int, Any]]], device: Any) -> dict[str, Timed]:
    """Runs the loops' generators round-robin, timing each step; returns name -> :class:`Timed`.

    A loop generator sets up and yields ``"ready"`` (not timed), trains and yields ``"chunk"`` whenever
    it pauses, yields ``"done"`` when training, validation and checkpoints are over, then tears down
    and returns ``(iterations, model)``. Only the steps from ``"ready"`` to ``"done"`` are timed.
    """
    for gen in loops.values():
        if next(gen) != "ready":
            raise RuntimeError("a loop generator must yield 'ready' after its setup")
    steps: dict[str, list[float]] = {name: [] for name in loops}
    results: dict[str, Timed] = {}
    active = list(loops)
    while active:
        for name in list(active):
            _sync(device)
            start = time.perf_counter()
            state = next(loops[name])
            _sync(device)
            steps[name].append(time.perf_counter() - start)
            if state == "done":
                active.remove(name)
                try:
                    next(loops[name])
                except StopIteration as stop:
                    iterations, model = stop.value
                    results[name] = Timed(sum(steps[name]), iterations, model, steps[name])
                else:
                    raise RuntimeError("a loop generator must return after 'done'")
    return results


def chunk_ratios(a_reps: list[Timed], b_reps: list[Timed]) -> list[tuple[float, float]]:
    """For each chunk position: (A's median seconds, the median over repetitions of B's time over A's).

    >>> chunk_ratios([Timed(3.0, 20, None, [1.0, 2.0])] * 3, [Timed(3.5, 20, None, [1.0, 2.5])] * 3)
    [(1.0, 1.0), (2.0, 1.25)]
    """
    a_chunks, b_chunks = list(zip(*(r.steps for r in a_reps))), list(zip(*(r.steps for r in b_reps)))
    return [(statistics.median(ta), statistics.median(b / a for a, b in zip(ta, tb))) for ta, tb in zip(a_chunks, b_chunks)]


def paired_ratio(a_reps: list[Timed], b_reps: list[Timed]) -> float:
    """B's time over A's, robust to a machine whose speed changes from one second to the next.

    Each repetition's chunks alternate A, B, A, B...: a chunk of A and the same chunk of B ran within a
    second of each other, under the same load. For each chunk position: the median over repetitions
    of B/A, and the median of A's time. The result is those ratios averaged with A's times as weights,
    i.e. B's total over A's total with every chunk counted (epoch ends included), bursts filtered out.
    """
    chunks = chunk_ratios(a_reps, b_reps)
    return sum(w * q for w, q in chunks) / sum(w for w, _ in chunks)


def ratio_interval(a_reps: list[Timed], b_reps: list[Timed], level: float = 0.9, resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float]:  # fmt: skip
    """A bootstrap interval of B's speed over A's (``1 / paired_ratio``) at ``level``: the repetitions
    (each a pair of A and B) drawn with replacement ``resamples`` times. It says whether a run can tell
    the ratio from a target, and it narrows with ``--repeats``. It covers the variation within one
    process only: what a process shares across its repetitions (measured: LeNet 0.974, interval
    0.963-0.981, then 1.001, 0.973-1.016, in the next process) needs several runs to see.

    >>> steady = [Timed(2.0, 20, None, [1.0, 1.0])] * 4
    >>> ratio_interval(steady, [Timed(2.0, 20, None, [1.0, 1.25])] * 4)  # B: 1.25 s in the second chunk
    (0.8888888888888888, 0.8888888888888888)
    >>> lo, hi = ratio_interval(steady, [Timed(0.0, 20, None, [t, t]) for t in (0.95, 1.0, 1.0, 1.05)])
    >>> lo < 1.0 < hi
    True
    >>> ratio_interval(steady[:1], steady[:1])
    Traceback (most recent call last):
    ...
    ValueError: an interval needs at least 2 repetitions, got 1
    """
    n = len(a_reps)
    if n < 2:
        raise ValueError(f"an interval needs at least 2 repetitions, got {n}")
    draw = random.Random(seed)
    values = []
    for _ in range(resamples):
        picks = [draw.randrange(n) for _ in range(n)]
        values.append(1 / paired_ratio([a_reps[i] for i in picks], [b_reps[i] for i in picks]))
    values.sort()
    tail = (1 - level) / 2  # each end rounded outwards
    return values[math.floor(tail * (resamples - 1))], values[math.ceil((1 - tail) * (resamples - 1))]


def verdict(interval: tuple[float, float], target: float = TARGET, more: str = "--repeats") -> str:
    """Whether a ratio's interval clears the issue's target; ``more`` names the option that narrows it.

    >>> verdict((0.971, 0.995)), verdict((0.95, 0.965)), verdict((0.965, 0.99))
    ('met', 'not met', 'undecided (more --repeats narrow the interval)')
    >>> verdict((0.93, 0.96), 0.95, more="--rounds")
    'undecided (more --rounds narrow the interval)'
    """
    if interval[0] >= target:
        return "met"
    return "not met" if interval[1] < target else f"undecided (more {more} narrow the interval)"


# --------------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------------


class _RunLog:
    """The run's train.log as `flint run` writes it: every record at DEBUG and above of the loop's logger.

    `flint run` puts this handler on the root logger; here each loop has its own logger (``bench.hand``,
    ``bench.flint``) so that two interleaved runs do not write each other's lines.
    """

    def __init__(self, out: Path, logger: str) -> None:
        self.logger = logging.getLogger(logger)
        self.handler = logging.FileHandler(out / "train.log", encoding="utf-8")
        self.handler.setLevel(logging.DEBUG)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def __enter__(self) -> _RunLog:
        self.logger.addHandler(self.handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()


def run_loops(names: tuple[str, ...], case: str, epochs: int, batch_size: int, data: Callable[[], Data], device: Any,
              args: argparse.Namespace, chunk: int = 0, profiler: Any = None) -> dict[str, Timed]:  # fmt: skip
    """One repetition of the named loops, each in its own temp dir; interleaved every ``chunk`` iterations if several."""
    with contextlib.ExitStack() as stack:
        gens = {}
        for name in names:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench_{name}_")))
            stack.enter_context(_RunLog(out, f"bench.{name}"))
            cfg = _config(case, out, epochs, batch_size, device, args)
            extra = {"profiler": profiler} if name == "flint" else {}
            gens[name] = LOOPS[name](case, cfg, data(), device, out, chunk, **extra)
        return drive(gens, device)


def _weights_digest(model: Any) -> str:
    import hashlib

    h = hashlib.sha1()
    for t in model.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def bare_engine_us(n: int = 20000, repeats: int = 3) -> float:
    """Microseconds per iteration of a bare Ignite Engine (no-op step, no handlers) over a list; best of ``repeats``."""
    from ignite.engine import Engine

    engine = Engine(lambda e, b: None)
    data = list(range(n))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        engine.run(data, max_epochs=1)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def _case_data(case: str, device: Any, args: argparse.Namespace) -> tuple[int, int, Callable[[], Data]]:
    """(batch size, training iterations per epoch, loader factory) of a case, with ``--iters`` and ``--data``."""
    _, batch_size, default_iters = CASES[case]
    iters = args.iters or default_iters
    return batch_size, iters, _loaders(*_fake_data(iters * batch_size, VAL_SIZE), batch_size, device, args.data, args.seed)


def _bench_case(case: str, device: Any, args: argparse.Namespace) -> dict[str, Any]:
    batch_size, iters, data = _case_data(case, device, args)
    label = f"{case} b{batch_size} {device.type}"
    a, b = "hand", "hand-again" if args.against_itself else "flint"
    warm = _loaders(*_fake_data(min(iters, 40) * batch_size, 512, seed=1), batch_size, device, args.data, args.seed)
    run_loops((a, b), case, 1, batch_size, warm, device, args)  # warm-up: kernels, allocator, imports
    reps: dict[str, list[Timed]] = {a: [], b: []}
    digests: set[str] = set()
    order: tuple[str, ...] = (a, b)
    for rep in range(args.repeats):
        if args.interleave:
            results = run_loops(order, case, args.epochs, batch_size, data, device, args, chunk=args.interleave)
        else:
            results = {}
            for loop in order:
                results.update(run_loops((loop,), case, args.epochs, batch_size, data, device, args))
        for loop in order:
            r = results[loop]
            reps[loop].append(r)
            if device.type == "cpu":
                digests.add(_weights_digest(r.model))
            print(f"# {label} rep {rep + 1}/{args.repeats} {loop:5s}: {r.iterations} it in {r.seconds:6.2f} s = "
                  f"{r.iterations / r.seconds:7.1f} it/s", file=sys.stderr, flush=True)  # fmt: skip
        order = order[::-1]  # A B, B A, A B, ...: neither loop always goes first
    n_iter = reps[a][0].iterations
    rates = {loop: [r.iterations / r.seconds for r in reps[loop]] for loop in (a, b)}
    chunks = chunk_ratios(reps[a], reps[b])
    hand = n_iter / sum(w for w, _ in chunks)  # per chunk: A's median
    flint = hand / paired_ratio(reps[a], reps[b])
    return {
        "label": label, "b": b, "hand": hand, "flint": flint, "ratio": flint / hand, "rates": rates,
        "interval": ratio_interval(reps[a], reps[b]) if args.repeats > 1 else None, "chunks": chunks,
        "median_ratio": statistics.median(rates[b]) / statistics.median(rates[a]),
        "pair_ratio": statistics.median(f / h for h, f in zip(rates[a], rates[b])),
        "overhead_us": (1 / flint - 1 / hand) * 1e6, "iters": n_iter,
        "same_weights": None if device.type != "cpu" else len(digests) == 1,
    }  # fmt: skip


def _profile_case(case: str, device: Any, args: argparse.Namespace) -> None:
    """One Flint repetition under Ignite's HandlersTimeProfiler: mean microseconds per call of each handler."""
    from ignite.handlers import HandlersTimeProfiler

    batch_size, _, data = _case_data(case, device, args)
    profiler = HandlersTimeProfiler()
    run_loops(("flint",), case, args.epochs, batch_size, data, device, args, profiler=profiler)
    print(f"\nHandlersTimeProfiler, {case} b{batch_size} {device.type} (seconds):")
    HandlersTimeProfiler.print_results(profiler.get_results())  # type: ignore[arg-type]  # Ignite's own annotations disagree


class Calls(NamedTuple):
    """A loop's calls per training iteration: Python, C, and Python calls by function (``file:line function``)."""

    python: float
    c: float
    functions: dict[str, float]


def _where(code: Any) -> str:
    """``package/module.py:line name`` of a code object, its path from the package (or the repo) down."""
    path = Path(code.co_filename)
    parts = path.parts
    cut = max((i for i, part in enumerate(parts) if part in ("site-packages", REPO.name)), default=len(parts) - 3)
    return f"{'/'.join(parts[cut + 1:])}:{code.co_firstlineno} {code.co_name}"


def calls_per_iteration(case: str, device: Any, args: argparse.Namespace, chunk: int = 50) -> dict[str, Calls]:
    """Python and C function calls per training iteration of each loop, counted with ``sys.setprofile``.

    Deterministic, unlike time on a shared machine (what a call costs in the real loop:
    docs/performance.md). Counted over one chunk of ``chunk`` iterations after two (one log point,
    no epoch end; the harness's pause, resume and chunk check included); loop name -> :class:`Calls`.
    """
    import collections

    batch_size, _, data = _case_data(case, device, args)
    result = {}
    for name in ("hand", "flint"):
        with tempfile.TemporaryDirectory(prefix=f"bench_calls_{name}_") as tmp:
            out = Path(tmp)
            gen = LOOPS[name](case, _config(case, out, 1, batch_size, device, args), data(), device, out, chunk)
            for _ in range(3):  # "ready" and two chunks
                next(gen)
            counts: collections.Counter[str] = collections.Counter()
            functions: collections.Counter[Any] = collections.Counter()

            def count(frame: Any, event: str, arg: Any) -> None:
                if event == "call":
                    counts[event] += 1
                    functions[frame.f_code] += 1
                elif event == "c_call":
                    counts[event] += 1

            sys.setprofile(count)
            try:
                next(gen)
            finally:
                sys.setprofile(None)
            for _ in gen:  # to the end of the run, so that it closes its files
                pass
            result[name] = Calls(counts["call"] / chunk, counts["c_call"] / chunk, {_where(c): n / chunk for c, n in functions.items()})
    return result


def call_differences(hand: Calls, flint: Calls, top: int = 20) -> list[tuple[float, str]]:
    """The functions whose Python calls per iteration differ most between the loops: (flint - hand, function).

    >>> call_differences(Calls(2, 0, {"a": 1.0, "b": 1.0}), Calls(3, 0, {"a": 1.0, "c": 2.0}))
    [(2.0, 'c'), (-1.0, 'b')]
    """
    names = set(hand.functions) | set(flint.functions)
    diffs = [(flint.functions.get(n, 0.0) - hand.functions.get(n, 0.0), n) for n in names]
    return sorted((d for d in diffs if d[0]), key=lambda d: (-abs(d[0]), d[1]))[:top]


def _without_runs(argv: list[str]) -> list[str]:
    """``argv`` less its ``--runs`` option.

    >>> _without_runs(["--cases", "mlp", "--runs", "3", "--repeats=5", "--runs=2"])
    ['--cases', 'mlp', '--repeats=5']
    """
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--runs":
            skip = True
        elif not arg.startswith("--runs="):
            out.append(arg)
    return out


def over_runs(argv: list[str], n: int) -> int:
    """``--runs N``: the benchmark run ``n`` times, each in a fresh process; each case judged on the median ratio.

    Each process prints its own table (its interval covers its own repetitions only); the last lines
    give, per case, the ratios of all ``n`` processes, their median and a verdict: met when the
    median is at or above the target.
    """
    import subprocess

    ratios: dict[str, list[float]] = {}
    for i in range(n):
        print(f"# process {i + 1}/{n}", flush=True)
        proc = subprocess.run([sys.executable, __file__, *_without_runs(argv)], stdout=subprocess.PIPE, text=True, check=True)
        print(proc.stdout, end="", flush=True)
        for line in proc.stdout.splitlines():
            fields = line.split(", ")
            if len(fields) == 4 and fields[0].split(" ")[0] in CASES:
                ratios.setdefault(fields[0], []).append(float(fields[3]))
    print(f"case, median ratio over {n} processes, their ratios, verdict (target {TARGET}: the median at or above it)")
    for case, values in ratios.items():
        median = statistics.median(values)
        print(f"{case}, {median:.3f}, {' '.join(f'{v:.3f}' for v in values)}, {'met' if median >= TARGET else 'not met'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A/B benchmark: a hand-written training loop against Flint's trainer and handlers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per case, each of A and B; the first loop alternates")
    parser.add_argument("--epochs", type=int, default=0,
                        help="epochs per repetition, each validated and checkpointed (0: 2; with --process 15, with --imports 1)")  # fmt: skip
    parser.add_argument("--iters", type=int, default=0,
                        help="training iterations per epoch (0: mlp 500, lenet 170); the dataset is iters*batch samples")  # fmt: skip
    parser.add_argument("--cases", default="mlp,lenet", help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all", help="all: cpu, and cuda when available")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for both loops (0: torch's default, one per core); default 1, with "
                        "--process 0 (as `flint run`), N>0 sets OMP_NUM_THREADS=N in both processes")  # fmt: skip
    parser.add_argument("--data", choices=("device", "dataloader"), default="device",
                        help="device: tensors batched by flint.recipes.builtin.data.DeviceTensorLoader; dataloader: DataLoader over a TensorDataset")  # fmt: skip
    parser.add_argument("--log-interval", type=int, default=50, help="iterations between batch records")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--interleave", type=int, default=50, metavar="N",
                        help="within a repetition, switch between A and B every N iterations, so both see the same "
                        "machine load; 0: run A's whole repetition, then B's")  # fmt: skip
    parser.add_argument("--calls", action="store_true",
                        help="only count Python and C calls per iteration of each loop (deterministic; no timing)")  # fmt: skip
    parser.add_argument("--chunks", action="store_true",
                        help="after the table (with --interleave), each chunk's median time in A and B's excess: where the difference lies")  # fmt: skip
    parser.add_argument("--profile", action="store_true", help="after the table, one Flint run per case under HandlersTimeProfiler")
    parser.add_argument("--against-itself", action="store_true",
                        help="B is a second copy of the hand loop: the ratio shows what the method resolves on this machine")  # fmt: skip
    parser.add_argument("--runs", type=int, default=1, metavar="N",
                        help="run the timed benchmark N times, each in a fresh process, and judge each case on the median "
                        "of the N ratios (what a process shares across its repetitions moves its ratio more than its interval says)")  # fmt: skip
    parser.add_argument("--process", action="store_true",
                        help="instead: whole processes, `flint run lenet` against tests/benchmarks/hand_lenet.py, alternating "
                        "(bench_process.py); takes --rounds, --epochs and --threads")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=6, help="--process: timed rounds, one process of each per round")
    parser.add_argument("--imports", action="store_true",
                        help="instead: one run of each whole process under `python -X importtime`: modules imported by package")  # fmt: skip
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1 or args.runs < 1 or args.epochs < 0 or args.iters < 0 or args.interleave < 0 or (args.threads or 0) < 0:
        parser.error("--repeats, --rounds and --runs must be positive, --epochs, --iters, --interleave and --threads non-negative")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}; choose from {', '.join(CASES)}")
    if args.runs > 1 and not (args.calls or args.process or args.imports):
        return over_runs(sys.argv[1:] if argv is None else list(argv), args.runs)

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    import ignite
    import torch

    if args.process or args.imports:
        import bench_process  # beside this script

        threads = f"{args.threads} (OMP_NUM_THREADS)" if args.threads else f"{torch.get_num_threads()} (the default)"
        print(f"# Flint whole-process benchmark, {time.strftime('%Y-%m-%d %H:%M')}")
        print(f"# machine: {_cpu_model()}, {os.cpu_count()} cores, torch threads {threads}, "
              + (f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "no GPU"))  # fmt: skip
        print(f"# torch {torch.__version__}, ignite {ignite.__version__}, python {platform.python_version()}", flush=True)
        return bench_process.imports(args) if args.imports else bench_process.run(args)
    args.epochs = args.epochs or 2
    args.threads = 1 if args.threads is None else args.threads
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger().setLevel(logging.DEBUG)  # as `flint run`: everything reaches train.log ...
    logging.getLogger("ignite").setLevel(logging.WARNING)  # ... but Ignite's own chatter
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is available here")
        devices.append(torch.device("cuda"))

    print(f"# Flint loop benchmark, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# machine: {_cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
          + (f", GPU {torch.cuda.get_device_name()}" if any(d.type == "cuda" for d in devices) else ", no GPU"))  # fmt: skip
    print(f"# torch {torch.__version__}, ignite {ignite.__version__}, python {platform.python_version()}")
    alternation = f"A and B interleaved every {args.interleave} iterations" if args.interleave else "A then B"
    print(f"# each repetition: {args.epochs} epochs, each validated ({VAL_SIZE} samples) and checkpointed, log every "
          f"{args.log_interval} iterations, data {args.data}, {alternation}; {args.repeats} repetitions, medians")  # fmt: skip
    if args.calls:
        print("case, hand Python calls/it, flint Python calls/it, hand C calls/it, flint C calls/it")
        for device in devices:
            for case in cases:
                c = calls_per_iteration(case, device, args)
                print(f"{case} b{CASES[case][1]} {device.type}, {c['hand'].python:.1f}, {c['flint'].python:.1f}, "
                      f"{c['hand'].c:.1f}, {c['flint'].c:.1f}", flush=True)  # fmt: skip
                print(f"# {case} {device.type}: Python calls per iteration, flint - hand, by function (the largest differences)")
                for diff, where in call_differences(c["hand"], c["flint"]):
                    print(f"#   {diff:+6.2f}  {where}")
        return 0
    print(f"# bare Ignite Engine (no-op step, no handlers): {bare_engine_us():.1f} us/iteration", flush=True)
    results = [_bench_case(case, device, args) for device in devices for case in cases]
    b = "hand-again" if args.against_itself else "flint"
    print(f"case, hand it/s, {b} it/s, ratio {b}/hand")
    for r in results:
        print(f"{r['label']}, {r['hand']:.1f}, {r['flint']:.1f}, {r['ratio']:.3f}")
    for r in results:
        same = {None: "", True: "; same final weights in A and B", False: "; FINAL WEIGHTS DIFFER between A and B"}[r["same_weights"]]
        print(f"# {r['label']}: {r['iters']} it/rep; whole-repetition it/s: hand {', '.join(f'{v:.1f}' for v in r['rates']['hand'])}; "
              f"{b} {', '.join(f'{v:.1f}' for v in r['rates'][b])}; ratio of their medians {r['median_ratio']:.3f}, "
              f"median of pair ratios {r['pair_ratio']:.3f}; {b} overhead {r['overhead_us']:+.0f} us/it{same}")  # fmt: skip
        if r["interval"] is None:
            print(f"# {r['label']}: ratio {r['ratio']:.3f}; one repetition: no interval, no verdict")
        else:
            lo, hi = r["interval"]
            print(f"# {r['label']}: ratio {r['ratio']:.3f}, 90% bootstrap interval over this process's repetitions {lo:.3f}-{hi:.3f}; "
                  f"target {TARGET}: {verdict(r['interval'])}")  # fmt: skip
    if args.chunks and args.interleave:
        for r in results:
            total = sum(w for w, _ in r["chunks"])
            print(f"# {r['label']}, per chunk of {args.interleave} iterations (the chunk after an epoch's last iteration "
                  f"holds its validation and checkpoints; the last chunk, the last epoch's and the run's end): "
                  f"A ms, {b}/A, excess ms, share of A's run")  # fmt: skip
            for i, (w, q) in enumerate(r["chunks"], 1):
                print(f"#   chunk {i:3d}: {w * 1e3:8.1f}, {q:.3f}, {(q - 1) * w * 1e3:+7.1f}, {(q - 1) * w / total:+.2%}")
    if args.profile:
        for device in devices:
            for case in cases:
                _profile_case(case, device, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
