"""The options of a training run, as one dataclass, and their checks; the resolved copy is saved as ``config.json``.

Each option is a :class:`Config` field whose :class:`Option` holds every fact about it: its help, its
check, how ``flint run`` spells and parses it, whether a resumed run may change it, and whether it is
an option of the command line, of :func:`flint.recipes.fit`, or both. ``flint run`` and ``fit()`` both go
through :func:`resolve_config`: the same names, defaults and checks, before anything is written.
Nothing here imports torch, so the command line answers ``--help`` and every bad option at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from flint.recipes.app.monitor import Monitor
from flint.recipes.app.tasks import METRICS, TASKS, canonical_task, metrics_problem, run_task, task_problem, validated

__all__ = [
    "Config", "UsageError", "Option", "DEVICES", "OPTIMIZERS", "REFUSED_OPTIMIZERS", "LOSSES", "DEFAULT_LOSS", "LR_MODES",
    "TASKS", "FLOAT32_MAX", "resolve_config", "option_fields", "option_name", "option_text", "style_of", "check_global_batch",
    "config_changes", "RunConfig", "resume_refusal",
]  # fmt: skip

DEVICES = ("auto", "cpu", "cuda")
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
    "multiclass": ("cross-entropy", "nll", "bce-with-logits", "multi-margin"),
    "binary": ("bce-with-logits",),
    "multilabel": ("bce-with-logits",),
    "regression": ("mse", "l1", "smooth-l1", "huber"),
}
DEFAULT_LOSS = {"multiclass": "cross-entropy", "binary": "bce-with-logits", "multilabel": "bce-with-logits", "regression": "mse"}
FLOAT32_MAX = 3.4028234663852886e38  # learning rates and weight decay become float32 tensors in torch's optimizers
INT32_MAX = 2**31 - 1  # counts and sizes: what a DataLoader, a range or a C int takes


class UsageError(ValueError):
    """A bad option or option combination; the CLI prints it in one line and exits 2."""


# --- value checks: each returns what is wrong with a value, or None ---------------------------------


def _int_in(low: int, high: int = INT32_MAX) -> Callable[[Any], str | None]:
    text = ("a positive integer" if low == 1 else "a non-negative integer" if low == 0 else f"an integer >= {low}") + f" up to {high:,}"

    def check(value: Any) -> str | None:
        return None if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high else f"must be {text}"

    return check


def _number(low: float, high: float = FLOAT32_MAX, low_open: bool = False, high_open: bool = False) -> Callable[[Any], str | None]:
    above = f"> {low:g}" if low_open else f">= {low:g}"
    below = f"{'<' if high_open else '<='} {high:g}"
    text = f"must be a finite number {above} and {below}"

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
    ok = isinstance(value, list) and all(_int_in(1)(e) is None for e in value) and value == sorted(set(value))
    return None if ok else "must be increasing positive epochs, e.g. 30,60,90"


def _lr_mult(value: Any) -> str | None:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and k for k in value):
        return "must map parameter name parts to factors, e.g. fc2=0.1"
    bad = [f"{k}={v}" for k, v in value.items() if _number(0, low_open=True)(v)]
    return f"factors must be finite numbers > 0 and <= {FLOAT32_MAX:g}, got {', '.join(bad)}" if bad else None


def _tracking_uri(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return "must be an MLflow tracking URI, or '' for MLflow's default"
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        return "MLflow is not installed: pip install mlflow-skinny sqlalchemy alembic (Flint's extra 'mlflow')"
    return None


# --- option text -> value: the command line's parsers ------------------------------------------------


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _parse_epochs(text: str) -> list[int]:
    return [_parse_int(part) for part in text.split(",")]


def _parse_name_factor(text: str) -> tuple[str, float]:
    name, sep, factor = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=FACTOR, e.g. fc2=0.1")
    return name, _parse_float(factor)


def _parse_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _names(value: Any) -> str | None:
    return None if isinstance(value, list) and all(isinstance(n, str) for n in value) else "must be a list of metric names"


def _parse_optimizer(name: str) -> str:
    if name in REFUSED_OPTIMIZERS:
        raise argparse.ArgumentTypeError(f"{name} is not supported: {REFUSED_OPTIMIZERS[name]}; choose from {', '.join(OPTIMIZERS)}")
    return name


@dataclass(frozen=True)
class Option:
    """Every fact about one :class:`Config` field.

    ``flag`` is its CLI spelling (default ``--field-name``); ``kind`` is ``"value"`` (takes a value),
    ``"optional"`` (a value or none), ``"switch"`` (present = True; a ``--no-x`` flag stores False)
    or ``"list"`` (repeatable ``NAME=FACTOR``); ``parse`` turns the command line's text into the value;
    ``resumable`` says a resumed run may change it (it does not alter what is trained); ``scope`` is
    ``"both"``, ``"cli"`` (the data and files of a recipe; ``fit()`` takes its own) or ``"python"``;
    ``step`` says it shapes one training step (``flint lr-find`` takes it; the run's length, schedule,
    stops, checkpoints and reporting do not).
    """

    help: str
    check: Callable[[Any], str | None]
    metavar: str | None = None
    kind: str = "value"
    flag: str | None = None
    short: str | None = None
    parse: Callable[[str], Any] = str
    resumable: bool = False
    scope: str = "both"
    step: bool = True


def _opt(default: Any, help: str, check: Callable[[Any], str | None], **kwargs: Any) -> Any:
    factory = {"default_factory": default} if callable(default) else {"default": default}
    return field(**factory, metadata={"option": Option(help, check, **kwargs)})  # type: ignore[call-overload]


_INT, _FLOAT = {"parse": _parse_int}, {"parse": _parse_float}


@dataclass
class Config:
    recipe: str  # the recipe: a built-in or entry-point name, path/to/file.py[:NAME] or package.module:NAME
    dataset: str = _opt("", "dataset; default: the recipe's first", _text, metavar="NAME", scope="cli")
    data_dir: str = _opt("data", "where mnist, fashion-mnist and cifar10 are read from (and downloaded to)", _text, metavar="DIR",
                         resumable=True, scope="cli")  # fmt: skip
    download: bool = _opt(False, "download a missing dataset into --data-dir", _flag, kind="switch", resumable=True, scope="cli")
    num_workers: int = _opt(0, "DataLoader worker processes (0: load in the main process)", _int_in(0, 1024), metavar="N", resumable=True, **_INT)
    data_on_device: bool = _opt(False, "hold the whole (small) dataset as tensors on the device", _flag, kind="switch")
    epochs: int = _opt(10, "training epochs (a resumed run may have more, not fewer)", _int_in(1, 10**6), metavar="N", resumable=True, **_INT, step=False)
    batch_size: int = _opt(64, "samples per batch, over all workers; one optimizer step sees batch_size * update_cycle",
                           _int_in(1, 2**24), metavar="N", **_INT)  # fmt: skip
    lr: float = _opt(0.1, "base learning rate", _number(0, low_open=True), metavar="X", **_FLOAT, step=False)
    optimizer: str = _opt("sgd", "optimizer", _choice(OPTIMIZERS), metavar="{" + ",".join(OPTIMIZERS) + "}", parse=_parse_optimizer)
    momentum: float = _opt(0.9, "momentum (sgd, rmsprop)", _number(0, 1), metavar="X", **_FLOAT)
    nesterov: bool = _opt(False, "Nesterov momentum (sgd)", _flag, kind="switch")
    wd: float = _opt(1e-4, "weight decay, on weights only: not on biases and normalisation parameters", _number(0), metavar="X", **_FLOAT)
    wd_all: bool = _opt(False, "weight decay on every parameter, biases and BatchNorm too", _flag, kind="switch")
    loss: str = _opt("", "loss; must fit the task (default: cross-entropy, bce-with-logits for binary and multilabel, mse for "
                     "regression)", _text, metavar="{" + ",".join(dict.fromkeys(n for names in LOSSES.values() for n in names)) + "}")  # fmt: skip
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing", _number(0, 1, high_open=True), metavar="X", **_FLOAT)
    lr_mult: dict[str, float] = _opt(dict, "parameters whose name contains NAME get lr*FACTOR in their own param group (repeatable)",
                                     _lr_mult, metavar="NAME=FACTOR", kind="list", parse=_parse_name_factor)  # fmt: skip
    log_interval: int = _opt(50, "iterations between batch records", _int_in(1), metavar="N", resumable=True, **_INT, step=False)
    update_cycle: int = _opt(1, "batches per optimizer step (gradient accumulation)", _int_in(1, 2**20), metavar="N", **_INT)
    lr_mode: str = _opt("constant", "LR schedule, updated every iteration", _choice(LR_MODES), metavar="{" + ",".join(LR_MODES) + "}", step=False)
    lr_steps: list[int] = _opt(list, "--lr-mode step: epochs after which the LR is multiplied by --lr-factor", _epoch_list,
                               metavar="E1,E2,...", parse=_parse_epochs, step=False)  # fmt: skip
    lr_factor: float = _opt(0.1, "--lr-mode step: the multiplier at each of --lr-steps", _number(0, low_open=True), metavar="X", **_FLOAT, step=False)
    warmup_epochs: int = _opt(0, "epochs of linear LR warmup before the schedule", _int_in(0, 10**6), metavar="N", **_INT, step=False)
    warmup_lr: float = _opt(0.0, "the LR warmup starts from (scaled per group like --lr-mult)", _number(0), metavar="X", **_FLOAT, step=False)
    clip_grad_norm: float | None = _opt(None, "clip the gradients' total L2 norm to X before each optimizer step",
                                        _optional(_number(0, low_open=True)), metavar="X", **_FLOAT)  # fmt: skip
    seed: int = _opt(42, "seeds torch, NumPy and random: same seed and options give the same metrics", _seed, metavar="N", **_INT)
    device: str = _opt("auto", "auto (CUDA if available), cpu or cuda", _choice(DEVICES), metavar="{" + ",".join(DEVICES) + "}",
                       resumable=True)  # fmt: skip
    output_dir: str = _opt("", "where the run's files go (default runs/RECIPE)", _text, metavar="DIR", short="-o", resumable=True)
    resume: str | None = _opt(None, "continue from a checkpoint file or run directory; alone, the latest in the output dir",
                              _optional(_text), metavar="PATH", kind="optional", resumable=True, step=False)  # fmt: skip
    interrupt_at: int | None = _opt(None, "after this epoch's validation, save and exit with status 3", _optional(_int_in(1, 10**6)),
                                    metavar="EPOCH", resumable=True, **_INT, step=False)  # fmt: skip
    val_every: int = _opt(1, "epochs between validations (the last epoch is always validated)", _int_in(1, 10**6), metavar="N", **_INT, step=False)
    monitor: str = _opt("", "the validation metric that picks the best checkpoint and drives early stopping, and its "
                        "direction (default accuracy:max, or loss:min for regression)", Monitor.problem, metavar="NAME[:min|max]", step=False)  # fmt: skip
    early_stopping: int | None = _opt(None, "stop after N validations without improving the monitored metric",
                                      _optional(_int_in(1, 10**6)), metavar="PATIENCE", **_INT, step=False)  # fmt: skip
    save_frequency: int = _opt(1, "epochs between checkpoints (the last epoch and any stop are always saved)", _int_in(1, 10**6),
                               metavar="N", **_INT, step=False)  # fmt: skip
    test_run: bool = _opt(False, "one training and one validation batch per epoch", _flag, kind="switch")
    progress: bool = _opt(True, "no progress bar (shown only when stderr is a terminal)", _flag, kind="switch", flag="--no-progress",
                          resumable=True, step=False)  # fmt: skip
    progress_file: str | None = _opt(None, "keep epoch and run ETA in this JSON file, for schedulers", _optional(_text), metavar="PATH",
                                     resumable=True, step=False)  # fmt: skip
    amp: bool = _opt(False, "autocast in bfloat16 (float16 with a GradScaler on CUDA without bf16)", _flag, kind="switch")
    channels_last: bool = _opt(False, "channels-last memory format for model and images (for GPUs)", _flag, kind="switch")
    compile: bool = _opt(False, "torch.compile the model; the first iterations include the compile", _flag, kind="switch")
    nproc_per_node: int = _opt(1, "data-parallel workers spawned on this machine (gloo on CPU, nccl on CUDA)", _int_in(1, 1024),
                               metavar="N", resumable=True, **_INT, step=False)  # fmt: skip
    profile: bool = _opt(False, "log each handler's cost (Ignite's HandlersTimeProfiler) at the end", _flag, kind="switch", resumable=True, step=False)
    # tasks and metrics (flint.recipes.app.tasks)
    task: str = _opt("", "the task, for a recipe that leaves it out: multiclass (also: classification), binary, multilabel or "
                     "regression; a recipe that sets its task takes only that one (default: the recipe's, else multiclass)",
                     task_problem, metavar="{" + ",".join(TASKS) + "}")  # fmt: skip
    metrics: list[str] = _opt(list, "validation metrics besides the loss and accuracy (mae for regression), by task: "
                              + "; ".join(f"{task}: {', '.join(names)}" for task, names in METRICS.items()) + " (default: the recipe's)",
                              _names, metavar="NAME,...", parse=_parse_names, resumable=True, step=False)  # fmt: skip
    # starting afresh over a finished run, or from another run's weights
    overwrite: bool = _opt(False, "start afresh in an output dir holding a finished or interrupted run: its Flint files are removed "
                           "(train.log kept as train.log.1)", _flag, kind="switch", resumable=True, step=False)  # fmt: skip
    init_from: str | None = _opt(None, "start a new run from the weights of this run (its best checkpoint) or checkpoint file, "
                                 "with a fresh optimizer and LR schedule", _optional(_text), metavar="RUN_DIR_OR_CHECKPOINT",
                                 resumable=True)  # fmt: skip

    # many runs: experiment tracking
    mlflow: str | None = _opt(None, "track the run in MLflow at this tracking URI; alone, MLflow's default (mlflow.db here)", _tracking_uri,
                              metavar="URI", kind="optional", resumable=True, step=False)  # fmt: skip

    @property
    def style(self) -> str:
        """How messages name this run's options: as :func:`flint.recipes.fit`'s arguments for its runs, else as flags."""
        return style_of(self.recipe)


def style_of(recipe: str) -> str:
    """``"python"`` for a run of :func:`flint.recipes.fit` (its recipe is named ``fit:...``), else ``"cli"``."""
    return "python" if recipe.startswith("fit:") else "cli"


def option_fields(scope: str | None = None) -> list[Any]:
    """The :class:`Config` fields that are options (every field but ``recipe``), in order; with ``scope``
    (``"cli"`` or ``"python"``), those that surface there."""
    found = [f for f in fields(Config) if "option" in f.metadata]
    return found if scope is None else [f for f in found if f.metadata["option"].scope in ("both", scope)]


def _option(name: str) -> Option:
    return next(f for f in fields(Config) if f.name == name).metadata["option"]


def option_name(name: str, style: str, short: bool = False) -> str:
    """How an option is named in messages: ``--batch-size`` (``style="cli"``; with ``short``, ``-o`` where
    there is one) or ``batch_size`` (``"python"``)."""
    if style == "python":
        return name
    return (short and _option(name).short) or _option(name).flag or "--" + name.replace("_", "-")


def check_global_batch(batch_size: int, workers: int, style: str = "cli") -> None:
    """The batch size is global: each of ``workers`` data-parallel workers takes an equal share."""
    if batch_size % workers:
        raise UsageError(f"{option_name('batch_size', style)} {batch_size} is global: it must divide among {workers} workers")


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

    def show(option: str, value: Any) -> str:
        return option_text(option, value, style)

    known = {f.name for f in option_fields()}
    for source, names in (("", given), (f"recipe {recipe.name}'s defaults: ", recipe.defaults)):
        unknown = sorted(set(names) - known)
        if unknown:
            raise UsageError(f"{source}unknown option {', '.join(map(repr, unknown))}; the options are {', '.join(sorted(known))}")
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
    values["task"] = _task(recipe, values.get("task", ""), style)
    values.setdefault("metrics", list(recipe.metrics))
    problem = metrics_problem(values["metrics"], values["task"], own=list(recipe.metrics) if isinstance(recipe.metrics, Mapping) else ())
    if problem:
        raise UsageError(f"{show('metrics', values['metrics'])}: {problem}")
    values["loss"] = values.get("loss") or DEFAULT_LOSS[values["task"]]
    cfg = Config(recipe=spec or recipe.name, **values)
    _check_together(cfg, cfg.task, set(given) if typed is None else typed, style)
    return cfg


def _task(recipe: Any, given: str, style: str) -> str:
    """The run's task: the recipe's if it sets one (another one given is refused), else the one given, else multiclass."""
    if recipe.task is not None and given and canonical_task(given) != canonical_task(recipe.task):
        raise UsageError(f"{option_text('task', given, style)}: recipe {recipe.name} sets its task, {canonical_task(recipe.task)}")
    return run_task(recipe.task, given)


def option_text(option: str, value: Any, style: str) -> str:
    """An option and its value as the user would have written them.

    Example:
        >>> option_text("lr", 0.5, "cli"), option_text("resume", True, "cli"), option_text("resume", True, "python")
        ('--lr 0.5', '--resume', 'resume=True')
    """
    if style == "python":
        return f"{option}={value!r}"
    name = option_name(option, style)
    if isinstance(value, bool):
        return name
    if isinstance(value, Mapping):
        return " ".join(f"{name} {k}={v:g}" if isinstance(v, (int, float)) else f"{name} {k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return f"{name} {','.join(map(str, value))}"
    return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"


def _check_together(cfg: Config, task: str, given: set[str], style: str) -> None:
    def name(option: str) -> str:
        return option_name(option, style)

    def show(option: str, value: Any) -> str:
        return option_text(option, value, style)

    if {"overwrite", "resume"} <= given and cfg.overwrite and cfg.resume is not None:  # a resumed run keeps its saved overwrite
        raise UsageError(f"{show('overwrite', True)} starts afresh; it takes no {name('resume')}")
    if cfg.loss not in LOSSES[task]:
        raise UsageError(f"{show('loss', cfg.loss)} does not fit {task}; choose from {', '.join(LOSSES[task])}")
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
    too_large = [f"{k}={v:g}" for k, v in cfg.lr_mult.items() if cfg.lr * v > FLOAT32_MAX]
    if too_large:
        raise UsageError(f"{show('lr_mult', cfg.lr_mult)}: {show('lr', cfg.lr)} times {', '.join(too_large)} exceeds {FLOAT32_MAX:g}")
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
    monitor = Monitor.parse(cfg.monitor, task)
    metrics = validated(task, cfg.metrics)
    if monitor.name not in metrics:
        hint = f"; add {monitor.name} to {name('metrics')}" if monitor.name in METRICS[task] else ""
        raise UsageError(f"{show('monitor', cfg.monitor)}: {task} validates {', '.join(metrics)}{hint}")
    check_global_batch(cfg.batch_size, cfg.nproc_per_node, style)


def config_changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``name=old, now new`` for each option that differs from the saved run's and may not change.

    ``epochs`` may grow, not shrink; the other resumable options may change freely. Options the saved
    run did not have are not compared.

    Example:
        >>> config_changes({"batch_size": 32, "epochs": 10, "seed": 1}, {"batch_size": 64, "epochs": 5, "seed": 1})
        ['epochs=10, now 5 (it may grow, not shrink)', 'batch_size=32, now 64']
    """
    resumable = {f.name for f in option_fields() if f.metadata["option"].resumable}
    changes = []
    if "epochs" in saved and now.get("epochs", saved["epochs"]) < saved["epochs"]:
        changes.append(f"epochs={saved['epochs']}, now {now['epochs']} (it may grow, not shrink)")
    changes += [f"{key}={saved[key]!r}, now {now[key]!r}" for key in now
                if key in saved and key not in resumable and saved[key] != now[key]]  # fmt: skip
    return changes


