"""The training job every recipe runs, top to bottom: BMXNet's loop on Flint's engine and handlers.

:func:`train` sets the run's directory up; :func:`_train` tells the rest as a story: data, model,
engines, reporting, safety, run. Handlers attach in any order: Flint's engine fires their events in
a fixed sequence (``engine.FlintEvents``), and every stateful one reaches the checkpoints by itself.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from ignite.metrics import Accuracy, Loss, MeanAbsoluteError, Metric
from torch import nn
from torch.utils.data import DataLoader

from engine import EpochSampler, RNGState, create_evaluator, create_trainer, epoch_loss_total, seed_everything
from engine.metrics import TopOneAccuracy
from handlers import (
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
    LoggingSink,
    LossGuard,
    LRSchedule,
    LRTracker,
    NetSummaries,
    NonFiniteLoss,
    Preemption,
    RecordStream,
    TensorBoardSink,
    Validation,
    current_lrs,
    lr_multiplier,
)
from recipes.config import Config, UsageError, check_global_batch
from recipes.data import DEVICE_AUGMENT, DeviceTensorLoader, FirstBatches
from recipes.optim import make_loss, make_optimizer, param_groups
from recipes.perf import channels_last_batch, peak_flops, profile_table, train_flops_per_sample
from recipes.registry import Recipe

__all__ = [
    "train", "build_job", "run_job", "Job", "attach_all", "build_optimizer", "resolve_device", "task_metrics", "config_changes",
    "resume_point", "RunOutcome",
]  # fmt: skip

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; choose from auto, cpu")
    return torch.device(name)


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.lr, cfg.lr_mult, cfg.wd, cfg.wd_all)
    return make_optimizer(cfg.optimizer, groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


# Options a resumed run may change: they do not alter what is trained or how.
RESUMABLE_CHANGES = (
    "epochs", "resume", "interrupt_at", "progress", "progress_file", "device", "output_dir", "log_interval", "data_dir",
    "download", "profile", "nproc_per_node",
)  # fmt: skip


def config_changes(saved: dict, cfg: Config) -> list[str]:
    """``name=old, now new`` for each option that differs from the saved run's and may not change."""
    new = asdict(cfg)
    return [
        f"{key}={saved[key]!r}, now {new[key]!r}"
        for key in new
        if key in saved and key not in RESUMABLE_CHANGES and saved[key] != new[key]
    ]


def resume_point(cfg: Config) -> Path | str | None:
    """The checkpoint ``cfg`` resumes from, ``"latest"`` for the newest valid one, or None for a new run.

    Refuses (``UsageError``) to mix a new run into an old one, and a resume that changes what is trained."""
    out = Path(cfg.output_dir)
    if cfg.resume is not None and (out / "config.json").is_file():
        changed = config_changes(json.loads((out / "config.json").read_text(encoding="utf-8")), cfg)
        if changed:
            raise UsageError(f"--resume: the run in {out} was started with {'; '.join(changed)}; resume it unchanged")
    found = Checkpointing.find_latest(out / "checkpoints")
    if cfg.resume is None:
        if found is not None or (out / "metrics.jsonl").exists():
            raise UsageError(f"output dir {out} already holds a run; pass --resume to continue it or choose another -o")
        return None
    if cfg.resume:
        path = Path(cfg.resume)
        if not path.is_file():
            raise UsageError(f"--resume {cfg.resume}: no such checkpoint file")
        return path
    if found is None:
        if list((out / "checkpoints").glob("*.corrupt")):
            raise CheckpointError(
                f"--resume: every checkpoint in {out / 'checkpoints'} was set aside as .corrupt; refusing to start the run over there"
            )
        logger.info("--resume: no checkpoint in %s yet, starting a new run", out / "checkpoints")
        return None
    return "latest"


def task_metrics(task: str, loss_fn: nn.Module, device: torch.device) -> tuple[dict, dict, str, str]:
    """(training metrics, validation metrics, monitored metric, "max"|"min") for a recipe's task.

    Classification reports accuracy and keeps the best accuracy; regression reports the mean
    absolute error and keeps the lowest loss. All accumulate on ``device``. Validation also reports
    the loss; training's comes from the trainer's own running sum (``engine.epoch_loss_total``).
    """
    classification = task == "classification"
    name = "accuracy" if classification else "mae"
    # Updated every training iteration: Flint's lean accuracy (engine.metrics) costs half of Ignite's.
    train: dict[str, Metric] = {name: TopOneAccuracy(device=device) if classification else MeanAbsoluteError(device=device)}
    val = {"loss": Loss(loss_fn, device=device), name: Accuracy(device=device) if classification else MeanAbsoluteError(device=device)}
    return (train, val, "accuracy", "max") if task == "classification" else (train, val, "loss", "min")


