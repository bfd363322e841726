"""What ``flint run`` shows on the terminal: a short header, one line per epoch, the closing lines.

The console reads like Keras's ``fit`` (a real run)::

    10:34:56 lenet on digits: 1,438 training and 359 validation samples; 62,018 parameters
    10:34:56 10 epochs on cpu; writing to runs/lenet (every option in config.json, every record in train.log)
    10:35:03 Epoch  1/10  6.4s  loss 0.7892  accuracy 0.8122  val_loss 0.2214  val_accuracy 0.9331  lr 0.04888
    ...
    10:35:18 Epoch 10/10  0.9s  loss 0.008828  accuracy 1.000  val_loss 0.03185  val_accuracy 0.9944  lr 2.332e-06
    10:35:18 Completed 10 epochs
    10:35:18 Best epoch 4: val_accuracy 0.9944, saved as runs/lenet/checkpoints/best_checkpoint_4_accuracy=0.9944.pt
    10:35:18 Average epoch 1.4s, 1,010 samples/s

Everything goes through ``logging``: the epoch and closing lines through this module's logger, which
both the console and ``train.log`` show; each record in full and the run's config through
:data:`RECORDS`, which :func:`for_console` keeps off the console, as it does Ignite's own lines.
Formatting is in small pure functions (:func:`significant`, :func:`lr_text`, :func:`duration`,
:func:`epoch_line`, :func:`header_lines`, :func:`closing_lines`); :class:`ConsoleSink` only decides
when a line is complete. Nothing here imports torch: the command line starts at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from flint.recipes.app.monitor import Monitor

if TYPE_CHECKING:
    import torch

__all__ = [
    "RECORDS", "LOG_ONLY", "for_console", "route_ignite_logging", "log_to_console", "console_shown", "terminal_shows_progress", "significant",
    "lr_text", "duration", "epoch_values", "epoch_line", "header_lines", "closing_lines", "log_header", "ConsoleSink",
]  # fmt: skip

logger = logging.getLogger(__name__)

RECORDS = logging.getLogger("flint.records")
"""The run's full record lines (``flint.handlers.LoggingSink``) and its config: for ``train.log``, not the console."""

LOG_ONLY = ("ignite", "torch.multiprocessing", RECORDS.name)
"""Loggers whose lines go to ``train.log`` only (with their children): Ignite's own, torch's worker processes'
("Terminating process ... via signal SIGTERM" when a launch stops its workers) and the full records."""

# Ignite's loggers made by ``ignite.utils.setup_logger`` get a stderr handler of their own and stop
# propagating, unless they exist already: setup_logger keeps an existing logger as it is.
IGNITE_SETUP_LOGGERS = (
    "ignite.handlers.early_stopping.EarlyStopping", "ignite.handlers.time_limit.TimeLimit",
    "ignite.handlers.terminate_on_nan.TerminateOnNan", "ignite.distributed.launcher.Parallel",
    "ignite.distributed.auto.auto_dataloader", "ignite.distributed.auto.auto_model", "ignite.distributed.utils",
)  # fmt: skip

# Keys not shown as measured numbers: where the record sits, and the time and LR, which have places of their own.
_POSITION = frozenset({"phase", "epoch", "iteration", "samples", "epoch_time", "lr"})


def for_console(record: logging.LogRecord) -> bool:
    """A ``logging`` filter for the console handler: Flint's own lines, and other libraries' warnings and errors.

    The loggers of :data:`LOG_ONLY` and their children reach ``train.log`` only: Ignite's INFO lines
    ("Engine run starting", "Epoch[1] Complete" after each validation), its ERROR per engine as an
    exception passes (the CLI's one ``flint: error:`` line says it once), the full records. Other
    libraries' INFO lines (torch's, at exit) are not the run's either.

    Example:
        >>> for_console(logging.makeLogRecord({"name": "ignite.engine.engine.Engine", "levelno": logging.ERROR}))
        False
        >>> for_console(logging.makeLogRecord({"name": "flint.recipes.app.console", "levelno": logging.INFO}))
        True
        >>> for_console(logging.makeLogRecord({"name": "torch._subclasses.fake_tensor", "levelno": logging.INFO}))
        False
    """
    if any(record.name == name or record.name.startswith(name + ".") for name in LOG_ONLY):
        return False
    return record.name == "flint" or record.name.startswith("flint.") or record.levelno >= logging.WARNING