class RunConfig:
    """The run's options and fingerprint, kept in its checkpoints (``flint.engine.register_state`` key ``config``).

    ``load_state_dict`` refuses, with a :class:`UsageError` naming each change, a checkpoint saved
    under options that change what is trained (:func:`config_changes`) or from another recipe file
    or data (:func:`flint.recipes.app.fingerprint.fingerprint_changes`): wherever a checkpoint is
    resumed, it continues the run it belongs to.
    """

    def __init__(self, options: Mapping[str, Any] | Config, fingerprint: Mapping[str, Any] | None = None,
                 path: str | os.PathLike[str] | None = None) -> None:  # fmt: skip
        self.options = asdict(options) if isinstance(options, Config) else dict(options)
        self.fingerprint = dict(fingerprint or {})
        self.path = None if path is None else os.fspath(path)  # the checkpoint's, for the message

    def state_dict(self) -> dict[str, Any]:
        # strings: plain data whatever the options hold
        return {"json": json.dumps(self.options), "fingerprint": json.dumps(self.fingerprint)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from flint.recipes.app.fingerprint import fingerprint_changes

        saved = json.loads(state["fingerprint"]) if "fingerprint" in state else None  # a checkpoint without one: nothing to compare
        changes = config_changes(json.loads(state["json"]), self.options), fingerprint_changes(saved, self.fingerprint)
        source = "the checkpoint" + (f" {self.path}" if self.path else "")
        refused = resume_refusal(source, *changes, style_of(str(self.options.get("recipe", ""))), self.path)
        if refused:
            raise UsageError(refused)


def resume_refusal(source: str, options: list[str], fingerprint: list[str], style: str = "cli", weights: str | None = None) -> str | None:
    """The one line refusing to resume ``source`` ("the checkpoint PATH", "the run in DIR") after these changes, or None;
    it points to ``init_from``, with ``weights`` (the run or checkpoint) where known, to start a new run from them.

    Example:
        >>> resume_refusal("the run in runs/a", ["seed=1, now 2"], [], weights="runs/a")
        '--resume: the run in runs/a was trained with seed=1, now 2; resume it unchanged, or start a new run from its weights with --init-from runs/a'
        >>> resume_refusal("the checkpoint", [], ["the data changed (10 training samples, now 9)"], style="python")
        'resume=True: since the checkpoint was trained, the data changed (10 training samples, now 9); resume it unchanged, or start a new run from its weights with init_from'
    """
    said = [f"{source} was trained with {'; '.join(options)}"] if options else []
    if fingerprint:
        said.append(f"{'since then' if options else f'since {source} was trained,'} {'; '.join(fingerprint)}")
    init = option_text("init_from", weights, style) if weights else option_name("init_from", style)
    return f"{option_text('resume', True, style)}: {'; '.join(said)}; resume it unchanged, or start a new run from its weights with {init}" if said else None
