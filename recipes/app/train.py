"""The training job every recipe runs, top to bottom: BMXNet's loop on Flint's engine and handlers.

:func:`train` sets the run's directory up; :func:`build_job` tells the rest as a story: data,
model, engines, reporting, safety; :func:`run_job` runs it. Handlers attach in any order: Flint's engine fires their events in
a fixed sequence (``flint.engine.FlintEvents``), and every stateful one reaches the checkpoints by itself.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss, MeanAbsoluteError, Metric
from torch import nn
from torch.utils.data import DataLoader

from flint.engine import EpochSampler, RNGState, create_evaluator, create_trainer, progress, register_state, seed_everything
from flint.engine.metrics import TopOneAccuracy
from flint.handlers import (
    ETA,
    BatchLogger,
    CheckpointError,
    Checkpointing,
    DataOrder,
    EarlyStopping,
    EpochMetrics,
    EpochTimer,
    InterruptAt,
    JsonlSink,
    LogFile,
    LoggingSink,
    LossGuard,
    LRSchedule,
    LRTracker,
    NetSummaries,
    NonFiniteLoss,
    Preemption,
    RecordStream,
    TensorBoardSink,
    TensorBoardWriter,
    Validation,
    current_lrs,
    lr_multiplier,
    write_text_atomic,
)
from flint.recipes.app.config import Config, StopSignal, UsageError, check_global_batch, parse_monitor
from flint.recipes.app.console import RECORDS, ConsoleSink, log_header
from flint.recipes.builtin.data import DEVICE_AUGMENT, DeviceTensorLoader, FirstBatches
from flint.recipes.app.optim import make_loss, make_optimizer, param_groups
from flint.recipes.app.perf import channels_last_batch, peak_flops, profile_table, train_flops_per_sample
from flint.recipes.app.registry import Recipe
from flint.recipes.app.resume import check_before_writing, claim_run_dir, last_summary, load_resume_point
from flint.recipes.app.rundir import RunConfig

__all__ = [
    "train", "build_job", "run_job", "Job", "attach_all", "build_optimizer", "resolve_device", "task_metrics",
    "RunOutcome", "StopSignal",
]  # fmt: skip

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; choose from auto, cpu")
    return torch.device(name)


def check_with_torch(cfg: Config, recipe: Recipe) -> None:
    """The checks :func:`flint.recipes.app.config.resolve_config` leaves for torch; ``cfg`` is left as given.

    ``cfg.device`` stays as the user wrote it ("auto" is resolved on each run), so a run saved on a
    GPU machine resumes on a CPU one without a config change.

    Raises ``UsageError``: no CUDA device, fewer than ``--nproc-per-node``, a ``--lr-mult`` name no
    parameter has (the model is built on the meta device: no memory, no weights)."""
    if resolve_device(cfg.device).type == "cuda" and cfg.nproc_per_node > torch.cuda.device_count():
        raise UsageError(f"--nproc-per-node {cfg.nproc_per_node}: only {torch.cuda.device_count()} CUDA devices here")
    if cfg.lr_mult:
        with torch.device("meta"):
            param_groups(recipe.build_model(), cfg.lr, cfg.lr_mult)


OptimizerFactory = Callable[[list[dict]], torch.optim.Optimizer]


def build_optimizer(cfg: Config, model: nn.Module, factory: type | OptimizerFactory | None = None) -> torch.optim.Optimizer:
    """The optimizer over ``model``'s param groups (``--lr-mult``, ``--wd``): the named one, or ``factory``'s.

    ``factory`` is an optimizer class, called as ``factory(groups, lr=cfg.lr)``, or any callable
    taking the param groups (each carries its own ``lr`` and ``weight_decay``)."""
    groups = param_groups(model, cfg.lr, cfg.lr_mult, cfg.wd, cfg.wd_all)
    if factory is None:
        return make_optimizer(cfg.optimizer, groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if isinstance(factory, type):
        return factory(groups, lr=cfg.lr)
    return factory(groups)


def task_metrics(task: str, loss_fn: Callable, device: torch.device, monitor: str = "") -> tuple[dict, dict, str, str]:
    """(training metrics, validation metrics, monitored metric, "max"|"min") for a recipe's task.

    Classification reports accuracy, regression the mean absolute error; validation also the loss
    (training's comes from the trainer's own running sum, ``flint.engine.TrainProgress``). All
    accumulate on ``device``. ``monitor`` (``NAME[:min|max]``, see ``flint.recipes.app.config.parse_monitor``)
    picks the best checkpoint: by default the best accuracy, or the lowest loss for regression.
    """
    classification = task == "classification"
    name = "accuracy" if classification else "mae"
    # Updated every training iteration: Flint's lean accuracy keeps the loop at its target, Ignite's not (docs/performance.md).
    train: dict[str, Metric] = {name: TopOneAccuracy(device=device) if classification else MeanAbsoluteError(device=device)}
    val = {"loss": Loss(loss_fn, device=device), name: Accuracy(device=device) if classification else MeanAbsoluteError(device=device)}
    return (train, val, *parse_monitor(monitor, task))


def epoch_mean_loss(trainer: Any) -> float:
    """The training loss of the epoch so far: the mean over its samples (all ranks)."""
    total, samples = progress(trainer, "the training record").epoch_loss()
    return total / samples if samples else math.nan


def training_records(metrics: dict, stream: RecordStream, timer: EpochTimer, optimizer: torch.optim.Optimizer) -> EpochMetrics:
    """The per-epoch ``"training"`` record: the metrics, the trainer's mean loss, the epoch time, the LRs."""
    return EpochMetrics(
        metrics,
        stream,
        "training",
        extra=lambda t: {"loss": epoch_mean_loss(t), "epoch_time": timer.last, "lr": current_lrs(optimizer)},
    )