def route_ignite_logging() -> None:
    """Ignite's own lines go through the root logger's handlers, at INFO: to ``train.log``; the console drops them (:func:`for_console`).

    Ignite's engines log at INFO when a run starts and an epoch ends; some of its handlers and
    ``ignite.distributed`` log through ``ignite.utils.setup_logger``, which gives each logger a
    stderr handler of its own (those lines bypassed both the console's filter and ``train.log``).
    Those loggers are made here, plain, so Ignite keeps them so; ones made already are reset.
    Not DEBUG: Ignite's engine would then log every event it fires. torch's ``torch.multiprocessing``
    lines, which torch's ``torch`` logger would print itself, are handed to the root logger's handlers too.
    """
    spawn = logging.getLogger("torch.multiprocessing")  # torch's own "torch" logger keeps its lines to itself
    if not any(isinstance(h, _ToRoot) for h in spawn.handlers):
        spawn.addHandler(_ToRoot())
    spawn.propagate = False
    logging.getLogger("ignite").setLevel(logging.INFO)
    made = [name for name, log in logging.root.manager.loggerDict.items()
            if name.startswith("ignite.") and isinstance(log, logging.Logger) and not log.propagate]  # fmt: skip
    for name in {*IGNITE_SETUP_LOGGERS, *made}:
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            log.removeHandler(handler)
        log.setLevel(logging.NOTSET)
        log.propagate = True


