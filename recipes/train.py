"""The training job every recipe runs, top to bottom: BMXNet's loop on Flint's engine and handlers."""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import asdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from ignite.handlers import EarlyStopping, TensorboardLogger
from ignite.metrics import Accuracy, Average, Loss, MeanAbsoluteError, Metric
from torch import nn
from torch.utils.data import DataLoader

from engine import RNGState, batch_size_of, create_evaluator, create_trainer, seed_everything
from handlers import (
    ETA,
    BatchLogger,
    Checkpointing,
    EpochMetrics,
    LRSchedule,
    EpochTimer,
    InterruptAt,
    JsonlSink,
    LoggingSink,
    LRTracker,
    NetSummaries,
    RecordStream,
    TensorBoardSink,
    Validation,
    current_lrs,
    lr_multiplier,
)
from recipes.config import Config, UsageError
from recipes.data import DEVICE_AUGMENT, DeviceTensorLoader, FirstBatches
from recipes.optim import make_loss, make_optimizer, param_groups
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
    "download",
)  # fmt: skip


def config_changes(saved: dict, cfg: Config) -> list[str]:
    """``name=old, now new`` for each option that differs from the saved run's and may not change."""
    new = asdict(cfg)
    return [
        f"{key}={saved[key]!r}, now {new[key]!r}"
        for key in new
        if key in saved and key not in RESUMABLE_CHANGES and saved[key] != new[key]
    ]


def _resume_from(cfg: Config, out: Path) -> Path | None:
    """The checkpoint to resume from, or None for a new run; refuses to mix a new run into an old one."""
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
        logger.info("--resume: no checkpoint in %s yet, starting a new run", out / "checkpoints")
    return found


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _weighted_loss(output: dict) -> torch.Tensor:
    # The batch's mean loss repeated per sample, so Ignite's Average weights batches by size.
    return output["loss"].reshape(1, 1).expand(batch_size_of(output["y"]), 1)


def task_metrics(task: str, loss_fn: nn.Module, device: torch.device) -> tuple[dict, dict, str, str]:
    """(training metrics, validation metrics, monitored metric, "max"|"min") for a recipe's task.

    Classification reports loss and accuracy and keeps the best accuracy; regression reports loss and
    mean absolute error and keeps the lowest loss. All accumulate on ``device``.
    """
    other: Callable[[], Metric] = (
        (lambda: Accuracy(device=device)) if task == "classification" else (lambda: MeanAbsoluteError(device=device))
    )
    name = "accuracy" if task == "classification" else "mae"
    train = {"loss": Average(output_transform=_weighted_loss, device=device), name: other()}
    val = {"loss": Loss(loss_fn, device=device), name: other()}
    return (train, val, "accuracy", "max") if task == "classification" else (train, val, "loss", "min")