def epoch_mean_loss(trainer: Any) -> float:
    """The training loss of the epoch so far: the mean over its samples (all ranks)."""
    total, samples = epoch_loss_total(trainer)
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
    ``KeyboardInterrupt``, a second stop signal). On leaving, ``summary(status)`` is emitted (unless
    ``status`` is None: nothing was run), background checkpoint writes are waited for and the sinks
    are closed, each step even if an earlier one failed. A failure there (a full disk) is raised if
    the run itself succeeded; otherwise the run's own error is the one that leaves, and the later
    ones go to the log.
    """

    def __init__(self, stream: RecordStream, checkpoints: Checkpointing, summary: Callable[[str], dict[str, Any]]) -> None:
        self.stream, self.checkpoints, self.summary = stream, checkpoints, summary
        self.status: str | None = "failed"

    def __enter__(self) -> RunOutcome:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        if kind is not None:
            self.status = "aborted" if issubclass(kind, KeyboardInterrupt) else "failed"
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


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _throughput(trainer: Any, epoch_time: float | None, flops_per_sample: float | None, peak: float | None) -> dict:
    """Training samples/sec over an average epoch (the launch's first excluded), TFLOP/s and, if the peak is known, MFU."""
    state = trainer.state
    if not epoch_time or not state.iteration or not state.epoch_length:
        return {"samples_per_sec": None}
    rate = state.samples / state.iteration * state.epoch_length / epoch_time
    out: dict[str, Any] = {"samples_per_sec": rate}
    if flops_per_sample is not None:
        out["model_tflops"] = flops_per_sample * rate / 1e12
        if peak is not None:
            out["mfu"] = flops_per_sample * rate / (peak * idist.get_world_size())  # rate is global
    return out


def train(cfg: Config, recipe: Recipe) -> str:
    """Run one training job; returns ``"completed"`` or ``"interrupted"`` (a checkpoint was saved).

    Raises ``NonFiniteLoss`` when the loss becomes NaN or infinite (status ``"failed"``) and
    ``KeyboardInterrupt`` on a second stop signal (status ``"aborted"``)."""
    # --- where the run lives (rank 0 writes the files; every rank checks first) -----------------
    out = Path(cfg.output_dir)
    resume = resume_point(cfg)
    check_global_batch(cfg.batch_size, idist.get_world_size())  # also for callers that did not come through the CLI
    idist.barrier()  # no rank may see rank 0's new files as "a run already there"
    if idist.get_rank() > 0:
        return _train(cfg, recipe, out, resume)
    try:
        out.mkdir(parents=True, exist_ok=True)
        log_file = logging.FileHandler(out / "train.log", encoding="utf-8")
    except OSError as e:
        raise OSError(f"cannot write to output dir {out}: {e.strerror or e}") from None
    log_file.setLevel(logging.DEBUG)
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(log_file)
    try:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n", encoding="utf-8")
        logger.info("Run config: %s", json.dumps(asdict(cfg)))
        if idist.get_world_size() > 1:
            logger.info("Data-parallel on %d workers (%s): %d samples per worker batch", idist.get_world_size(),
                        idist.backend(), cfg.batch_size // idist.get_world_size())  # fmt: skip
        return _train(cfg, recipe, out, resume)
    except Exception:
        logger.debug("Run failed", exc_info=True)
        raise
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


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
            "samples": getattr(state, "samples", 0),
            "best_epoch": self.checkpoints.best.epoch,
            f"best_{self.monitor}": self.checkpoints.best.value,
            "avg_epoch_time": self.timer.average,
            "stopped_early": self.stopper is not None and self.stopper.stopped,
            **_throughput(self.trainer, self.timer.average, self.flops_per_sample, peak_flops(self.device, self.cfg.amp)),
        }


def _train(cfg: Config, recipe: Recipe, out: Path, resume: Path | str | None) -> str:
    return run_job(build_job(cfg, recipe, out), resume)


def build_job(cfg: Config, recipe: Recipe, out: Path, extra_handlers: Sequence[Any] = ()) -> Job:
    """Data, model, engines, reporting and safety of ``cfg``'s run, wired on this rank; nothing run yet.

    ``extra_handlers`` are attached beside the recipe's own (see :func:`attach_all`)."""
    seed_everything(cfg.seed)  # the same on every rank: same initial weights, dropout masks
    device = torch.device(cfg.device)
    rank, world = idist.get_rank(), idist.get_world_size()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", idist.get_local_rank())
        torch.cuda.set_device(device)
    batch_size = cfg.batch_size // world  # --batch-size is global

    # --- data: the order is a function of (seed, epoch), so a run resumed mid-epoch sees the same batches
    train_set, val_set = recipe.datasets[cfg.dataset](cfg)
    pin = device.type == "cuda"
    val_batch = max(batch_size, 256)
    shard = {"num_replicas": world, "rank": rank}  # with several workers each takes its shard
    train_loader: Any
    val_loader: Any
    if cfg.data_on_device:
        augment = DEVICE_AUGMENT.get(cfg.dataset)
        train_loader = DeviceTensorLoader(train_set, batch_size, shuffle=True, device=device, augment=augment, seed=cfg.seed, **shard)
        val_loader = DeviceTensorLoader(val_set, val_batch, shuffle=False, device=device, **shard)
        sampler = train_loader.sampler
    else:
        loading: dict[str, Any] = {
            "num_workers": cfg.num_workers, "pin_memory": pin, "persistent_workers": cfg.num_workers > 0,
            "worker_init_fn": _worker_signals if cfg.num_workers else None,
        }  # fmt: skip
        sampler = EpochSampler(len(train_set), seed=cfg.seed, **shard)  # type: ignore[arg-type]
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, generator=sampler.generator, **loading)
        val_sampler = EpochSampler(len(val_set), shuffle=False, pad=False, **shard)  # type: ignore[arg-type]
        val_loader = DataLoader(val_set, batch_size=val_batch, sampler=val_sampler, **loading)
    if cfg.test_run:
        train_loader, val_loader = FirstBatches(train_loader, 1), FirstBatches(val_loader, 1)

    # --- model, optimizer, loss --------------------------------------------------------------------
    model = recipe.build_model().to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    sample = train_loader.x[:1] if cfg.data_on_device else train_set[0][0].unsqueeze(0).to(device)  # type: ignore[index]
    flops_per_sample = train_flops_per_sample(model, sample)
    optimizer = build_optimizer(cfg, model)
    loss_fn = make_loss(recipe.task, cfg.loss, cfg.label_smoothing)
    # Training runs through DDP (gradients averaged over ranks) when there are several workers;
    # evaluation runs the plain model on each rank's shard, and the metrics are all-reduced.
    net: Any = idist.auto_model(model) if world > 1 else model
    optimizer = idist.auto_optim(optimizer) if world > 1 else optimizer
    eval_net: Any = model
    if cfg.compile:  # the engines run the compiled module; checkpoints keep the plain one's names
        logger.info("Compiling the model: the first training and validation iterations include the compile")
        net = torch.compile(net)
        eval_net = net if world == 1 else torch.compile(model)

    # --- engines: Flint's handlers attach in any order (engine.FlintEvents orders their work) -------
    prepare = channels_last_batch if cfg.channels_last else None
    trainer = create_trainer(
        net, optimizer, loss_fn, device=device, accumulation_steps=cfg.update_cycle, amp=cfg.amp, non_blocking=pin,
        prepare_batch=prepare,
    )  # fmt: skip
    evaluator = create_evaluator(eval_net, device=device, amp=cfg.amp, non_blocking=pin, prepare_batch=prepare)
    handlers: list[Any] = [DataOrder(sampler, batch_size), Validation(evaluator, val_loader)]  # the epoch's data order
    if cfg.lr_mode != "constant" or cfg.warmup_epochs:  # a constant LR needs no per-iteration work
        schedule = functools.partial(
            lr_multiplier, mode=cfg.lr_mode, steps_per_epoch=len(train_loader), epochs=cfg.epochs, milestones=cfg.lr_steps,
            factor=cfg.lr_factor, warmup_epochs=cfg.warmup_epochs, warmup_start=cfg.warmup_lr / cfg.lr,
        )  # fmt: skip
        handlers.append(LRSchedule(optimizer, schedule))

    # --- reporting: one record stream to log lines, metrics.jsonl and TensorBoard (rank 0; the others, no sinks)
    tb = TensorboardLogger(log_dir=str(out)) if rank == 0 else None
    stream = RecordStream([LoggingSink(logger), JsonlSink(out / "metrics.jsonl"), TensorBoardSink(tb.writer)] if tb else [])
    train_metrics, val_metrics, monitor, mode = task_metrics(recipe.task, loss_fn, device)
    timer, eta = EpochTimer(), ETA(cfg.progress_file if rank == 0 else None)
    handlers += [
        timer,
        eta,
        training_records(train_metrics, stream, timer, optimizer),
        BatchLogger(stream, every=cfg.log_interval, optimizer=optimizer, metrics=train_metrics),
        LRTracker(optimizer, stream, every=cfg.log_interval),
    ]
    EpochMetrics(val_metrics, stream, "validation", trainer=trainer).attach(evaluator)
    if tb is not None:
        handlers.append(NetSummaries(model, tb.writer))
    if cfg.progress and sys.stderr.isatty() and rank == 0:
        from ignite.handlers import ProgressBar

        def bar_fields(output: dict) -> dict:  # tqdm shows the epoch's ETA itself
            return {"loss": output["loss"], "run ETA": _clock_text(eta.estimate(trainer)["run_eta_s"])}

        every = max(1, len(train_loader) // 50)  # redrawing per iteration costs ~85 us each
        ProgressBar(persist=False).attach(trainer, output_transform=bar_fields, event_name=Events.ITERATION_COMPLETED(every=every))

    # --- safety: NaN guard, checkpoints (every stateful handler is in them by itself), stops -----
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer, "rng": RNGState(), "scaler": trainer.scaler}  # type: ignore[attr-defined]
    checkpoints = Checkpointing(out / "checkpoints", to_save, n_latest=2, metric=monitor, mode=mode, every=cfg.save_frequency)
    stopper = EarlyStopping(cfg.early_stopping, monitor, trainer, mode=mode) if cfg.early_stopping else None  # type: ignore[arg-type]
    interrupt = InterruptAt(cfg.interrupt_at) if cfg.interrupt_at else None
    preemption = Preemption(agree=_any_rank())  # SIGTERM/SIGINT: stop at the next update, saved, exit 3
    handlers += [LossGuard(every=cfg.log_interval), checkpoints, preemption, *[h for h in (stopper, interrupt) if h]]
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