class _ToRoot(logging.Handler):
    """Hands each record to the root logger's handlers (for a library logger whose parent keeps its lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


class _ConsoleHandler(logging.StreamHandler):
    """Writes through tqdm, so log lines print above a progress bar instead of through it.

    tqdm's own write lock holds a multiprocessing semaphore, which a data-parallel worker (ended with
    ``os._exit``) would leave to the resource tracker's "leaked semaphore" warning: a thread lock does here.
    """

    def __init__(self, stream: Any) -> None:
        from tqdm import tqdm

        super().__init__(stream)
        tqdm.set_lock(threading.RLock())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def log_to_console(debug: bool = False, rank: int = 0, quiet: bool = False, verbosity: int = 0) -> None:
    """Show on stderr what ``flint run`` shows: the header, epoch and closing lines, warnings and errors.

    Adds one handler to the root logger (replacing one this function added before), filtered by
    :func:`for_console`, and routes Ignite's lines to the root logger (:func:`route_ignite_logging`).
    ``flint`` calls it for the whole process; :func:`flint.recipes.app.fit` for the run only (:func:`console_shown`).

    Args:
        debug: show DEBUG lines too. Default False.
        rank: the process's rank; ranks other than 0 show warnings and errors only. Default 0.
        quiet: show warnings and errors only. Default False.
        verbosity: -1 shows errors only, and no progress bar (``flint run -q``); 1 shows Ignite's own
            lines too (``-v``). Default 0.
    """
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    for old in [h for h in root.handlers if isinstance(h, _ConsoleHandler)]:  # called again in-process
        root.removeHandler(old)
    console = _ConsoleHandler(sys.stderr)
    level = logging.WARNING if quiet or rank > 0 else logging.INFO
    console.setLevel(logging.DEBUG if debug else logging.ERROR if verbosity < 0 else level)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    console.addFilter(for_console if verbosity < 1 else _with_ignite)  # Ignite's own lines and the full records: train.log only
    root.addHandler(console)
    route_ignite_logging()


@contextlib.contextmanager
def console_shown(debug: bool = False) -> Iterator[None]:
    """:func:`log_to_console` for the block only: afterwards the logging configuration is as it was.

    The loggers it changes (the root logger, Ignite's and ``torch.multiprocessing``) get their level,
    handlers and propagation back, and Ignite's ``setup_logger`` loggers that the block made are
    forgotten again, so Ignite makes them afresh, as it would have without the block.
    """
    manager = logging.root.manager  # logging's registry of loggers by name, as route_ignite_logging reads it
    made = [name for name in IGNITE_SETUP_LOGGERS if name not in manager.loggerDict]
    names = {"", "ignite", "torch.multiprocessing", *IGNITE_SETUP_LOGGERS, *(n for n in manager.loggerDict if n.startswith("ignite."))}
    saved = [(log, log.level, list(log.handlers), log.propagate) for log in map(logging.getLogger, sorted(names - set(made)))]
    log_to_console(debug)
    try:
        yield
    finally:
        for log, level, handlers, propagate in saved:
            log.setLevel(level)
            log.handlers[:] = handlers
            log.propagate = propagate
        for name in made:
            manager.loggerDict.pop(name, None)


def _with_ignite(record: logging.LogRecord) -> bool:
    """:func:`for_console` and Ignite's own lines (``-v``)."""
    return for_console(record) or record.name == "ignite" or record.name.startswith("ignite.")


def terminal_shows_progress() -> bool:
    """Whether a progress bar belongs on stderr: a terminal, and no console of :func:`log_to_console` that shows errors only."""
    consoles = [h for h in logging.getLogger().handlers if isinstance(h, _ConsoleHandler)]
    return sys.stderr.isatty() and all(h.level < logging.ERROR for h in consoles)


def significant(value: Any) -> str:
    """A number with 4 significant digits, trailing zeros kept so that columns line up; others as ``str``.

    Example:
        >>> [significant(v) for v in (0.0547912, 0.98467, 1.0, 1234.56, 123456.0, 7, float("nan"))]
        ['0.05479', '0.9847', '1.000', '1235', '1.235e+05', '7', 'nan']
    """
    if isinstance(value, float):
        text = f"{value:#.4g}"
        return text[:-1] if text.endswith(".") else text  # 1235, not "1235."
    return str(value)


def lr_text(lr: Any) -> str:
    """The learning rate with 4 significant digits: one value when every param group has it, else the list.

    Example:
        >>> lr_text([0.0479303, 0.0479303]), lr_text([0.05, 0.005]), lr_text(0.1)
        ('0.04793', '[0.05, 0.005]', '0.1')
    """
    if isinstance(lr, (list, tuple)):
        if lr and all(v == lr[0] for v in lr):
            return f"{lr[0]:.4g}"
        return "[" + ", ".join(f"{v:.4g}" for v in lr) + "]"
    return f"{lr:.4g}" if isinstance(lr, (int, float)) else str(lr)


def duration(seconds: float | None) -> str:
    """A time span as ``40ms``, ``0.9s``, ``12.3s``, ``1m05s`` or ``2h03m``; ``?`` when unknown.

    Example:
        >>> [duration(s) for s in (0.0423, 0.91, 12.34, 59.97, 65.2, 7380.0, None)]
        ['42ms', '0.9s', '12.3s', '1m00s', '1m05s', '2h03m', '?']
    """
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 0.1:
        return f"{seconds * 1000:.0f}ms"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _measured(record: Mapping[str, Any] | None) -> list[tuple[str, Any]]:
    """A record's numbers other than its position, time and LR: the loss first, then in the record's order."""
    if record is None:
        return []
    fields = [(k, v) for k, v in record.items() if k not in _POSITION and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return sorted(fields, key=lambda kv: kv[0] != "loss")  # stable: the others keep their order


def epoch_values(training: Mapping[str, Any] | None, validation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An epoch's numbers as its line shows them: each training one by name, the loss first, then the
    validation ones prefixed ``val_`` (Keras's ``History``). Position, time and LR are left out.

    Example:
        >>> epoch_values({"phase": "training", "epoch": 3, "accuracy": 0.98, "loss": 0.05, "epoch_time": 0.9, "lr": [0.04]},
        ...              {"phase": "validation", "epoch": 3, "loss": 0.1, "accuracy": 0.97})
        {'loss': 0.05, 'accuracy': 0.98, 'val_loss': 0.1, 'val_accuracy': 0.97}
    """
    return {**dict(_measured(training)), **{f"val_{name}": value for name, value in _measured(validation)}}


def epoch_line(epoch: int, epochs: int, training: Mapping[str, Any] | None, validation: Mapping[str, Any] | None = None) -> str:
    """One epoch as Keras prints it: ``Epoch 3/10  0.9s  loss 0.0548  accuracy 0.9847  val_loss ...  lr 0.04``.

    The time and LR come from the ``"training"`` record (the training time, validation excluded);
    each number of both records is shown with 4 significant digits, the loss first, validation's
    prefixed ``val_``. Either record may be None (an epoch without validation).

    Args:
        epoch: the epoch, 1-based.
        epochs: the run's number of epochs.
        training: the epoch's ``"training"`` record, or None.
        validation: the epoch's ``"validation"`` record, or None. Default None.

    Example:
        >>> training = {"phase": "training", "epoch": 3, "iteration": 69, "samples": 4314, "accuracy": 0.98467,
        ...             "loss": 0.0547912, "epoch_time": 0.912, "lr": [0.0479303, 0.0479303]}
        >>> epoch_line(3, 10, training, {"phase": "validation", "epoch": 3, "loss": 0.10583, "accuracy": 0.969359})
        'Epoch  3/10  0.9s  loss 0.05479  accuracy 0.9847  val_loss 0.1058  val_accuracy 0.9694  lr 0.04793'
    """
    parts = [f"Epoch {epoch:>{len(str(epochs))}}/{epochs}"]
    if training is not None and isinstance(training.get("epoch_time"), (int, float)):
        parts.append(duration(training["epoch_time"]))
    parts += [f"{name} {significant(value)}" for name, value in epoch_values(training, validation).items()]
    if training is not None and training.get("lr") is not None:
        parts.append(f"lr {lr_text(training['lr'])}")
    return "  ".join(parts)


def header_lines(
    recipe: str,
    dataset: str,
    train_size: int,
    val_size: int | None,
    parameters: int,
    device: str,
    output_dir: str | os.PathLike[str],
    epochs: int,
    world_size: int = 1,
    test_run: bool = False,
) -> list[str]:
    """The two lines a run opens with: what is trained on what, and where it runs and writes.

    Args:
        recipe: the recipe's name.
        dataset: the dataset's name.
        train_size: training samples.
        val_size: validation samples; None without validation.
        parameters: the model's parameter count.
        device: where it trains, e.g. ``"cpu"``.
        output_dir: the run's directory.
        epochs: the run's number of epochs.
        world_size: data-parallel workers; shown when above 1. Default 1.
        test_run: one batch of each per epoch (``--test-run``); said when True. Default False.

    Example:
        >>> for line in header_lines("lenet", "digits", 1438, 359, 61706, "cpu", "runs/lenet", 10):
        ...     print(line)
        lenet on digits: 1,438 training and 359 validation samples; 61,706 parameters
        10 epochs on cpu; writing to runs/lenet (every option in config.json, every record in train.log)
    """
    sizes = f"{train_size:,} training and {val_size:,} validation samples" if val_size is not None else f"{train_size:,} training samples, no validation"
    first = f"{recipe} on {dataset}: {sizes}; {parameters:,} parameters"
    if test_run:
        first += " (test run: one batch of each per epoch)"
    where = f"{device}, {world_size} workers" if world_size > 1 else device
    second = f"{_count(epochs, 'epoch')} on {where}; writing to {output_dir} (every option in config.json, every record in train.log)"
    return [first, second]


def log_header(
    recipe: str, dataset: str, train_size: int, val_size: int | None, model: torch.nn.Module, device: str | torch.device,
    output_dir: str | os.PathLike[str], epochs: int, world_size: int = 1, test_run: bool = False,
) -> None:  # fmt: skip
    """Logs :func:`header_lines` at INFO through this module's logger, counting ``model``'s parameters."""
    parameters = sum(p.numel() for p in model.parameters())
    for line in header_lines(recipe, dataset, train_size, val_size, parameters, str(device), output_dir, epochs, world_size, test_run):
        logger.info("%s", line)


def closing_lines(
    summary: Mapping[str, Any],
    epochs: int,
    last_line: int | None = None,
    best_checkpoint: str | os.PathLike[str] | None = None,
    resume_hint: str = "run the same command with --resume",
) -> list[str]:
    """What a run ends with: how it ended, its best epoch and checkpoint, its average epoch time.

    A failed or aborted run gets none: the CLI's ``flint: error:`` (or ``flint: interrupted``) line
    says it. An interrupted one says how to continue.

    Args:
        summary: the run's ``"summary"`` record.
        epochs: the run's number of epochs.
        last_line: the last epoch an epoch line was shown for; tells a stop after an epoch from
            one inside it. Default None.
        best_checkpoint: the best checkpoint's path, if any. Default None.
        resume_hint: how to continue an interrupted run. Default ``"run the same command with --resume"``.

    Example:
        >>> summary = {"phase": "summary", "status": "completed", "epochs": 10, "monitor": "accuracy:max", "best_epoch": 8,
        ...            "best_value": 0.98886, "avg_epoch_time": 0.331, "stopped_early": False,
        ...            "samples_per_sec": 4344.2, "model_tflops": 0.00041424}
        >>> for line in closing_lines(summary, 10, 10, "runs/lenet/checkpoints/best_checkpoint_8_accuracy=0.9889.pt"):
        ...     print(line)
        Completed 10 epochs
        Best epoch 8: val_accuracy 0.9889, saved as runs/lenet/checkpoints/best_checkpoint_8_accuracy=0.9889.pt
        Average epoch 0.3s, 4,344 samples/s
    """
    status, epoch = summary.get("status"), summary.get("epochs")
    if status == "completed" and summary.get("stopped_early"):
        lines = [f"Stopped early after epoch {epoch}/{epochs}: the monitored metric stopped improving"]
    elif status == "completed":
        lines = [f"Completed {_count(epoch, 'epoch')}"]
    elif status == "interrupted":
        where = "after" if last_line == epoch else "during"
        lines = [f"Interrupted {where} epoch {epoch}/{epochs} and saved; to continue, {resume_hint}"]
    else:
        return []
    monitor = Monitor.of(summary.get("monitor"))
    if summary.get("best_epoch") is not None and monitor is not None and summary.get("best_value") is not None:
        best = f"Best epoch {summary['best_epoch']}: val_{monitor.name} {significant(summary['best_value'])}"
        lines.append(best + (f", saved as {best_checkpoint}" if best_checkpoint else ""))
    if summary.get("avg_epoch_time") is not None:
        timing = f"Average epoch {duration(summary['avg_epoch_time'])}"
        if summary.get("samples_per_sec"):
            timing += f", {summary['samples_per_sec']:,.0f} samples/s"
        if summary.get("mfu") is not None:
            timing += f", MFU {summary['mfu']:.1%} ({significant(summary['model_tflops'])} TFLOP/s)"
        lines.append(timing)
    return lines


class ConsoleSink:
    """A record sink that logs one line per epoch and a run's closing lines, at INFO.

    An epoch's ``"training"`` record is held until its ``"validation"`` record arrives, then both
    are one :func:`epoch_line`. An epoch without validation is shown alone when a record of a later
    epoch, a ``"resume"`` or the ``"summary"`` arrives, or when the sink is closed. The summary
    adds :func:`closing_lines`. Other records (``"batch"``, ``"lr"``, your handlers' phases) are
    not shown: they are in ``train.log`` and ``metrics.jsonl``.

    Args:
        epochs: the run's number of epochs.
        best_checkpoint: returns the best checkpoint's path (or None) when the run ends; e.g.
            ``lambda: checkpointing.best_checkpoint.last_checkpoint``. Default: none shown.
        logger: where lines go. Default: this module's logger.
        resume_hint: how to continue an interrupted run, for its closing line.

    Example:
        >>> import sys
        >>> shown = logging.getLogger("console-example")
        >>> shown.addHandler(logging.StreamHandler(sys.stdout)); shown.setLevel(logging.INFO); shown.propagate = False
        >>> sink = ConsoleSink(2, logger=shown)
        >>> for record in [{"phase": "training", "epoch": 1, "loss": 0.5, "epoch_time": 1.25, "lr": [0.1]},
        ...                {"phase": "validation", "epoch": 1, "loss": 0.25},
        ...                {"phase": "training", "epoch": 2, "loss": 0.125, "epoch_time": 1.5, "lr": [0.1]},
        ...                {"phase": "summary", "status": "completed", "epochs": 2, "monitor": "loss:min", "best_epoch": 1,
        ...                 "best_value": 0.25}]:
        ...     sink(record)
        Epoch 1/2  1.2s  loss 0.5000  val_loss 0.2500  lr 0.1
        Epoch 2/2  1.5s  loss 0.1250  lr 0.1
        Completed 2 epochs
        Best epoch 1: val_loss 0.2500
    """

    def __init__(
        self,
        epochs: int,
        best_checkpoint: Callable[[], str | os.PathLike[str] | None] | None = None,
        logger: logging.Logger | None = None,
        resume_hint: str = "run the same command with --resume",
    ) -> None:
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"Argument epochs should be a positive integer, got {epochs!r}")
        self.epochs, self.best_checkpoint, self.resume_hint = epochs, best_checkpoint, resume_hint
        self.logger = logger if logger is not None else logging.getLogger(__name__)
        self._training: Mapping[str, Any] | None = None  # an epoch's training record awaiting its validation
        self._last_line: int | None = None  # the last epoch shown

    def __call__(self, record: Mapping[str, Any]) -> None:
        phase, epoch = record.get("phase"), record.get("epoch")
        held = self._training
        if held is not None and (phase in ("training", "resume", "summary") or (isinstance(epoch, int) and epoch > held["epoch"])):
            self._flush()
        if phase == "training":
            self._training = record
        elif phase == "validation" and isinstance(epoch, int):
            training = self._training if self._training is not None and self._training["epoch"] == epoch else None
            self._training = None
            self._show(epoch, training, record)
        elif phase == "summary":
            path = self.best_checkpoint() if self.best_checkpoint is not None else None
            for line in closing_lines(record, self.epochs, self._last_line, path, self.resume_hint):
                self.logger.info("%s", line)

    def _flush(self) -> None:
        if self._training is not None:
            training, self._training = self._training, None
            self._show(training["epoch"], training, None)

    def _show(self, epoch: int, training: Mapping[str, Any] | None, validation: Mapping[str, Any] | None) -> None:
        self._last_line = epoch
        self.logger.info("%s", epoch_line(epoch, self.epochs, training, validation))

    def close(self) -> None:
        """Shows an epoch still held (a run that ended without a summary)."""
        self._flush()
