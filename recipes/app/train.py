"""The training job every recipe runs, top to bottom: BMXNet's loop on Flint's engine and handlers.

:func:`train` claims the run's directory; :func:`build_job` tells the rest in named steps (where this
process trains, data, model, engines, reporting, safety), each returning a small object;
:func:`run_job` runs it. Handlers attach in any order: Flint's engine fires their events in a fixed
sequence (``flint.engine.FlintEvents``), and every stateful one reaches the checkpoints by itself.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from torch import nn

from flint.engine import RNGState, create_evaluator, create_trainer, progress, register_state, seed_everything
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
    MetricGuard,
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
from flint.recipes.app.config import Config, RunConfig, UsageError, check_global_batch, option_text
from flint.recipes.app.console import RECORDS, ConsoleSink, log_header, terminal_shows_progress
from flint.recipes.app.data_forms import Batches, KeywordInputs, checked_data, fingerprinted, size_of
from flint.recipes.app.export import data_metadata
from flint.recipes.app.fingerprint import data_fingerprint, file_digest, recipe_file
from flint.recipes.app.launch_clock import LaunchClock
from flint.recipes.app.loaders import first_input, make_loaders
from flint.recipes.app.task_metrics import TaskForm, TaskLoss, chosen_metrics, task_metrics
from flint.recipes.app.monitor import Monitor
from flint.recipes.app.optim import make_loss, make_optimizer, param_groups
from flint.recipes.app.perf import peak_flops, profile_table, train_flops_per_sample
from flint.recipes.app.registry import Recipe
from flint.recipes.app.resume import check_before_writing, claim_run_dir, last_summary, load_resume_point
from flint.recipes.app.rundir import RunDir
from flint.recipes.app.stopping import STOPS, StopSignal
from flint.recipes.app.tasks import run_task
from flint.recipes.app.tracking import MlflowSink

__all__ = ["train", "prepare", "build_job", "run_job", "Job", "Parts", "Place", "attach_all", "build_optimizer", "resolve_device", "RunOutcome"]

logger = logging.getLogger(__name__)

OptimizerFactory = Callable[[list[dict]], torch.optim.Optimizer]


# --- where this process trains -------------------------------------------------------------------


def resolve_device(name: str, style: str = "cli") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"{option_text('device', 'cuda', style)}: no CUDA device is available here; choose from auto, cpu")
    return torch.device(name)


@dataclass(frozen=True)
class Place:
    """Where this process trains: its device and its rank among ``world`` data-parallel workers (decided once)."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run's files and shows the console."""
        return self.rank == 0

    @classmethod
    def here(cls, cfg: Config) -> Place:
        device, rank, world = resolve_device(cfg.device, cfg.style), idist.get_rank(), idist.get_world_size()
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", idist.get_local_rank())
            torch.cuda.set_device(device)
        return cls(device, rank, world)


def check_with_torch(cfg: Config, recipe: Recipe) -> None:
    """The checks :func:`flint.recipes.app.config.resolve_config` leaves for torch; ``cfg`` is left as given.

    ``cfg.device`` stays as the user wrote it ("auto" is resolved on each run), so a run saved on a
    GPU machine resumes on a CPU one without a config change.

    Raises ``UsageError`` naming the option as the caller spells it (``cfg.style``): no CUDA device, fewer
    than ``nproc_per_node``, an ``lr_mult`` name no parameter has (the model is built on the meta device: no
    memory, no weights)."""
    if resolve_device(cfg.device, cfg.style).type == "cuda" and cfg.nproc_per_node > torch.cuda.device_count():
        raise UsageError(f"{option_text('nproc_per_node', cfg.nproc_per_node, cfg.style)}: only {torch.cuda.device_count()} CUDA devices here")
    if cfg.lr_mult:
        with torch.device("meta"):
            param_groups(recipe.build_model(), cfg.lr, cfg.lr_mult, style=cfg.style)


# --- the run: claim the directory, build, run ------------------------------------------------------


