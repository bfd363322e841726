"""The options of a training run, as one dataclass, and their checks; the resolved copy is saved as ``config.json``.

Each option is a :class:`Config` field whose metadata says how ``flint run`` spells it and what
values it takes. ``flint run`` and :func:`flint.recipes.app.fit` both go through :func:`resolve_config`: the
same names, defaults and checks, before anything is written. Nothing here imports torch, so the
command line answers ``--help`` and every bad option at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "Config", "UsageError", "StopSignal", "Option", "DEVICES", "OPTIMIZERS", "REFUSED_OPTIMIZERS", "LOSSES", "DEFAULT_LOSS", "LR_MODES",
    "TASKS", "resolve_config", "option_fields", "option_name", "check_global_batch", "task_metric_names", "parse_monitor", "monitor_problem",
]  # fmt: skip

DEVICES = ("auto", "cpu", "cuda")
TASKS = ("classification", "regression")
LR_MODES = ("constant", "step", "cosine", "poly")  # flint.handlers.LR_MODES (tested equal)
# optimizer -> the options besides lr and weight decay it takes (the others are refused when given)
OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"), "adam": (), "adamw": (), "adamax": (), "adagrad": (), "adadelta": (),
    "rmsprop": ("momentum",), "rprop": (), "asgd": (), "nadam": (), "radam": (),
}  # fmt: skip
REFUSED_OPTIMIZERS = {
    "lbfgs": "L-BFGS re-evaluates the loss several times per step through a closure, "
    "and Flint's trainer takes one step per update cycle",
}
LOSSES = {
    "classification": ("cross-entropy", "nll", "bce-with-logits", "multi-margin"),
    "regression": ("mse", "l1", "smooth-l1", "huber"),
}
DEFAULT_LOSS = {"classification": "cross-entropy", "regression": "mse"}


class UsageError(ValueError):
    """A bad option or option combination; the CLI prints it in one line and exits 2."""


class StopSignal(BaseException):
    """SIGTERM or SIGINT before training started: the launch ends there, and nothing more is saved.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` on the way swallows it.
    The CLI exits 3 if the run has a checkpoint to resume from, else 128 + the signal's number.
    """

    def __init__(self, signum: int) -> None:
        import signal

        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        super().__init__(f"stopped by {name} before training started")
        self.signum = signum


# --- value checks: each returns what is wrong with a value, or None ---------------------------------


def _positive_int(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else "must be a positive integer"


def _non_negative_int(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else "must be a non-negative integer"


def _number(low: float, high: float = math.inf, low_open: bool = False, high_open: bool = True) -> Callable[[Any], str | None]:
    above = f"> {low:g}" if low_open else f">= {low:g}"
    text = f"must be a finite number {above}" + (f" and {'<' if high_open else '<='} {high:g}" if high != math.inf else "")

    def check(value: Any) -> str | None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return text
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        return None if ok else text

    return check


def _choice(choices: Any) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"choose from {', '.join(choices)}"


def _optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda value: None if value is None else check(value)


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be True or False"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _seed(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
    return None if ok else "must be an integer from 0 to 2**63-1"


def _epoch_list(value: Any) -> str | None:
    ok = isinstance(value, list) and all(_positive_int(e) is None for e in value) and value == sorted(set(value))
    return None if ok else "must be increasing positive epochs, e.g. 30,60,90"


def _lr_mult(value: Any) -> str | None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        return "must map parameter name parts to factors, e.g. fc2=0.1"
    bad = [f"{k}={v}" for k, v in value.items() if _number(0, low_open=True)(v)]
    return f"factors must be finite numbers > 0, got {', '.join(bad)}" if bad else None


def monitor_problem(value: Any) -> str | None:
    """What is wrong with a ``--monitor`` value (``NAME[:min|max]``, or empty for the default), or None."""
    if not isinstance(value, str):
        return "must be NAME or NAME:min or NAME:max"
    name, _, mode = value.partition(":")
    return None if value == "" or (name and mode in ("", "min", "max")) else "must be NAME or NAME:min or NAME:max, e.g. loss:min"


@dataclass(frozen=True)
class Option:
    """How a :class:`Config` field is given on the command line and checked.

    ``flag`` is its CLI spelling (default ``--field-name``); ``kind`` is ``"value"`` (takes a value),
    ``"optional"`` (a value or none), ``"switch"`` (present = True; a ``--no-x`` flag stores False)
    or ``"list"`` (repeatable ``NAME=FACTOR``).
    """

    help: str
    check: Callable[[Any], str | None]
    metavar: str | None = None
    kind: str = "value"
    flag: str | None = None
    short: str | None = None


def _opt(default: Any, help: str, check: Callable[[Any], str | None], **kwargs: Any) -> Any:
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return field(**factory, metadata={"option": Option(help, check, **kwargs)})  # type: ignore[call-overload]


@dataclass
class Config:
    recipe: str  # the recipe: a built-in or entry-point name, path/to/file.py[:NAME] or package.module:NAME
    dataset: str = _opt("", "dataset; default: the recipe's first", _text, metavar="NAME")
    data_dir: str = _opt("data", "where mnist, fashion-mnist and cifar10 are read from (and downloaded to)", _text, metavar="DIR")
    download: bool = _opt(False, "download a missing dataset into --data-dir", _flag, kind="switch")
    num_workers: int = _opt(0, "DataLoader worker processes (0: load in the main process)", _non_negative_int, metavar="N")
    data_on_device: bool = _opt(False, "hold the whole (small) dataset as tensors on the device", _flag, kind="switch")
    epochs: int = _opt(10, "training epochs", _positive_int, metavar="N")
    batch_size: int = _opt(64, "samples per batch, over all workers; one optimizer step sees batch_size * update_cycle", _positive_int, metavar="N")
    lr: float = _opt(0.1, "base learning rate", _number(0, low_open=True), metavar="X")
    optimizer: str = _opt("sgd", "optimizer", _choice(OPTIMIZERS), metavar="{" + ",".join(OPTIMIZERS) + "}")
    momentum: float = _opt(0.9, "momentum (sgd, rmsprop)", _number(0, 1, high_open=False), metavar="X")
    nesterov: bool = _opt(False, "Nesterov momentum (sgd)", _flag, kind="switch")
    wd: float = _opt(1e-4, "weight decay, on weights only: not on biases and normalisation parameters", _number(0), metavar="X")
    wd_all: bool = _opt(False, "weight decay on every parameter, biases and BatchNorm too", _flag, kind="switch")
    loss: str = _opt("", "loss; must fit the recipe's task (default: cross-entropy, or mse for regression)", _text,
                     metavar="{" + ",".join(LOSSES["classification"] + LOSSES["regression"]) + "}")  # fmt: skip
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing", _number(0, 1), metavar="X")
    lr_mult: dict[str, float] = _opt(dict, "parameters whose name contains NAME get lr*FACTOR in their own param group (repeatable)",
                                     _lr_mult, metavar="NAME=FACTOR", kind="list")  # fmt: skip
    log_interval: int = _opt(50, "iterations between batch records", _positive_int, metavar="N")
    update_cycle: int = _opt(1, "batches per optimizer step (gradient accumulation)", _positive_int, metavar="N")
    lr_mode: str = _opt("constant", "LR schedule, updated every iteration", _choice(LR_MODES), metavar="{" + ",".join(LR_MODES) + "}")
    lr_steps: list[int] = _opt(list, "--lr-mode step: epochs after which the LR is multiplied by --lr-factor", _epoch_list, metavar="E1,E2,...")
    lr_factor: float = _opt(0.1, "--lr-mode step: the multiplier at each of --lr-steps", _number(0, low_open=True), metavar="X")
    warmup_epochs: int = _opt(0, "epochs of linear LR warmup before the schedule", _non_negative_int, metavar="N")
    warmup_lr: float = _opt(0.0, "the LR warmup starts from (scaled per group like --lr-mult)", _number(0), metavar="X")
    clip_grad_norm: float | None = _opt(None, "clip the gradients' total L2 norm to X before each optimizer step",
                                        _optional(_number(0, low_open=True)), metavar="X")  # fmt: skip
    seed: int = _opt(42, "seeds torch, NumPy and random: same seed and options give the same metrics", _seed, metavar="N")
    device: str = _opt("auto", "auto (CUDA if available), cpu or cuda", _choice(DEVICES), metavar="{" + ",".join(DEVICES) + "}")
    output_dir: str = _opt("", "where the run's files go (default runs/RECIPE)", _text, metavar="DIR", short="-o")
    resume: str | None = _opt(None, "continue from a checkpoint file or run directory; alone, the latest in the output dir",
                              _optional(_text), metavar="PATH", kind="optional")  # fmt: skip
    interrupt_at: int | None = _opt(None, "after this epoch's validation, save and exit with status 3", _optional(_positive_int), metavar="EPOCH")
    val_every: int = _opt(1, "epochs between validations (the last epoch is always validated)", _positive_int, metavar="N")
    monitor: str = _opt("", "the validation metric that picks the best checkpoint and drives early stopping, and its "
                        "direction (default accuracy:max, or loss:min for regression)", monitor_problem, metavar="NAME[:min|max]")  # fmt: skip
    early_stopping: int | None = _opt(None, "stop after N validations without improving the monitored metric",
                                      _optional(_positive_int), metavar="PATIENCE")  # fmt: skip
    save_frequency: int = _opt(1, "epochs between checkpoints (the last epoch and any stop are always saved)", _positive_int, metavar="N")
    test_run: bool = _opt(False, "one training and one validation batch per epoch", _flag, kind="switch")
    progress: bool = _opt(True, "no progress bar (shown only when stderr is a terminal)", _flag, kind="switch", flag="--no-progress")
    progress_file: str | None = _opt(None, "keep epoch and run ETA in this JSON file, for schedulers", _optional(_text), metavar="PATH")
    amp: bool = _opt(False, "autocast in bfloat16 (float16 with a GradScaler on CUDA without bf16)", _flag, kind="switch")
    channels_last: bool = _opt(False, "channels-last memory format for model and images (for GPUs)", _flag, kind="switch")
    compile: bool = _opt(False, "torch.compile the model; the first iterations include the compile", _flag, kind="switch")
    nproc_per_node: int = _opt(1, "data-parallel workers spawned on this machine (gloo on CPU, nccl on CUDA)", _positive_int, metavar="N")
    profile: bool = _opt(False, "log each handler's cost (Ignite's HandlersTimeProfiler) at the end", _flag, kind="switch")


def option_fields() -> list[Any]:
    """The :class:`Config` fields that are options (every field but ``recipe``), in order."""
    return [f for f in fields(Config) if "option" in f.metadata]


def option_name(name: str, style: str) -> str:
    """How an option is named in messages: ``--batch-size`` (``style="cli"``) or ``batch_size`` (``"python"``)."""
    if style == "python":
        return name
    opt: Option = next(f for f in fields(Config) if f.name == name).metadata["option"]
    return opt.flag or "--" + name.replace("_", "-")


def task_metric_names(task: str) -> tuple[str, ...]:
    """The validation metrics of a task (what ``--monitor`` may name)."""
    return ("loss", "accuracy") if task == "classification" else ("loss", "mae")


def parse_monitor(monitor: str, task: str) -> tuple[str, str]:
    """``(metric, "max"|"min")`` from ``NAME[:min|max]``; ``""`` is the task's default.

    Example:
        >>> parse_monitor("", "classification"), parse_monitor("loss", "classification"), parse_monitor("mae:max", "regression")
        (('accuracy', 'max'), ('loss', 'min'), ('mae', 'max'))
    """
    if not monitor:
        return ("accuracy", "max") if task == "classification" else ("loss", "min")
    name, _, mode = monitor.partition(":")
    return name, mode or ("max" if name == "accuracy" else "min")


def check_global_batch(batch_size: int, workers: int) -> None:
    """``--batch-size`` is global: each of ``workers`` data-parallel workers takes an equal share."""
    if batch_size % workers:
        raise UsageError(f"--batch-size {batch_size} is global: it must divide among {workers} workers")


def resolve_config(
    recipe: Any, given: Mapping[str, Any], style: str = "cli", spec: str | None = None, typed: set[str] | None = None
) -> Config:
    """The recipe's defaults, overridden by the options ``given``, checked one by one and together.

    ``recipe`` is a :class:`flint.recipes.Recipe`; ``spec`` how it was named (default its name); ``typed``
    the options the user gave now (default: all of ``given``), which alone are refused when the
    optimizer would ignore them (``flint resume`` gives the saved ones too). Raises
    :class:`UsageError` naming the first bad option as ``style`` spells it (``"cli"`` or ``"python"``).
    Checks that need the model or torch (``--lr-mult`` names, a CUDA device) come later, in the run.
    """
    def name(option: str) -> str:
        return option_name(option, style)

    def show(option: str, value: Any) -> str:
        if style == "python":
            return f"{option}={value!r}"
        if isinstance(value, bool):
            return name(option)
        if isinstance(value, Mapping):
            return " ".join(f"{name(option)} {k}={v:g}" if isinstance(v, (int, float)) else f"{name(option)} {k}={v}" for k, v in value.items())
        if isinstance(value, list):
            return f"{name(option)} {','.join(map(str, value))}"
        return f"{name(option)} {value:g}" if isinstance(value, float) else f"{name(option)} {value}"

    known = {f.name for f in option_fields()}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UsageError(f"unknown option {', '.join(map(repr, unknown))}; the options are {', '.join(sorted(known))}")
    values = {**recipe.defaults, **given}
    for f in option_fields():
        if f.name in values:
            problem = f.metadata["option"].check(values[f.name])
            if problem:
                raise UsageError(f"{show(f.name, values[f.name])}: {problem}")
    values["dataset"] = values.get("dataset") or recipe.default_dataset
    if values["dataset"] not in recipe.datasets:
        raise UsageError(f"{show('dataset', values['dataset'])}: {recipe.name} takes {', '.join(recipe.datasets)}")
    values["output_dir"] = values.get("output_dir") or f"runs/{recipe.name}"
    values["loss"] = values.get("loss") or DEFAULT_LOSS[recipe.task]
    cfg = Config(recipe=spec or recipe.name, **values)
    _check_together(cfg, recipe, set(given) if typed is None else typed, name, show)
    return cfg


def _check_together(cfg: Config, recipe: Any, given: set[str], name: Callable[[str], str], show: Callable[[str, Any], str]) -> None:
    if cfg.loss not in LOSSES[recipe.task]:
        raise UsageError(f"{show('loss', cfg.loss)} does not fit {recipe.task}; choose from {', '.join(LOSSES[recipe.task])}")
    if cfg.label_smoothing and cfg.loss != "cross-entropy":
        raise UsageError(f"{name('label_smoothing')} applies to the cross-entropy loss, not {cfg.loss}")
    for option in ("momentum", "nesterov"):  # given for an optimizer that would ignore it
        if option in given and option not in OPTIMIZERS[cfg.optimizer] and getattr(cfg, option):
            takes = [o for o, extra in OPTIMIZERS.items() if option in extra]
            raise UsageError(f"{name(option)}: {cfg.optimizer} takes no {option} (it applies to {', '.join(takes)})")
    if cfg.nesterov and cfg.momentum <= 0:
        raise UsageError(f"{name('nesterov')} needs a positive {name('momentum')}")
    if cfg.optimizer == "rprop" and cfg.wd:
        raise UsageError(f"{show('optimizer', 'rprop')} has no weight decay; pass {show('wd', 0)}")
    if cfg.interrupt_at is not None and cfg.interrupt_at >= cfg.epochs:
        raise UsageError(f"{show('interrupt_at', cfg.interrupt_at)}: must be below {show('epochs', cfg.epochs)}")
    if cfg.warmup_epochs >= cfg.epochs:
        raise UsageError(f"{show('warmup_epochs', cfg.warmup_epochs)}: must be below {show('epochs', cfg.epochs)}")
    if cfg.lr_mode == "step" and not cfg.lr_steps:
        raise UsageError(f"{show('lr_mode', 'step')} needs {name('lr_steps')}: the epochs after which to decay")
    if cfg.lr_steps and cfg.lr_mode != "step":
        raise UsageError(f"{name('lr_steps')} applies to {show('lr_mode', 'step')}, not {cfg.lr_mode}")
    if cfg.data_on_device and cfg.num_workers:
        raise UsageError(f"{name('data_on_device')} serves batches from device memory; it takes no {name('num_workers')}")
    metric, _ = parse_monitor(cfg.monitor, recipe.task)
    if metric not in task_metric_names(recipe.task):
        raise UsageError(f"{show('monitor', cfg.monitor)}: {recipe.task} validates {', '.join(task_metric_names(recipe.task))}")
    check_global_batch(cfg.batch_size, cfg.nproc_per_node)