class RunOutcome:
    """How a run ended, and its closing: the summary record, checkpoints on disk, record sinks closed.

    Use it as a context manager around the run and set ``status`` when it ends: ``"completed"`` or
    ``"interrupted"``. An exception leaving the block makes it ``"failed"`` (``"aborted"`` for
    ``KeyboardInterrupt``, a second stop signal; None for :class:`StopSignal`). On leaving, ``summary(status)`` is emitted (unless
    ``status`` is None: nothing was run), background checkpoint writes are waited for and the sinks
    are closed, each step even if an earlier one failed; ``settle()`` first (stop signals are then ignored). A failure there (a full disk) is raised if
    the run itself succeeded; otherwise the run's own error is the one that leaves, and the later
    ones go to the log.
    """

    def __init__(self, stream: RecordStream, checkpoints: Checkpointing, summary: Callable[[str], dict[str, Any]],
                 settle: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.stream, self.checkpoints, self.summary, self.settle = stream, checkpoints, summary, settle
        self.status: str | None = "failed"

    def __enter__(self) -> RunOutcome:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        self.settle()  # however it ended: closing is never cut short by a signal
        if kind is not None:  # a stop signal before training: nothing ran, no summary
            self.status = None if issubclass(kind, StopSignal) else "aborted" if issubclass(kind, KeyboardInterrupt) else "failed"
        closing = [self.checkpoints.wait, self.stream.close]
        if self.status is not None:
            closing.insert(0, lambda: self.stream.emit(self.summary(self.status)))  # type: ignore[arg-type]
        failures = []
        for step in closing:
            try:
                step()
            except Exception as e:
                failures.append(e)
        if failures and kind is None:
            raise failures[0]
        for failure in failures:
            logger.debug("While closing a run that had already failed: %s", failure, exc_info=failure)


def _worker_signals(worker_id: int) -> None:
    """DataLoader workers share the process group: a terminal's Ctrl-C or a scheduler's SIGTERM to the
    group must stop only the main process, which saves and then shuts the workers down itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # not POSIX: the default, a group SIGTERM kills the workers
        return
    # SIGTERM cannot simply be ignored: multiprocessing stops workers with it at exit (and would then
    # wait forever). Take it in a thread that knows the sender: from the parent, exit; else ignore.
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started from here inherit it

    def take_sigterm() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == parent:
                os._exit(0)

    threading.Thread(target=take_sigterm, name="flint-sigterm", daemon=True).start()


def _any_rank() -> Callable[[bool], bool] | None:
    """For Preemption: whether any rank asked to stop, over a CPU (gloo) group: no device sync."""
    if idist.get_world_size() == 1:
        return None
    import torch.distributed as dist

    group: Any = dist.new_group(backend="gloo") if idist.backend() != "gloo" else None

    def agree(mine: bool) -> bool:
        flag = torch.tensor([int(mine)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
        return bool(flag.item())

    return agree


def _throughput(trainer: Any, epoch_time: float | None, flops_per_sample: float | None, peak: float | None) -> dict:
    """Training samples/sec over an average epoch (the launch's first excluded), TFLOP/s and, if the peak is known, MFU."""
    state = trainer.state
    if not epoch_time or not state.iteration or not state.epoch_length:
        return {"samples_per_sec": None}
    rate = progress(trainer, "the summary").samples / state.iteration * state.epoch_length / epoch_time
    out: dict[str, Any] = {"samples_per_sec": rate}
    if flops_per_sample is not None:
        out["model_tflops"] = flops_per_sample * rate / 1e12
        if peak is not None:
            out["mfu"] = flops_per_sample * rate / (peak * idist.get_world_size())  # rate is global
    return out


def train(
    cfg: Config,
    recipe: Recipe,
    handlers: Sequence[Any] = (),
    loss_fn: Callable | None = None,
    optimizer: type | OptimizerFactory | None = None,
    lock: bool = True,
    on_settled: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run one training job; returns its ``"summary"`` record, whose ``status`` is ``"completed"`` or
    ``"interrupted"`` (stopped with a checkpoint saved: relaunch with ``resume``).

    ``handlers`` are attached beside the recipe's own (:func:`attach_all`); ``loss_fn`` and
    ``optimizer`` (a class or factory, see :func:`build_optimizer`) replace the named ones. With
    ``lock``, rank 0 holds the output dir's lock (:class:`flint.recipes.app.rundir.RunDirLock`) for the run;
    ``on_settled()`` is called once the run's outcome is decided (see :func:`run_job`).
    Raises ``UsageError`` before anything is written for a bad resume, ``NonFiniteLoss`` when the
    loss becomes NaN or infinite (status ``"failed"``), ``KeyboardInterrupt`` on a second stop signal
    (status ``"aborted"``) and :class:`StopSignal` for one before training started."""
    # --- where the run lives: every check first, then rank 0 writes the files -------------------
    out = Path(cfg.output_dir)
    check_global_batch(cfg.batch_size, idist.get_world_size())  # also for callers that did not come through the CLI
    rank = idist.get_rank()
    with contextlib.ExitStack() as owned:
        if lock and rank == 0:  # refusals come first when there is no directory yet
            resume, done = owned.enter_context(claim_run_dir(cfg))
        else:
            resume, done = check_before_writing(cfg)
        if done is not None:
            logger.info("The run in %s already %s; nothing to do", out, done)
            return last_summary(out, done)
        idist.barrier()  # no rank may see rank 0's new files as "a run already there"
        if rank > 0:
            return run_job(build_job(cfg, recipe, out, handlers, loss_fn, optimizer), resume, on_settled)
        owned.enter_context(_logging_to(out))
        try:
            write_text_atomic(out / "config.json", json.dumps(asdict(cfg), indent=2) + "\n", "config file")
            RECORDS.info("Run config: %s", json.dumps(asdict(cfg)))  # train.log only; the console has a header
            if idist.get_world_size() > 1:
                RECORDS.info("Data-parallel on %d workers (%s): %d samples per worker batch", idist.get_world_size(),
                            idist.backend(), cfg.batch_size // idist.get_world_size())  # fmt: skip
            return run_job(build_job(cfg, recipe, out, handlers, loss_fn, optimizer), resume, on_settled)
        except Exception:
            logger.debug("Run failed", exc_info=True)
            raise


FLINT_LOGGERS = ("flint",)


@contextlib.contextmanager
def _logging_to(out: Path) -> Iterator[None]:
    """``out/train.log`` for the block: every record that reaches the root logger, appended to.

    Flint's own loggers pass INFO on for the block even where the logging configuration is stricter
    (Python's default is WARNING, as under ``fit()``): the records and epoch lines reach ``train.log``;
    the user's own handlers keep their levels."""
    try:
        log_file = LogFile(out / "train.log")
    except OSError as e:
        raise OSError(f"cannot write to output dir {out}: {e.strerror or e}") from None
    log_file.setLevel(logging.DEBUG)
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in FLINT_LOGGERS]
    levels = [log.level for log in loggers]
    for log in loggers:
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)
    logging.getLogger().addHandler(log_file)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
        for log, level in zip(loggers, levels):
            log.setLevel(level)


@dataclass
class Job:
    """A training run wired and ready: its engines and what the run and its summary read."""

    cfg: Config
    out: Path
    device: torch.device
    model: nn.Module
    trainer: Engine
    evaluator: Engine
    train_loader: Any
    stream: RecordStream
    checkpoints: Checkpointing
    timer: EpochTimer
    preemption: Preemption
    interrupt: InterruptAt | None
    stopper: EarlyStopping | None
    monitor: str
    flops_per_sample: float | None
    profiler: Any = None

    def summary(self, status: str) -> dict[str, Any]:
        """The ``"summary"`` record of a run that ended with ``status``."""
        state: Any = self.trainer.state
        return {
            "phase": "summary",
            "status": status,
            "epochs": state.epoch,
            "samples": progress(self.trainer, "the summary").samples,
            "best_epoch": self.checkpoints.best.epoch,
            f"best_{self.monitor}": self.checkpoints.best.value,
            "avg_epoch_time": self.timer.average,
            "stopped_early": self.stopper is not None and self.stopper.stopped,
            **_throughput(self.trainer, self.timer.average, self.flops_per_sample, peak_flops(self.device, self.cfg.amp)),
        }


def make_loaders(cfg: Config, train_set: Any, val_set: Any, device: torch.device, world: int = 1, rank: int = 0) -> tuple[Any, Any, Any]:
    """``(train loader, validation loader or None, train sampler)`` of ``cfg`` on this rank.

    Batches come from an :class:`flint.engine.EpochSampler` (each rank its shard), or with
    ``--data-on-device`` from tensors on the device; validation batches: :func:`make_val_loader`."""
    batch_size = cfg.batch_size // world  # --batch-size is global
    train_loader: Any
    if cfg.data_on_device:
        augment = DEVICE_AUGMENT.get(cfg.dataset)
        train_loader = DeviceTensorLoader(train_set, batch_size, shuffle=True, device=device, augment=augment, seed=cfg.seed,
                                          num_replicas=world, rank=rank)  # fmt: skip
        sampler = train_loader.sampler
    else:
        sampler = EpochSampler(len(train_set), seed=cfg.seed, num_replicas=world, rank=rank)  # type: ignore[arg-type]
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, generator=sampler.generator, **_loading(cfg, device))
    if cfg.test_run:
        train_loader = FirstBatches(train_loader, 1)
    return train_loader, make_val_loader(cfg, val_set, device, world, rank), sampler


def make_val_loader(cfg: Config, val_set: Any, device: torch.device, world: int = 1, rank: int = 0) -> Any:
    """The validation loader of ``cfg`` on this rank, or None without a set: batches of ``max(batch, 256)``, in order, unpadded."""
    if val_set is None:
        return None
    val_batch = max(cfg.batch_size // world, 256)
    loader: Any
    if cfg.data_on_device:
        loader = DeviceTensorLoader(val_set, val_batch, shuffle=False, device=device, num_replicas=world, rank=rank)
    else:
        val_sampler = EpochSampler(len(val_set), shuffle=False, pad=False, num_replicas=world, rank=rank)  # type: ignore[arg-type]
        loader = DataLoader(val_set, batch_size=val_batch, sampler=val_sampler, **_loading(cfg, device))
    return FirstBatches(loader, 1) if cfg.test_run else loader


def _loading(cfg: Config, device: torch.device) -> dict[str, Any]:
    """The DataLoader options both loaders share: worker processes, pinned memory on CUDA."""
    return {
        "num_workers": cfg.num_workers, "pin_memory": device.type == "cuda", "persistent_workers": cfg.num_workers > 0,
        "worker_init_fn": _worker_signals if cfg.num_workers else None,
    }  # fmt: skip


def build_job(
    cfg: Config,
    recipe: Recipe,
    out: Path,
    extra_handlers: Sequence[Any] = (),
    loss_fn: Callable | None = None,
    optimizer_factory: type | OptimizerFactory | None = None,
) -> Job:
    """Data, model, engines, reporting and safety of ``cfg``'s run, wired on this rank; nothing run yet.

    ``extra_handlers`` are attached beside the recipe's own (see :func:`attach_all`); a dataset
    whose validation part is None trains without validation (no best checkpoint, no early stopping)."""
    seed_everything(cfg.seed)  # the same on every rank: same initial weights, dropout masks
    device = resolve_device(cfg.device)
    rank, world = idist.get_rank(), idist.get_world_size()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", idist.get_local_rank())
        torch.cuda.set_device(device)
    batch_size, pin = cfg.batch_size // world, device.type == "cuda"  # --batch-size is global

    # --- data: the order is a function of (seed, epoch), so a run resumed mid-epoch sees the same batches
    train_set, val_set = recipe.datasets[cfg.dataset](cfg)
    train_loader, val_loader, sampler = make_loaders(cfg, train_set, val_set, device, world, rank)

    # --- model, optimizer, loss --------------------------------------------------------------------
    model = recipe.build_model().to(device)
    if rank == 0:
        val_size = len(val_set) if val_set is not None else None
        log_header(recipe.name, cfg.dataset, len(train_set), val_size, model, device, out, cfg.epochs, world, cfg.test_run)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    flops_per_sample = train_flops_per_sample(model, _first_input(train_set, device))
    optimizer = build_optimizer(cfg, model, optimizer_factory)
    loss_fn = loss_fn or make_loss(recipe.task, cfg.loss, cfg.label_smoothing)
    # Training runs through DDP (gradients averaged over ranks) when there are several workers;
    # evaluation runs the plain model on each rank's shard, and the metrics are all-reduced.
    net: Any = idist.auto_model(model) if world > 1 else model
    optimizer = idist.auto_optim(optimizer) if world > 1 else optimizer
    eval_net: Any = model
    if cfg.compile:  # the engines run the compiled module; checkpoints keep the plain one's names
        logger.info("Compiling the model: the first training and validation iterations include the compile")
        net = torch.compile(net)
        eval_net = net if world == 1 else torch.compile(model)

    # --- engines: Flint's handlers attach in any order (flint.engine.FlintEvents orders their work) -------
    prepare = channels_last_batch if cfg.channels_last else None
    trainer = create_trainer(
        net, optimizer, loss_fn, device=device, accumulation_steps=cfg.update_cycle, amp=cfg.amp,
        clip_grad_norm=cfg.clip_grad_norm, prepare_batch=prepare, non_blocking=pin,
    )  # fmt: skip
    evaluator = create_evaluator(eval_net, device=device, amp=cfg.amp, non_blocking=pin, prepare_batch=prepare)
    register_state(trainer, "config", RunConfig(asdict(cfg)))  # a checkpoint refuses to resume under other options
    handlers: list[Any] = [DataOrder(sampler, batch_size)]  # the epoch's data order
    if val_loader is not None:
        handlers.append(Validation(evaluator, val_loader, every=cfg.val_every))
    if cfg.lr_mode != "constant" or cfg.warmup_epochs:  # a constant LR needs no per-iteration work
        schedule = functools.partial(
            lr_multiplier, mode=cfg.lr_mode, steps_per_epoch=len(train_loader), epochs=cfg.epochs, milestones=cfg.lr_steps,
            factor=cfg.lr_factor, warmup_epochs=cfg.warmup_epochs, warmup_start=cfg.warmup_lr / cfg.lr,
        )  # fmt: skip
        handlers.append(LRSchedule(optimizer, schedule))

    # --- reporting: one record stream to log lines, metrics.jsonl and TensorBoard (rank 0; the others, no sinks)
    tb = TensorBoardWriter(out) if rank == 0 else None  # writes in this thread: a full disk raises, never hangs
    stream = RecordStream([LoggingSink(RECORDS), JsonlSink(out / "metrics.jsonl"), TensorBoardSink(tb)] if tb else [])
    train_metrics, val_metrics, monitor, mode = task_metrics(recipe.task, loss_fn, device, cfg.monitor)
    timer, eta = EpochTimer(), ETA(cfg.progress_file if rank == 0 else None)
    handlers += [
        timer,
        eta,
        training_records(train_metrics, stream, timer, optimizer),
        BatchLogger(stream, every=cfg.log_interval, optimizer=optimizer, metrics=train_metrics),
        LRTracker(optimizer, stream, every=cfg.log_interval),
    ]
    if val_loader is not None:
        handlers.append(OnEvaluator(EpochMetrics(val_metrics, stream, "validation", trainer=trainer)))
    if tb is not None:
        handlers.append(NetSummaries(model, tb))
    if cfg.progress and sys.stderr.isatty() and rank == 0:
        from flint.recipes.app.progress import attach_progress_bar

        every = max(1, len(train_loader) // 50)  # Ignite's bar redraws at every event it is attached to
        attach_progress_bar(trainer, eta, cfg.log_interval, every)

    # --- safety: NaN guard, checkpoints (every stateful handler is in them by itself), stops -----
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer, "rng": RNGState(), "scaler": trainer.scaler}  # type: ignore[attr-defined]
    validating = val_loader is not None
    checkpoints = Checkpointing(out / "checkpoints", to_save, n_latest=2, metric=monitor if validating else None, mode=mode,
                                every=cfg.save_frequency)  # fmt: skip
    stopper = EarlyStopping(cfg.early_stopping, monitor, trainer, mode=mode) if cfg.early_stopping and validating else None  # type: ignore[arg-type]
    interrupt = InterruptAt(cfg.interrupt_at) if cfg.interrupt_at else None
    preemption = Preemption(agree=_any_rank())  # SIGTERM/SIGINT: stop at the next update, saved, exit 3
    handlers += [LossGuard(every=cfg.log_interval), checkpoints, preemption, *[h for h in (stopper, interrupt) if h]]
    if rank == 0:  # the console: one line per epoch, the closing lines with the best checkpoint's path
        best = checkpoints.best_checkpoint
        hint = "call fit() again with resume=True" if cfg.recipe.startswith("fit:") else f"run: flint resume {out}"
        stream.add(ConsoleSink(cfg.epochs, lambda: best.last_checkpoint if best is not None else None, resume_hint=hint))
    attach_all([*handlers, *extra_handlers], trainer, evaluator)
    profiler = None
    if cfg.profile:
        from ignite.handlers import HandlersTimeProfiler

        profiler = HandlersTimeProfiler()
        profiler.attach(trainer)

        def reraise(engine: Any, error: BaseException) -> None:  # the profiler leaves an EXCEPTION_RAISED
            raise error  # entry, and Ignite would then swallow every error (a NaN stop would exit 0)

        trainer.add_event_handler(Events.EXCEPTION_RAISED, reraise)

    return Job(cfg, out, device, model, trainer, evaluator, train_loader, stream, checkpoints, timer, preemption, interrupt,
               stopper, monitor, flops_per_sample, profiler)  # fmt: skip


def run_job(job: Job, resume: Path | str | None, on_settled: Callable[[], None] | None = None) -> dict[str, Any]:
    """Resume ``job`` from ``resume`` (see :func:`flint.recipes.app.resume.resume_point`), train it and close it; the summary record.

    SIGTERM and SIGINT go to ``job.preemption`` from the checkpoint's load to the last file closed.
    One that came before training started ends the launch there: ``"interrupted"`` if a checkpoint
    was loaded (the relaunch resumes from it), else :class:`StopSignal`. Once the run's outcome is
    settled (trained, stopped and saved), further signals are ignored, and ``on_settled()`` is called
    (the CLI then ignores them too, once this returns)."""
    trainer, cfg = job.trainer, job.cfg
    summary: dict[str, Any] = {}

    def close(status: str) -> dict[str, Any]:
        summary.update(job.summary(status))
        return summary

    def settle() -> None:
        job.preemption.settle()
        if on_settled is not None:
            on_settled()

    with job.preemption.signal_handlers(), RunOutcome(job.stream, job.checkpoints, close, settle) as outcome:
        loaded = load_resume_point(job.checkpoints, resume, job.device)
        _same_iteration_on_every_rank(trainer)
        if loaded is not None and (trainer.state.epoch >= cfg.epochs or (job.stopper is not None and job.stopper.stopped)):
            outcome.status = None  # checked before anything was written (flint.recipes.app.resume.nothing_left); Ignite would start over
            return last_summary(job.out, f"ended after epoch {trainer.state.epoch}")
        requested = job.preemption.any_requested()  # a signal during the setup: every rank decides alike
        if requested:  # nothing trained, nothing new to save
            settle()
            if loaded is None:
                raise StopSignal(job.preemption.requested or signal.SIGTERM)
            outcome.status = "interrupted"
            return summary
        if loaded is not None:
            position = {"epoch": trainer.state.epoch, "iteration": trainer.state.iteration}
            job.stream.emit({"phase": "resume", **position, "samples": progress(trainer, "run_job").samples, "checkpoint": str(loaded)})
        try:
            trainer.run(job.train_loader, max_epochs=cfg.epochs)
        except NonFiniteLoss as e:
            job.checkpoints.wait()  # an earlier save may still be finishing in the background
            last = Checkpointing.find_latest(job.checkpoints.dirname)
            raise NonFiniteLoss(f"{e}; stopped without saving; the last good checkpoint is {last or 'none'}") from None
        settle()  # the outcome is decided: a signal now would only lose what is being closed
        stopped = job.preemption.triggered or (job.interrupt is not None and job.interrupt.triggered)
        outcome.status = "interrupted" if stopped else "completed"
        if job.profiler is not None and idist.get_rank() == 0:
            logger.info("Handler costs (--profile):\n%s", profile_table(job.profiler, trainer))
    return summary


@dataclass(frozen=True)
class OnEvaluator:
    """An evaluator's handler in a list for :func:`attach_all`: attaches ``handler`` to the evaluator."""

    handler: Any

    def attach(self, trainer: Engine, evaluator: Engine) -> Any:
        return self.handler.attach(evaluator)


def attach_all(handlers: Sequence[Any], trainer: Engine, evaluator: Engine) -> None:
    """``handler.attach(trainer, evaluator)`` if its ``attach`` takes two engines, else ``handler.attach(trainer)``.

    ``attach`` takes two when it has a parameter named ``evaluator`` or two required positional ones.
    On Flint's engines the order does not decide what the handlers do (``flint.engine.FlintEvents``).
    """
    for handler in handlers:
        params = inspect.signature(handler.attach).parameters
        required = [p for p in params.values() if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if "evaluator" in params or len(required) >= 2:
            handler.attach(trainer, evaluator)
        else:
            handler.attach(trainer)


def _first_input(dataset: Any, device: torch.device) -> torch.Tensor | None:
    """One training input as a batch of one, for counting FLOPs; None if the data is not a tensor pair."""
    try:
        x = dataset[0][0]
    except Exception:
        return None
    return x.unsqueeze(0).to(device) if isinstance(x, torch.Tensor) else None


def _same_iteration_on_every_rank(trainer: Any) -> None:
    """Every rank must continue from the same iteration, or DDP mixes steps and hangs."""
    if idist.get_world_size() == 1:
        return
    here = torch.tensor(trainer.state.iteration)
    low, high = idist.all_reduce(here.clone(), op="MIN"), idist.all_reduce(here.clone(), op="MAX")
    if int(low) != int(high):
        raise CheckpointError(f"the workers loaded different checkpoints (iterations {int(low)} to {int(high)})")