def train(cfg: Config, recipe: Recipe) -> str:
    """Run one training job; returns ``"completed"`` or ``"interrupted"`` (a checkpoint was saved)."""
    # --- where the run lives -------------------------------------------------------------------
    out = Path(cfg.output_dir)
    resume_path = _resume_from(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(out / "train.log", encoding="utf-8")
    log_file.setLevel(logging.DEBUG)
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(log_file)
    try:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n", encoding="utf-8")
        logger.info("Run config: %s", json.dumps(asdict(cfg)))
        return _train(cfg, recipe, out, resume_path)
    except Exception:
        logger.debug("Run failed", exc_info=True)
        raise
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()


def _train(cfg: Config, recipe: Recipe, out: Path, resume_path: Path | None) -> str:
    seed_everything(cfg.seed)
    device = torch.device(cfg.device)

    # --- data ----------------------------------------------------------------------------------
    train_set, val_set = recipe.datasets[cfg.dataset](cfg)
    pin = device.type == "cuda"
    val_batch = max(cfg.batch_size, 256)
    train_loader: Any
    val_loader: Any
    if cfg.data_on_device:
        augment = DEVICE_AUGMENT.get(cfg.dataset)
        train_loader = DeviceTensorLoader(train_set, cfg.batch_size, shuffle=True, device=device, augment=augment)
        val_loader = DeviceTensorLoader(val_set, val_batch, shuffle=False, device=device)
    else:
        loading: dict[str, Any] = {"num_workers": cfg.num_workers, "pin_memory": pin, "persistent_workers": cfg.num_workers > 0}
        train_loader = DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, **loading)
        val_loader = DataLoader(val_set, batch_size=val_batch, shuffle=False, **loading)
    if cfg.test_run:
        train_loader, val_loader = FirstBatches(train_loader, 1), FirstBatches(val_loader, 1)

    # --- model, optimizer, engines -------------------------------------------------------------
    model = recipe.build_model().to(device)
    optimizer = build_optimizer(cfg, model)
    loss_fn = make_loss(recipe.task, cfg.loss, cfg.label_smoothing)
    trainer = create_trainer(
        model, optimizer, loss_fn, device=device, accumulation_steps=cfg.update_cycle, amp=cfg.amp, non_blocking=pin
    )
    evaluator = create_evaluator(model, device=device, amp=cfg.amp, non_blocking=pin)
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

    # --- one record stream: log lines, metrics.jsonl, TensorBoard ------------------------------
    tb = TensorboardLogger(log_dir=str(out))
    stream = RecordStream([LoggingSink(logger), JsonlSink(out / "metrics.jsonl"), TensorBoardSink(tb.writer)])

    # --- handlers, in the order they run at each event -----------------------------------------
    timer = EpochTimer().attach(trainer)  # first: its epoch time excludes validation
    schedule.attach(trainer)  # ITERATION_STARTED, before the LR tracker reads it
    train_metrics, val_metrics, monitor, mode = task_metrics(recipe.task, loss_fn, device)
    running = {k: m for k, m in train_metrics.items() if k != "loss"}  # BatchLogger has the interval's loss
    EpochMetrics(
        train_metrics, stream, "training", extra=lambda _: {"epoch_time": timer.last, "lr": current_lrs(optimizer)}
    ).attach(trainer)
    LRTracker(optimizer, stream, every=cfg.log_interval).attach(trainer)
    BatchLogger(stream, every=cfg.log_interval, optimizer=optimizer, metrics=running).attach(trainer)
    NetSummaries(model, tb.writer).attach(trainer)
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
    }  # fmt: skip
    if stopper is not None:
        to_save["early_stopping"] = stopper
    checkpoints = Checkpointing(out / "checkpoints", to_save, n_latest=2, metric=monitor, mode=mode)
    checkpoints.attach(trainer, evaluator, every=cfg.save_frequency)
    interrupt = InterruptAt(cfg.interrupt_at, checkpoints.save_latest).attach(trainer) if cfg.interrupt_at else None
    eta = ETA(cfg.progress_file).attach(trainer)
    if cfg.progress and sys.stderr.isatty():
        from ignite.handlers import ProgressBar

        def bar_fields(output: dict) -> dict:  # tqdm shows the epoch's ETA itself
            return {"loss": output["loss"], "run ETA": _clock_text(eta.estimate(trainer)["run_eta_s"])}

        every = max(1, len(train_loader) // 50)  # redrawing per iteration costs ~85 us each
        ProgressBar(persist=False).attach(trainer, output_transform=bar_fields, event_name=Events.ITERATION_COMPLETED(every=every))

    # --- resume and run ------------------------------------------------------------------------
    status = "failed"
    try:
        if resume_path is not None:
            checkpoints.load(resume_path, map_location=device)
            if trainer.state.epoch >= cfg.epochs:  # Ignite would start over on a finished state
                logger.info("The run in %s already completed %d epochs; nothing to do", out, trainer.state.epoch)
                return "completed"
            if stopper is not None and stopper.counter >= stopper.patience:
                logger.info("The run in %s already stopped early after epoch %d; nothing to do", out, trainer.state.epoch)
                return "completed"
        try:
            trainer.run(train_loader, max_epochs=cfg.epochs)
            status = "interrupted" if interrupt is not None and interrupt.triggered else "completed"
        finally:
            stream.emit(
                {
                    "phase": "summary",
                    "status": status,
                    "epochs": trainer.state.epoch,
                    "samples": getattr(trainer.state, "samples", 0),
                    "best_epoch": checkpoints.best.epoch,
                    f"best_{monitor}": checkpoints.best.value,
                    "avg_epoch_time": timer.average,
                    "stopped_early": stopper is not None and stopper.counter >= stopper.patience,
                }
            )
    finally:
        stream.close()
    return status