def run_job(job: Job, resume: Path | str | None) -> str:
    """Resume ``job`` from ``resume`` (see :func:`resume_point`), train it and close it with a summary record."""
    trainer, cfg = job.trainer, job.cfg
    with RunOutcome(job.stream, job.checkpoints, job.summary) as outcome:
        loaded = _load(job.checkpoints, resume, job.device)
        _same_iteration_on_every_rank(trainer)
        if loaded is not None:
            done = trainer.state.epoch >= cfg.epochs  # Ignite would start over on a finished state
            if done or (job.stopper is not None and job.stopper.stopped):
                how = f"completed {trainer.state.epoch} epochs" if done else f"stopped early after epoch {trainer.state.epoch}"
                logger.info("The run in %s already %s; nothing to do", job.out, how)
                outcome.status = None
                return "completed"
            position = {"epoch": trainer.state.epoch, "iteration": trainer.state.iteration}
            job.stream.emit({"phase": "resume", **position, "samples": trainer.state.samples, "checkpoint": str(loaded)})  # type: ignore[attr-defined]
        try:
            with job.preemption.signal_handlers():
                trainer.run(job.train_loader, max_epochs=cfg.epochs)
        except NonFiniteLoss as e:
            job.checkpoints.wait()  # an earlier save may still be finishing in the background
            last = Checkpointing.find_latest(job.checkpoints.dirname)
            raise NonFiniteLoss(f"{e}; stopped without saving; the last good checkpoint is {last or 'none'}") from None
        stopped = job.preemption.triggered or (job.interrupt is not None and job.interrupt.triggered)
        outcome.status = "interrupted" if stopped else "completed"
        if job.profiler is not None and idist.get_rank() == 0:
            logger.info("Handler costs (--profile):\n%s", profile_table(job.profiler, trainer))
    return outcome.status  # type: ignore[return-value]