def train(
    cfg: Config,
    recipe: Recipe,
    handlers: Sequence[Any] = (),
    loss_fn: Callable | None = None,
    optimizer: type | OptimizerFactory | None = None,
    lock: bool = True,
) -> dict[str, Any]:
    """Run one training job; returns its ``"summary"`` record, whose ``status`` is ``"completed"`` or
    ``"interrupted"`` (stopped with a checkpoint saved: relaunch with ``resume``).

    ``handlers`` are attached beside the recipe's own (:func:`attach_all`); ``loss_fn`` and
    ``optimizer`` (a class or factory, see :func:`build_optimizer`) replace the named ones. With
    ``lock``, rank 0 holds the output dir's lock (:meth:`RunDir.lock`) for the run.
    Raises ``UsageError`` before anything is written for a bad resume, ``NonFiniteLoss`` when the
    loss becomes NaN or infinite (status ``"failed"``), ``KeyboardInterrupt`` on a second stop signal
    (status ``"aborted"``) and :class:`StopSignal` for one before training started."""
    run = RunDir(cfg.output_dir)
    check_global_batch(cfg.batch_size, idist.get_world_size(), cfg.style)  # also for callers that did not come through the CLI
    place = Place.here(cfg)
    with contextlib.ExitStack() as owned:
        if lock and place.main:  # the recipe's own code runs and is checked under the lock, before anything is written
            parts, resume, done = owned.enter_context(claim_run_dir(cfg, lambda: prepare(cfg, recipe)))
        else:
            parts = prepare(cfg, recipe)
            resume, done = check_before_writing(cfg, parts.fingerprint, parts.module)
        if done is not None:
            logger.info("The run in %s already %s; nothing to do", run.path, done)
            return last_summary(run, done)
        idist.barrier()  # no rank may see rank 0's new files as "a run already there"
        clock = None  # rank 0's: when the run started, how long it ran
        if place.main:
            owned.enter_context(_logging_to(run))
            clock = LaunchClock.start(run, resuming=resume is not None)
            config = {**asdict(cfg), "fingerprint": parts.fingerprint, **clock.fields(), "metadata": data_metadata(recipe, cfg.dataset, cfg.task)}
            write_text_atomic(run.config_file, json.dumps(config, indent=2) + "\n", "config file")
            RECORDS.info("Run config: %s", json.dumps(config))  # train.log only; the console has a header
            if place.world > 1:
                RECORDS.info("Data-parallel on %d workers (%s): %d samples per worker batch", place.world, idist.backend(),
                             cfg.batch_size // place.world)  # fmt: skip
        try:
            job = build_job(cfg, recipe, run, place, handlers, loss_fn, optimizer, parts=parts, clock=clock, resuming=resume is not None)
            return run_job(job, resume)
        except Exception:
            logger.debug("Run failed", exc_info=True)
            raise


@contextlib.contextmanager
def _logging_to(run: RunDir) -> Iterator[None]:
    """``train.log`` for the block: every record that reaches the root logger, appended to.

    Flint's loggers pass INFO on for the block even where the logging configuration is stricter
    (Python's default is WARNING, as under ``fit()``): the records and epoch lines reach ``train.log``;
    the user's own handlers keep their levels."""
    try:
        log_file = LogFile(run.log_file)
    except OSError as e:
        raise OSError(f"cannot write to output dir {run.path}: {e.strerror or e}") from None
    log_file.setLevel(logging.DEBUG)
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    flint = logging.getLogger("flint")
    level = flint.level
    if flint.getEffectiveLevel() > logging.INFO:
        flint.setLevel(logging.INFO)
    logging.getLogger().addHandler(log_file)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
        flint.setLevel(level)


# --- the job's parts ---------------------------------------------------------------------------------


@dataclass
class Parts:
    """The recipe's own code, run once and checked before anything is written: its datasets, a fresh model, the fingerprint."""

    train_set: Any  # a form of flint.recipes.app.data_forms, arrays made a TensorDataset
    val_set: Any  # None: no validation
    module: nn.Module
    fingerprint: dict[str, Any]
    batches: Batches = Batches()  # how batches reach the model


def prepare(cfg: Config, recipe: Recipe) -> Parts:
    """Seed, load the recipe's datasets and build its model, as the run will; :class:`UsageError` naming the recipe's
    function and what it returned when that is not what a run needs."""
    seed_everything(cfg.seed)  # the same on every rank: same initial weights, dropout masks
    loaded = recipe.datasets[cfg.dataset](cfg)
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2 or loaded[0] is None:
        raise UsageError(f"recipe {recipe.name}: datasets[{cfg.dataset!r}](cfg) returned {_described(loaded)}; "
                         "it must return a pair (training set, validation set or None)")  # fmt: skip
    names = ("train_data", "val_data") if cfg.style == "python" else tuple(f"recipe {recipe.name}'s {part} set" for part in ("training", "validation"))
    (train_set, val_set), batches = checked_data(list(zip(names, loaded)), cfg, recipe)
    module = recipe.build_model()
    if not isinstance(module, nn.Module):
        raise UsageError(f"recipe {recipe.name}: build_model() returned {_described(module)}, not a torch.nn.Module")
    source = recipe_file(cfg.recipe)
    fingerprint = {"recipe_file": str(source) if source else None, "recipe_sha256": file_digest(source) if source else None,
                   "data": data_fingerprint(fingerprinted(train_set), fingerprinted(val_set))}  # fmt: skip
    return Parts(train_set, val_set, module, fingerprint, batches)


def _described(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}" if value is not None else "None"


@dataclass
class Data:
    """The run's batches on this rank, and what the header and the FLOP count read of its datasets."""

    train_loader: Any
    val_loader: Any  # None: no validation
    sampler: Any
    train_size: int
    val_size: int | None
    first_input: torch.Tensor | None


def build_data(cfg: Config, parts: Parts, place: Place) -> Data:
    """The recipe's datasets as loaders: the order is a function of (seed, epoch), so a run resumed mid-epoch sees the same batches."""
    train_set, val_set = parts.train_set, parts.val_set
    train_loader, val_loader, sampler = make_loaders(cfg, train_set, val_set, place.device, place.world, place.rank)
    val_size = size_of(val_set) if val_set is not None else None
    return Data(train_loader, val_loader, sampler, size_of(train_set), val_size, first_input(train_set, place.device))


@dataclass
class Model:
    """The network as it is saved (``module``), trained (``net``: DDP and compiled) and evaluated, with its optimizer and loss."""

    module: nn.Module
    net: Any
    eval_net: Any
    optimizer: torch.optim.Optimizer
    loss_fn: Callable
    flops_per_sample: float | None


def build_model(cfg: Config, task: str, parts: Parts, place: Place, data: Data, loss_fn: Callable | None = None,
                optimizer_factory: type | OptimizerFactory | None = None) -> Model:  # fmt: skip
    """The recipe's model on the device, its optimizer (``--lr-mult``, ``--wd``) and loss.

    Training runs through DDP (gradients averaged over ranks) when there are several workers;
    evaluation runs the plain model on each rank's shard, and the metrics are all-reduced."""
    module = parts.module.to(place.device)
    if cfg.channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    flops = train_flops_per_sample(module, data.first_input)
    optimizer = build_optimizer(cfg, module, optimizer_factory)
    loss_fn = TaskLoss(loss_fn or make_loss(task, cfg.loss, cfg.label_smoothing), task)  # shapes checked at the first batch
    called: nn.Module = KeywordInputs(module) if parts.batches.keyword_inputs else module  # what the engines call
    net: Any = idist.auto_model(called) if place.world > 1 else called
    optimizer = idist.auto_optim(optimizer) if place.world > 1 else optimizer
    eval_net: Any = called
    if cfg.compile:  # the engines run the compiled module; checkpoints keep the plain one's names
        logger.info("Compiling the model: the first training and validation iterations include the compile")
        net = torch.compile(net)
        eval_net = net if place.world == 1 else torch.compile(called)
    return Model(module, net, eval_net, optimizer, loss_fn, flops)


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


def build_engines(cfg: Config, model: Model, place: Place, fingerprint: dict[str, Any], batches: Any = None) -> tuple[Engine, Engine]:
    """The trainer (the update cycle, AMP, clipping) and the evaluator; a checkpoint keeps the run's options and fingerprint.
    ``batches``: their ``prepare_batch`` (default: the engines' own)."""
    pin = place.device.type == "cuda"
    trainer = create_trainer(
        model.net, model.optimizer, model.loss_fn, device=place.device, accumulation_steps=cfg.update_cycle, amp=cfg.amp,
        clip_grad_norm=cfg.clip_grad_norm, prepare_batch=batches, non_blocking=pin,
    )  # fmt: skip
    evaluator = create_evaluator(model.eval_net, device=place.device, amp=cfg.amp, non_blocking=pin, prepare_batch=batches)
    register_state(trainer, "config", RunConfig(cfg, fingerprint))  # a checkpoint refuses to resume another run
    return trainer, evaluator


def schedule_handlers(cfg: Config, data: Data, model: Model, evaluator: Engine) -> list[Any]:
    """The epoch's data order, validation every ``--val-every`` epochs, the LR schedule."""
    batch = getattr(data.train_loader, "batch_size", None) or cfg.batch_size // idist.get_world_size()  # a DataLoader of yours: its own
    handlers: list[Any] = [DataOrder(data.sampler, batch)] if data.sampler is not None else []
    if data.val_loader is not None:
        handlers.append(Validation(evaluator, data.val_loader, every=cfg.val_every))
    if cfg.lr_mode != "constant" or cfg.warmup_epochs:  # a constant LR needs no per-iteration work
        schedule = functools.partial(
            lr_multiplier, mode=cfg.lr_mode, steps_per_epoch=len(data.train_loader), epochs=cfg.epochs, milestones=cfg.lr_steps,
            factor=cfg.lr_factor, warmup_epochs=cfg.warmup_epochs, warmup_start=cfg.warmup_lr / cfg.lr,
        )  # fmt: skip
        handlers.append(LRSchedule(model.optimizer, schedule))
    return handlers


def epoch_mean_loss(trainer: Any) -> float:
    """The training loss of the epoch so far: the mean over its samples (all ranks)."""
    total, samples = progress(trainer, "the training record").epoch_loss()
    return total / samples if samples else math.nan


@dataclass
class Reporting:
    """The record stream (log lines, ``metrics.jsonl``, TensorBoard on rank 0; no sinks elsewhere) and its handlers."""

    stream: RecordStream
    timer: EpochTimer
    eta: ETA
    handlers: list[Any]


def build_reporting(cfg: Config, task: str, run: RunDir, place: Place, model: Model, data: Data, trainer: Engine,
                    chosen: Mapping[str, Any] | None = None) -> Reporting:  # fmt: skip
    """Epoch and batch records, LR records, weight histograms, the epoch timer, the ETA and the progress bar.

    ``chosen``: the validation metrics besides the loss and the task's own (:func:`flint.recipes.app.task_metrics.task_metrics`)."""
    tb = TensorBoardWriter(run.path) if place.main else None  # writes in this thread: a full disk raises, never hangs
    sinks = [LoggingSink(RECORDS), JsonlSink(run.metrics_file), TensorBoardSink(tb)] if tb else []
    stream = RecordStream(sinks)
    train_metrics, val_metrics = task_metrics(task, model.loss_fn, place.device, chosen)
    timer, eta = EpochTimer(), ETA(cfg.progress_file if place.main else None)
    optimizer = model.optimizer

    def epoch_extra(trainer: Engine) -> dict[str, Any]:  # the training record's fields besides its metrics
        return {"loss": epoch_mean_loss(trainer), "epoch_time": timer.last, "lr": current_lrs(optimizer)}

    handlers: list[Any] = [
        timer,
        eta,
        EpochMetrics(train_metrics, stream, "training", extra=epoch_extra),
        BatchLogger(stream, every=cfg.log_interval, optimizer=optimizer, metrics=train_metrics),
        LRTracker(optimizer, stream, every=cfg.log_interval),
    ]
    if data.val_loader is not None:
        handlers.append(OnEvaluator(EpochMetrics(val_metrics, stream, "validation", trainer=trainer)))
    if tb is not None:
        handlers.append(NetSummaries(model.module, tb))
    if cfg.progress and place.main and terminal_shows_progress():
        from flint.recipes.app.progress import attach_progress_bar

        attach_progress_bar(trainer, eta, cfg.log_interval, max(1, len(data.train_loader) // 50))  # redrawn about 50 times an epoch
    return Reporting(stream, timer, eta, handlers)


@dataclass
class Safety:
    """The NaN guard, checkpoints (every stateful handler is in them by itself) and the ways a run stops."""

    checkpoints: Checkpointing
    preemption: Preemption
    interrupt: InterruptAt | None
    stopper: EarlyStopping | None
    handlers: list[Any]


def build_safety(cfg: Config, run: RunDir, monitor: Monitor, model: Model, trainer: Engine, validating: bool) -> Safety:
    """Latest and best checkpoints, early stopping on the monitored metric, ``--interrupt-at``, stop signals."""
    to_save = {"model": model.module, "optimizer": model.optimizer, "trainer": trainer, "rng": RNGState(), "scaler": trainer.scaler}  # type: ignore[attr-defined]
    checkpoints = Checkpointing(run.checkpoints, to_save, n_latest=2, metric=monitor.name if validating else None, mode=monitor.mode,
                                every=cfg.save_frequency)  # fmt: skip
    stopper = None
    if cfg.early_stopping and validating:
        stopper = EarlyStopping(cfg.early_stopping, monitor.name, trainer, mode=monitor.mode)  # type: ignore[arg-type]
    interrupt = InterruptAt(cfg.interrupt_at) if cfg.interrupt_at else None
    preemption = Preemption(agree=_any_rank())  # SIGTERM/SIGINT: stop at the next update, saved, exit 3
    handlers = [LossGuard(every=cfg.log_interval), checkpoints, preemption, *[h for h in (stopper, interrupt) if h]]
    if validating:  # a non-finite validation metric: one warning; a non-finite monitored one stops the run
        handlers.append(MetricGuard(monitor.name))
    return Safety(checkpoints, preemption, interrupt, stopper, handlers)


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


# --- the job ---------------------------------------------------------------------------------------


@dataclass
class Job:
    """A training run wired and ready: its engines and what the run and its summary read."""

    cfg: Config
    run: RunDir
    place: Place
    monitor: Monitor
    model: Model
    trainer: Engine
    evaluator: Engine
    train_loader: Any
    report: Reporting
    safety: Safety
    profiler: Any = None
    clock: LaunchClock | None = None  # rank 0's: the summary's wall_time

    def summary(self, status: str) -> dict[str, Any]:
        """The ``"summary"`` record of a run that ended with ``status``."""
        state: Any = self.trainer.state
        best = self.safety.checkpoints.best
        return {
            "phase": "summary",
            "status": status,
            "epochs": state.epoch,
            "samples": progress(self.trainer, "the summary").samples,
            "monitor": self.monitor.text,
            "best_epoch": best.epoch,
            "best_value": best.value,
            "avg_epoch_time": self.report.timer.average,
            "stopped_early": self.safety.stopper is not None and self.safety.stopper.stopped,
            **({"wall_time": self.clock.wall_time()} if self.clock is not None else {}),
            **_throughput(self.trainer, self.report.timer.average, self.model.flops_per_sample, peak_flops(self.place.device, self.cfg.amp)),
        }


def build_job(cfg: Config, recipe: Recipe, run: RunDir, place: Place, extra_handlers: Sequence[Any] = (),
              loss_fn: Callable | None = None, optimizer_factory: type | OptimizerFactory | None = None, *,
              parts: Parts | None = None, clock: LaunchClock | None = None, resuming: bool = False) -> Job:  # fmt: skip
    """Data, model, engines, reporting and safety of ``cfg``'s run, wired on this rank; nothing run yet.

    ``extra_handlers`` are attached beside the recipe's own (see :func:`attach_all`); a dataset
    whose validation part is None trains without validation (no best checkpoint, no early stopping).
    ``parts`` are the recipe's datasets and model from :func:`prepare` (default: prepared here);
    ``clock`` times the launch for the summary; ``resuming`` continues the run's MLflow run (``--mlflow``)."""
    parts = parts or prepare(cfg, recipe)
    task = run_task(recipe.task, cfg.task)
    data = build_data(cfg, parts, place)
    model = build_model(cfg, task, parts, place, data, loss_fn, optimizer_factory)
    if place.main:
        log_header(recipe.name, cfg.dataset, data.train_size, data.val_size, model.module, place.device, run.path, cfg.epochs,
                   place.world, cfg.test_run)  # fmt: skip
    trainer, evaluator = build_engines(cfg, model, place, parts.fingerprint, parts.batches.prepare_batch)
    TaskForm(task).attach(evaluator)  # the evaluator's output in the task's form before any metric reads it
    monitor = Monitor.parse(cfg.monitor, task)
    report = build_reporting(cfg, task, run, place, model, data, trainer, chosen_metrics(cfg.metrics, recipe.metrics))
    safety = build_safety(cfg, run, monitor, model, trainer, validating=data.val_loader is not None)
    if place.main:  # the console: one line per epoch, the closing lines with the best checkpoint's path; MLflow
        best = safety.checkpoints.best_checkpoint

        def best_path() -> Any:
            return best.last_checkpoint if best is not None else None

        hint = "call fit() again with resume=True" if cfg.style == "python" else f"run: flint resume {run.path}"
        report.stream.add(ConsoleSink(cfg.epochs, best_path, resume_hint=hint))
        tracking = MlflowSink.start(cfg, run, resuming, best_path) if cfg.mlflow is not None else None
        if tracking is not None:  # None: MLflow cannot be reached (warned)
            report.stream.add(tracking)
    handlers = [*schedule_handlers(cfg, data, model, evaluator), *report.handlers, *safety.handlers, *extra_handlers]
    attach_all(handlers, trainer, evaluator)
    profiler = _attach_profiler(trainer) if cfg.profile else None
    return Job(cfg, run, place, monitor, model, trainer, evaluator, data.train_loader, report, safety, profiler, clock)


def _attach_profiler(trainer: Engine) -> Any:
    """Ignite's ``HandlersTimeProfiler`` (``--profile``), and a handler that lets errors through again."""
    from ignite.handlers import HandlersTimeProfiler

    profiler = HandlersTimeProfiler()
    profiler.attach(trainer)

    def reraise(engine: Any, error: BaseException) -> None:  # the profiler leaves an EXCEPTION_RAISED
        raise error  # entry, and Ignite would then swallow every error (a NaN stop would exit 0)

    trainer.add_event_handler(Events.EXCEPTION_RAISED, reraise)
    return profiler


def _throughput(trainer: Engine, epoch_time: float | None, flops_per_sample: float | None, peak: float | None) -> dict[str, Any]:
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


class RunOutcome:
    """How a run ended, and its closing: the summary record, checkpoints on disk, record sinks closed.

    Use it as a context manager around the run and set ``status`` when it ends: ``"completed"`` or
    ``"interrupted"``. An exception leaving the block makes it ``"failed"`` (``"aborted"`` for
    ``KeyboardInterrupt``, a second stop signal; None for :class:`StopSignal`: nothing was run, no
    summary). On leaving, the outcome is settled (:meth:`Stops.settle`: stop signals are ignored from
    then on), ``summary(status)`` is emitted, background checkpoint writes are waited for and the
    sinks are closed, each step even if an earlier one failed. A failure there (a full disk) is raised
    if the run itself succeeded; otherwise the run's own error is the one that leaves, and the later
    ones go to the log.
    """

    def __init__(self, stream: RecordStream, checkpoints: Checkpointing, summary: Callable[[str], dict[str, Any]]) -> None:
        self.stream, self.checkpoints, self.summary = stream, checkpoints, summary
        self.status: str | None = "failed"

    def __enter__(self) -> RunOutcome:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        STOPS.settle()  # however it ended: closing is never cut short by a signal
        if kind is not None:
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


def run_job(job: Job, resume: Path | str | None) -> dict[str, Any]:
    """Resume ``job`` from ``resume`` (see :func:`flint.recipes.app.resume.resume_point`), train it and close it; the summary record.

    SIGTERM and SIGINT go to the job's :class:`flint.handlers.Preemption` from the checkpoint's load to
    the end of training (:meth:`Stops.training`). One that came before training started ends the
    launch there: ``"interrupted"`` if a checkpoint was loaded (the relaunch resumes from it), else
    :class:`StopSignal`. Once training ends the outcome is settled: later signals are ignored."""
    trainer, cfg, safety = job.trainer, job.cfg, job.safety
    summary: dict[str, Any] = {}

    def close(status: str) -> dict[str, Any]:
        summary.update(job.summary(status))
        return summary

    with STOPS.training(safety.preemption), RunOutcome(job.report.stream, safety.checkpoints, close) as outcome:
        loaded = load_resume_point(safety.checkpoints, resume, job.place.device)
        _same_iteration_on_every_rank(trainer)
        if loaded is not None and (trainer.state.epoch >= cfg.epochs or (safety.stopper is not None and safety.stopper.stopped)):
            outcome.status = None  # checked before anything was written (resume.nothing_left); Ignite would start over
            return last_summary(job.run, f"ended after epoch {trainer.state.epoch}")
        if safety.preemption.any_requested():  # a signal during the setup: every rank decides alike; nothing new to save
            if loaded is None:
                raise StopSignal(safety.preemption.requested or signal.SIGTERM)
            outcome.status = "interrupted"
            return summary
        if loaded is not None:
            position = {"epoch": trainer.state.epoch, "iteration": trainer.state.iteration, "samples": progress(trainer, "run_job").samples}
            job.report.stream.emit({"phase": "resume", **position, "checkpoint": str(loaded)})
        try:
            trainer.run(job.train_loader, max_epochs=cfg.epochs)
        except NonFiniteLoss as e:
            safety.checkpoints.wait()  # an earlier save may still be finishing in the background
            last = Checkpointing.find_latest(safety.checkpoints.dirname)
            raise NonFiniteLoss(f"{e}; stopped without saving; the last good checkpoint is {last or 'none'}") from None
        STOPS.settle()  # the outcome is decided: a signal now would only lose what is being closed
        stopped = safety.preemption.triggered or (safety.interrupt is not None and safety.interrupt.triggered)
        outcome.status = "interrupted" if stopped else "completed"
        if job.profiler is not None and job.place.main:
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


def _same_iteration_on_every_rank(trainer: Any) -> None:
    """Every rank must continue from the same iteration, or DDP mixes steps and hangs."""
    if idist.get_world_size() == 1:
        return
    here = torch.tensor(trainer.state.iteration)
    low, high = idist.all_reduce(here.clone(), op="MIN"), idist.all_reduce(here.clone(), op="MAX")
    if int(low) != int(high):
        raise CheckpointError(f"the workers loaded different checkpoints (iterations {int(low)} to {int(high)})")
