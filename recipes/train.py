"""The training job every recipe runs, top to bottom: BMXNet's loop on Flint's engine and handlers."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import sys
import threading
from dataclasses import asdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Events
from ignite.handlers import EarlyStopping, TensorboardLogger
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
    EpochMetrics,
    LRSchedule,
    EpochTimer,
    InterruptAt,
    JsonlSink,
    LoggingSink,
    LossGuard,
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

__all__ = ["train", "build_optimizer", "resolve_device", "task_metrics", "config_changes"]

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


def _resume_from(cfg: Config, out: Path) -> Path | str | None:
    """The checkpoint to resume from, "latest" for the newest valid one, or None for a new run.

    Refuses to mix a new run into an old one, and a resume that changes what is trained."""
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


def train(cfg: Config, recipe: Recipe) -> str:
    """Run one training job; returns ``"completed"`` or ``"interrupted"`` (a checkpoint was saved).

    Raises ``NonFiniteLoss`` when the loss becomes NaN or infinite (status ``"failed"``) and
    ``KeyboardInterrupt`` on a second stop signal (status ``"aborted"``)."""
    # --- where the run lives (rank 0 writes the files; every rank checks first) -----------------
    out = Path(cfg.output_dir)
    resume_path = _resume_from(cfg, out)
    world = idist.get_world_size()
    check_global_batch(cfg.batch_size, world)  # also for callers that did not come through the CLI
    idist.barrier()  # no rank may see rank 0's new files as "a run already there"
    if idist.get_rank() > 0:
        return _train(cfg, recipe, out, resume_path)
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
        if world > 1:
            logger.info("Data-parallel on %d workers (%s): %d samples per worker batch", world, idist.backend(), cfg.batch_size // world)
        return _train(cfg, recipe, out, resume_path)
    except Exception:
        logger.debug("Run failed", exc_info=True)
        raise
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


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


def _train(cfg: Config, recipe: Recipe, out: Path, resume_path: Path | str | None) -> str:
    seed_everything(cfg.seed)  # the same on every rank: same initial weights, dropout masks
    device = torch.device(cfg.device)
    rank, world = idist.get_rank(), idist.get_world_size()
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", idist.get_local_rank())
        torch.cuda.set_device(device)
    batch_size = cfg.batch_size // world  # --batch-size is global

    # --- data ----------------------------------------------------------------------------------
    train_set, val_set = recipe.datasets[cfg.dataset](cfg)
    pin = device.type == "cuda"
    val_batch = max(batch_size, 256)
    train_loader: Any
    val_loader: Any
    shard = {"num_replicas": world, "rank": rank}
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
        # The order is a function of (seed, epoch), so a run resumed mid-epoch sees the same batches;
        # with several workers each takes its shard (DistributedSampler's, plus skip for resumes).
        sampler = EpochSampler(len(train_set), seed=cfg.seed, **shard)  # type: ignore[arg-type]
        train_loader = DataLoader(train_set, batch_size=batch_size, sampler=sampler, generator=sampler.generator, **loading)
        val_sampler = EpochSampler(len(val_set), shuffle=False, pad=False, **shard)  # type: ignore[arg-type]
        val_loader = DataLoader(val_set, batch_size=val_batch, sampler=val_sampler, **loading)
    if cfg.test_run:
        train_loader, val_loader = FirstBatches(train_loader, 1), FirstBatches(val_loader, 1)

    # --- model, optimizer, engines -------------------------------------------------------------
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
    prepare = channels_last_batch if cfg.channels_last else None
    trainer = create_trainer(
        net, optimizer, loss_fn, device=device, accumulation_steps=cfg.update_cycle, amp=cfg.amp, non_blocking=pin,
        prepare_batch=prepare,
    )  # fmt: skip
    evaluator = create_evaluator(eval_net, device=device, amp=cfg.amp, non_blocking=pin, prepare_batch=prepare)
    schedule = LRSchedule(
        optimizer,
        functools.partial(
            lr_multiplier,
            mode=cfg.lr_mode,
            steps_per_epoch=len(train_loader),
            epochs=cfg.epochs,
            milestones=cfg.lr_steps,
            factor=cfg.lr_factor,
            warmup_epochs=cfg.warmup_epochs,
            warmup_start=cfg.warmup_lr / cfg.lr,
        ),
    )

    # --- one record stream: log lines, metrics.jsonl, TensorBoard (rank 0; the others, no sinks) --
    tb = TensorboardLogger(log_dir=str(out)) if rank == 0 else None
    stream = RecordStream([LoggingSink(logger), JsonlSink(out / "metrics.jsonl"), TensorBoardSink(tb.writer)] if tb else [])

    # --- handlers, in the order they run at each event -----------------------------------------
    DataOrder(sampler, batch_size).attach(trainer)  # the epoch's order; skips what a resumed epoch did
    timer = EpochTimer().attach(trainer)  # first: its epoch time excludes validation
    if cfg.lr_mode != "constant" or cfg.warmup_epochs:  # a constant LR needs no per-iteration work
        schedule.attach(trainer)  # ITERATION_STARTED, before the LR tracker reads it
    train_metrics, val_metrics, monitor, mode = task_metrics(recipe.task, loss_fn, device)
    training = training_records(train_metrics, stream, timer, optimizer).attach(trainer)
    LRTracker(optimizer, stream, every=cfg.log_interval).attach(trainer)
    batches = BatchLogger(stream, every=cfg.log_interval, optimizer=optimizer, metrics=train_metrics).attach(trainer)
    if tb is not None:
        NetSummaries(model, tb.writer).attach(trainer)
    guard = LossGuard(every=cfg.log_interval).attach(trainer)  # NaN/inf: stop before validating or saving
    Validation(evaluator, val_loader).attach(trainer)
    EpochMetrics(val_metrics, stream, "validation", trainer=trainer).attach(evaluator)
    stopper = None
    if cfg.early_stopping:
        # Ignite's, on the evaluator; not reset at the trainer's STARTED, which would wipe a resumed patience.
        stopper = EarlyStopping(cfg.early_stopping, lambda e: e.state.metrics[monitor], trainer, mode=mode)  # type: ignore[arg-type]
        evaluator.add_event_handler(Events.COMPLETED, stopper)
    scaler = trainer.scaler  # type: ignore[attr-defined]  # create_trainer's GradScaler (disabled unless fp16)
    to_save = {
        "model": model, "optimizer": optimizer, "trainer": trainer, "scaler": scaler, "scheduler": schedule, "rng": RNGState(),
        # what a checkpoint taken mid-epoch needs to finish the epoch's records as an unbroken run would
        "training_metrics": training, "batch_logger": batches, "epoch_timer": timer,
    }  # fmt: skip
    if stopper is not None:
        to_save["early_stopping"] = stopper
    checkpoints = Checkpointing(out / "checkpoints", to_save, n_latest=2, metric=monitor, mode=mode)
    checkpoints.attach(trainer, evaluator, every=cfg.save_frequency)
    interrupt = InterruptAt(cfg.interrupt_at, checkpoints.save_latest).attach(trainer) if cfg.interrupt_at else None

    def save_now(engine: Any) -> None:  # a checkpoint between epochs: only if every loss so far was finite
        guard.check(engine)
        checkpoints.save_latest(engine)

    preemption = Preemption(save_now, agree=_any_rank()).attach(trainer)  # SIGTERM/SIGINT: save at the next update and exit 3
    eta = ETA(cfg.progress_file if rank == 0 else None).attach(trainer)
    if cfg.progress and sys.stderr.isatty() and rank == 0:
        from ignite.handlers import ProgressBar

        def bar_fields(output: dict) -> dict:  # tqdm shows the epoch's ETA itself
            return {"loss": output["loss"], "run ETA": _clock_text(eta.estimate(trainer)["run_eta_s"])}

        every = max(1, len(train_loader) // 50)  # redrawing per iteration costs ~85 us each
        ProgressBar(persist=False).attach(trainer, output_transform=bar_fields, event_name=Events.ITERATION_COMPLETED(every=every))

    profiler = None
    if cfg.profile:
        from ignite.handlers import HandlersTimeProfiler

        profiler = HandlersTimeProfiler()
        profiler.attach(trainer)

        def reraise(engine: Any, error: BaseException) -> None:  # the profiler leaves an EXCEPTION_RAISED
            raise error  # entry, and Ignite would then swallow every error (a NaN stop would exit 0)

        trainer.add_event_handler(Events.EXCEPTION_RAISED, reraise)

    # --- resume and run ------------------------------------------------------------------------
    status = "failed"
    failing = False  # an error is on its way out: a sink failing too (a full disk) must not replace it
    try:
        if resume_path == "latest":
            resume_path = checkpoints.load_latest_valid(map_location=device)
        elif resume_path is not None:
            checkpoints.load(resume_path, map_location=device)
        if world > 1:  # every rank must continue from the same iteration, or DDP mixes steps and hangs
            here = torch.tensor(trainer.state.iteration)
            low, high = idist.all_reduce(here.clone(), op="MIN"), idist.all_reduce(here.clone(), op="MAX")
            if int(low) != int(high):
                raise CheckpointError(f"the workers loaded different checkpoints (iterations {int(low)} to {int(high)})")
        if resume_path is not None:
            if trainer.state.epoch >= cfg.epochs:  # Ignite would start over on a finished state
                logger.info("The run in %s already completed %d epochs; nothing to do", out, trainer.state.epoch)
                return "completed"
            if stopper is not None and stopper.counter >= stopper.patience:
                logger.info("The run in %s already stopped early after epoch %d; nothing to do", out, trainer.state.epoch)
                return "completed"
            position = {"epoch": trainer.state.epoch, "iteration": trainer.state.iteration}
            stream.emit({"phase": "resume", **position, "samples": trainer.state.samples, "checkpoint": str(resume_path)})  # type: ignore[attr-defined]
        try:
            with preemption.signal_handlers():
                trainer.run(train_loader, max_epochs=cfg.epochs)
            stopped = preemption.triggered or (interrupt is not None and interrupt.triggered)
            status = "interrupted" if stopped else "completed"
            if profiler is not None and rank == 0:
                logger.info("Handler costs (--profile):\n%s", profile_table(profiler, trainer))
        except NonFiniteLoss as e:
            checkpoints.wait()  # an earlier save may still be finishing in the background
            last = Checkpointing.find_latest(out / "checkpoints")
            raise NonFiniteLoss(f"{e}; stopped without saving; the last good checkpoint is {last or 'none'}") from None
        except KeyboardInterrupt:
            status = "aborted"
            raise
        finally:
            summary = {
                "phase": "summary",
                "status": status,
                "epochs": trainer.state.epoch,
                "samples": getattr(trainer.state, "samples", 0),
                "best_epoch": checkpoints.best.epoch,
                f"best_{monitor}": checkpoints.best.value,
                "avg_epoch_time": timer.average,
                "stopped_early": stopper is not None and stopper.counter >= stopper.patience,
                **_throughput(trainer, timer.average, flops_per_sample, peak_flops(device, cfg.amp)),
            }
            try:
                stream.emit(summary)
            except Exception:
                if status in ("completed", "interrupted"):  # nothing else failed: this error is the one
                    raise
                logger.debug("Writing the summary failed too", exc_info=True)
    except BaseException:
        failing = True
        raise
    finally:
        try:
            checkpoints.wait()  # on an error, a save may still be finishing (COMPLETED waits otherwise)
        except Exception:
            if not failing:
                raise
            logger.debug("A checkpoint write failed too", exc_info=True)
        try:
            stream.close()
        except Exception:
            if not failing:
                raise
            logger.debug("Closing the record sinks failed too", exc_info=True)
    return status
