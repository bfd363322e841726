"""``fit()``: your own model and data through the whole loop of ``flint run``, from Python."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flint.recipes.app.config import option_fields, resolve_config
from flint.recipes.app.console import console_shown, log_to_console
from flint.recipes.app.history import run_history
from flint.recipes.app.config_file import file_options, given_in_file
from flint.recipes.app.registry import Recipe
from flint.recipes.app.stopping import STOPS

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import Dataset

__all__ = ["fit"]

@dataclass(frozen=True)
class _Given:
    """A recipe part that is an object you already have: it pickles with it (for spawned workers), unlike a lambda."""

    value: Any

    def __call__(self, *args: Any) -> Any:
        return self.value


def fit(
    model: nn.Module,
    train_data: Dataset | Any,
    val_data: Dataset | Any = None,
    *,
    output_dir: str | os.PathLike[str],
    task: str = "multiclass",
    loss: Any = None,
    optimizer: Any = None,
    metrics: Sequence[str] | Mapping[str, Any] = (),
    handlers: Sequence[Any] = (),
    target_key: str = "target",
    prepare_batch: Callable[[Any, Any, bool], tuple[Any, Any]] | None = None,
    classes: Sequence[str] | None = None,
    verbose: bool = True,
    config: str | os.PathLike[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train ``model`` with the loop of ``flint run``: records, TensorBoard, checkpoints, exact resume.

    Everything ``flint run`` does for a recipe it does here for any ``nn.Module`` and your data: the update cycle, LR schedules, per-epoch validation,
    latest and best checkpoints in ``output_dir/checkpoints``, ``metrics.jsonl``, TensorBoard files,
    ``train.log``, a SIGTERM or SIGINT stopping at the next update with a checkpoint, exact resume.
    Every ``flint run`` option is a keyword with its Python name and the same default (see
    ``flint.recipes.app.config.Config``: ``epochs``, ``batch_size``, ``lr``, ``lr_mult``, ``update_cycle``,
    ``lr_mode``, ``interrupt_at``, ``early_stopping``, ``monitor``, ``val_every``, ``clip_grad_norm``,
    ``amp``, ``device="auto"``, ``progress``, ``seed``, ...); ``resume=True`` continues the run in
    ``output_dir`` from its latest checkpoint (a new run if it has none), ``resume=PATH`` from a checkpoint;
    ``overwrite=True`` starts afresh over a finished or interrupted run there; ``init_from=RUN_DIR_OR_CHECKPOINT``
    starts from those weights with a fresh optimizer and schedule. It shows what ``flint run`` shows on
    stderr (the header, one line per epoch, the closing lines, the progress bar on a terminal) and
    leaves your logging configuration as it was.

    Args:
        model: the network; trained in place (its weights are the run's at the end; with
            ``nproc_per_node`` > 1, or a resumed run with nothing left to train, it loads the last checkpoint's).
        train_data: the training data: a ``Dataset`` (map-style, or iterable with a length) of ``(input, target)``
            pairs or of mappings, a ``DataLoader`` (used as given), or arrays ``(X, y)`` (NumPy or torch).
        val_data: the validation data, in one of those forms; None trains without validation (no best
            checkpoint, no early stopping).
        output_dir: where the run's files go; a new run refuses a directory that holds one.
        task: ``"multiclass"`` (``"classification"``), ``"binary"`` (one logit), ``"multilabel"`` or
            ``"regression"``: the default loss, the shapes checked and the metrics. Default multiclass.
        loss: a name from ``flint run``'s catalogue (``"cross-entropy"``, ``"bce-with-logits"``, ``"mse"``, ...)
            or a callable ``loss(y_pred, y)`` returning a scalar mean loss. Default: the task's.
        optimizer: a name (``"sgd"``, ``"adamw"``, ...), an optimizer class (called with the param groups
            and ``lr=``), or a callable taking the param groups (each with its ``lr`` and
            ``weight_decay``) and returning an optimizer. Default: ``config``'s, else ``"sgd"``.
        metrics: validation metrics besides the loss and accuracy (MAE for regression): names from the
            task's catalogue (``flint.recipes.app.tasks.METRICS``: ``"f1"``, ``"roc_auc"``, ``"r2"``, ...), or a
            dict of name -> Ignite ``Metric`` (reading the evaluator's output in the task's form) or callable
            ``(y_pred, y) -> float`` over the whole validation set. ``monitor`` may name any of them.
        handlers: more handlers; each gets ``attach(trainer)``, or ``attach(trainer, evaluator)`` when
            its ``attach`` takes two engines. Their state is checkpointed if they register it
            (``flint.engine.register_state``).
        target_key: in a dataset of mappings, the target's key; the other entries go to ``model(**features)``.
        prepare_batch: ``prepare_batch(batch, device, non_blocking) -> (x, y)`` for batches of any other
            form; the model is called as ``model(x)``.
        classes: the class names by output index, kept in ``config.json`` (``flint report`` shows them).
            Default None.
        verbose: show the console's lines and the progress bar; False shows nothing (unless
            ``progress=True`` is given). Default True.
        config: a JSON, YAML or TOML file of options by their Python names, as ``flint run --config``
            takes it (a run's ``config.json`` too); keywords given here win. Default None.
        **options: ``flint run``'s options by their Python names; ``mlflow=URI`` (``True``: MLflow's
            default store) tracks the run in MLflow.

    Returns:
        The run's ``"summary"`` record (as written to ``metrics.jsonl``): ``status`` is
        ``"completed"``, or ``"interrupted"`` when it stopped with a checkpoint saved (SIGTERM,
        ``interrupt_at``); ``epochs``, ``monitor``, ``best_epoch``, ``best_value``, ``avg_epoch_time``, ...;
        and ``history``, one dict per epoch as Keras's ``History`` (``epoch``, ``loss``, ``accuracy``,
        ``val_loss``, ``val_accuracy``...: the numbers of the console's lines and of ``metrics.jsonl``),
        of the whole run: a resumed run's holds the epochs of its earlier launches too (read from
        ``metrics.jsonl``, the last record of each epoch).

    Raises:
        ValueError: a bad option or argument, named, before anything is written.
        flint.handlers.NonFiniteLoss: the loss became NaN or infinite (the last good checkpoint is kept).

    Example:
        >>> import tempfile, torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(64, 3), torch.randint(0, 2, (64,)))
        >>> summary = fit(torch.nn.Linear(3, 2), data, data, output_dir=tempfile.mkdtemp(), epochs=2, batch_size=16,
        ...               optimizer=torch.optim.Adam, lr=0.01, verbose=False, device="cpu")
        >>> summary["status"], summary["epochs"], [sorted(epoch) for epoch in summary["history"]][0]
        ('completed', 2, ['accuracy', 'epoch', 'loss', 'val_accuracy', 'val_loss'])
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(verbose, bool):
        raise ValueError(f"Argument verbose should be True or False, got {verbose!r}")
    cli_only = sorted(set(options) & {f.name for f in option_fields()} - {f.name for f in option_fields("python")})
    if cli_only:
        raise ValueError(f"{', '.join(cli_only)}: not options of fit(), which trains on the data you give")
    from_file = _from_file(config, loss, optimizer)
    given = {**from_file, **options}
    optimizer = given.pop("optimizer", "sgd") if optimizer is None else optimizer
    for name in ("resume", "mlflow"):  # True: the option without a value
        if name in given and isinstance(given[name], bool):
            given[name] = "" if given[name] else None
    given["output_dir"] = os.fspath(output_dir)
    if not verbose:
        given.setdefault("progress", False)
    loss_fn = None
    if isinstance(loss, str):
        given["loss"] = loss
    elif loss is not None:
        if not callable(loss):
            raise ValueError(f"Argument loss should be a loss name or a callable, got {type(loss).__name__}")
        loss_fn = loss
    factory = None
    if isinstance(optimizer, str):
        given["optimizer"] = optimizer
    elif callable(optimizer):
        factory = optimizer
        extra = [name for name in ("momentum", "nesterov") if name in given]
        if extra:
            raise ValueError(f"{', '.join(extra)}: a custom optimizer takes its own arguments, e.g. "
                             "functools.partial(torch.optim.SGD, momentum=0.9)")  # fmt: skip
    else:
        raise ValueError(f"Argument optimizer should be a name, an optimizer class or a factory, got {type(optimizer).__name__}")
    without = [type(h).__name__ for h in handlers if not callable(getattr(h, "attach", None))]
    if without:
        raise ValueError(f"Argument handlers should hold objects with an attach(trainer[, evaluator]) method, got {', '.join(without)}")
    if val_data is None and given.get("early_stopping"):
        raise ValueError("early_stopping needs val_data: it counts validations without improvement")
    name = type(model).__name__.lower()
    given["task"] = task
    recipe = Recipe(name, f"fit() of a {type(model).__name__}", _Given(model), {"data": _Given((train_data, val_data))},
                    metrics=metrics, target_key=target_key, prepare_batch=prepare_batch, classes=classes)  # fmt: skip
    repeated = set(from_file) - set(options) - given_in_file(from_file, recipe)  # the file's options at their defaults: not refused
    spec = f"fit:{type(model).__module__}.{type(model).__qualname__}"
    cfg = resolve_config(recipe, given, style="python", spec=spec, typed=set(given) - repeated)
    if cfg.nproc_per_node > 1:
        _check_pickles(metrics, prepare_batch)
    if loss_fn is not None:
        cfg.loss = f"custom:{_qualname(loss_fn)}"
    if factory is not None:
        cfg.optimizer = f"custom:{_qualname(factory)}"
    from flint.recipes.app.launch import launch

    console = functools.partial(log_to_console, False) if verbose else None  # spawned workers' own
    STOPS.install()  # SIGTERM/SIGINT stop the run and save; given back to the caller's handlers at the end
    try:
        with console_shown() if verbose else contextlib.nullcontext():
            summary = launch(cfg, recipe, handlers, loss_fn, factory, console=console)
    finally:
        STOPS.uninstall()
    if cfg.nproc_per_node > 1 or summary.get("nothing_to_do"):  # trained elsewhere: model takes the run's last weights
        _load_last_weights(model, cfg.output_dir)
    for index, state in summary.pop("handler_states", {}).items():  # trained by spawned workers: the handlers take their state
        handlers[int(index)].load_state_dict(state)
    return {**summary, "history": run_history(cfg.output_dir)}


def _check_pickles(metrics: Any, prepare_batch: Any) -> None:
    """Spawned workers get the metrics and ``prepare_batch`` by pickle: an Ignite metric built with its default
    output transform (a lambda) does not pickle."""
    import pickle

    for what, value in (("metrics", metrics), ("prepare_batch", prepare_batch)):
        try:
            pickle.dumps(value)
        except Exception as e:
            raise ValueError(f"{what} must pickle to reach the spawned workers (nproc_per_node > 1): {e}") from None


def _from_file(config: str | os.PathLike[str] | None, loss: Any, optimizer: Any) -> dict[str, Any]:
    """The options ``config`` sets, less the loss and optimizer when fit() is given its own (an optimizer object: its arguments too)."""
    if config is None:
        return {}
    ignore = {"loss"} if loss is not None else set()
    if optimizer is not None:
        ignore |= {"optimizer"} if isinstance(optimizer, str) else {"optimizer", "momentum", "nesterov"}
    return file_options(config, "python", ignore=ignore)


def _load_last_weights(model: nn.Module, output_dir: str) -> None:
    from pathlib import Path

    from flint.handlers import Checkpointing
    from flint.recipes.app.runs import load_weights, read_checkpoint

    latest = Checkpointing.find_latest(Path(output_dir) / "checkpoints")
    if latest is not None:
        load_weights(model, read_checkpoint(latest)["model"], latest, type(model).__name__)


def _qualname(obj: Any) -> str:
    target = getattr(obj, "func", obj)  # a functools.partial: its function
    kind = target if isinstance(target, type) else type(target) if not hasattr(target, "__qualname__") else target
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', type(kind).__name__)}"