def _load(checkpoints: Checkpointing, resume: Path | str | None, device: torch.device) -> Path | None:
    """Load what :func:`resume_point` chose; the checkpoint loaded, or None for a new run."""
    if resume == "latest":
        return checkpoints.load_latest_valid(map_location=device)
    if resume is not None:
        checkpoints.load(resume, map_location=device)
        return Path(resume)
    return None


def attach_all(handlers: Sequence[Any], trainer: Engine, evaluator: Engine) -> None:
    """``handler.attach(trainer, evaluator)`` if its ``attach`` takes two engines, else ``handler.attach(trainer)``.

    ``attach`` takes two when it has a parameter named ``evaluator`` or two required positional ones.
    On Flint's engines the order does not decide what the handlers do (``engine.FlintEvents``).
    """
    for handler in handlers:
        params = inspect.signature(handler.attach).parameters
        required = [p for p in params.values() if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if "evaluator" in params or len(required) >= 2:
            handler.attach(trainer, evaluator)
        else:
            handler.attach(trainer)


def _same_iteration_on_every_rank(trainer: Any) -> None:
    """Every rank must continue from the same iteration, or DDP mixes steps and hangs."""
    if idist.get_world_size() == 1:
        return
    here = torch.tensor(trainer.state.iteration)
    low, high = idist.all_reduce(here.clone(), op="MIN"), idist.all_reduce(here.clone(), op="MAX")
    if int(low) != int(high):
        raise CheckpointError(f"the workers loaded different checkpoints (iterations {int(low)} to {int(high)})")
