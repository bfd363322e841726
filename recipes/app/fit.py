"""``fit()``: your own model and data through the whole loop of ``flint run``, from Python."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flint.recipes.app.config import Config, option_fields, resolve_config
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

    Every ``flint run`` option is a keyword with its Python name and default (``epochs``, ``lr``, ``monitor``,
    ``resume=True``, ...: docs/api.md). The console shows what ``flint run`` shows; your logging stays as it was.

    Args:
        model: trained in place (with ``nproc_per_node`` > 1, or nothing left to train, it loads the last checkpoint's weights).
        train_data: a ``Dataset`` of ``(input, target)`` pairs or of mappings, a ``DataLoader``, or arrays ``(X, y)``.
        val_data: the validation data, in one of those forms. Default None: no validation, best checkpoint or early stopping.
        output_dir: the run's directory; a new run refuses one that holds a run.
        task: ``"multiclass"``, ``"binary"``, ``"multilabel"`` or ``"regression"``. Default multiclass.
        loss: a name of ``flint run``'s catalogue or a callable ``loss(y_pred, y)``. Default: the task's.
        optimizer: a name, an optimizer class or a callable taking the param groups. Default: ``config``'s, else ``"sgd"``.
        metrics: catalogue names (``flint.recipes.app.tasks.METRICS``) or a dict of name -> Ignite ``Metric``
            or callable ``(y_pred, y) -> float``. Default: none besides the loss and accuracy (MAE).
        handlers: objects with ``attach(trainer)`` or ``attach(trainer, evaluator)``. Default none.
        target_key: a mapping's target; its other entries go to ``model(**features)``. Default ``"target"``.
        prepare_batch: ``prepare_batch(batch, device, non_blocking) -> (x, y)`` for other batches. Default None.
        classes: class names by output index, for ``config.json`` and ``flint report``. Default None.
        verbose: False shows nothing on the console. Default True.
        config: a JSON, YAML or TOML file of options (a run's ``config.json`` too); keywords win. Default None.
        **options: ``flint run``'s options by their Python names.

    Returns:
        The run's ``"summary"`` record (``status``, ``epochs``, ``best_epoch``, ``best_value``, ...) with
        ``history``: one dict per epoch of the whole run, as Keras's ``History``, read from ``metrics.jsonl``.

    Raises:
        ValueError: a bad option or argument, named, before anything is written. ``flint.handlers.NonFiniteLoss``: a NaN loss.

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
    recipe = Recipe(type(model).__name__.lower(), f"fit() of a {type(model).__name__}", _Given(model),
                    {"data": _Given((train_data, val_data))}, metrics=metrics, target_key=target_key,
                    prepare_batch=prepare_batch, classes=classes)  # fmt: skip
    fixed = {"output_dir": os.fspath(output_dir), "task": task}
    cfg, loss_fn, factory = _resolve(model, recipe, val_data is not None, handlers, verbose, config, options, fixed, loss, optimizer)
    return _train(model, cfg, recipe, handlers, loss_fn, factory, verbose)


def _train(model: nn.Module, cfg: Config, recipe: Recipe, handlers: Sequence[Any], loss_fn: Callable | None,
           factory: Callable | None, verbose: bool) -> dict[str, Any]:  # fmt: skip
    """Launch the run with fit()'s console; the summary with the run's history."""
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


def _resolve(model: nn.Module, recipe: Recipe, validating: bool, handlers: Sequence[Any], verbose: Any, config: Any,
             options: dict[str, Any], fixed: dict[str, Any], loss: Any, optimizer: Any) -> tuple[Config, Callable | None, Callable | None]:  # fmt: skip
    """fit()'s arguments as a run's ``Config``, its own loss function and optimizer factory (or None); ValueError naming what is wrong.

    ``options`` are the keywords given, ``fixed`` the run's output directory and task (fit()'s own arguments)."""
    if not isinstance(verbose, bool):
        raise ValueError(f"Argument verbose should be True or False, got {verbose!r}")
    cli_only = sorted(set(options) & {f.name for f in option_fields()} - {f.name for f in option_fields("python")})
    if cli_only:
        raise ValueError(f"{', '.join(cli_only)}: not options of fit(), which trains on the data you give")
    from_file = _from_file(config, loss, optimizer)
    given = {**from_file, **options, **fixed}
    optimizer = given.pop("optimizer", "sgd") if optimizer is None else optimizer
    for name in ("resume", "mlflow"):  # True: the option without a value
        if name in given and isinstance(given[name], bool):
            given[name] = "" if given[name] else None
    if not verbose:
        given.setdefault("progress", False)
    loss_fn, factory = _own(loss, optimizer, given)
    without = [type(h).__name__ for h in handlers if not callable(getattr(h, "attach", None))]
    if without:
        raise ValueError(f"Argument handlers should hold objects with an attach(trainer[, evaluator]) method, got {', '.join(without)}")
    if not validating and given.get("early_stopping"):
        raise ValueError("early_stopping needs val_data: it counts validations without improvement")
    repeated = set(from_file) - set(options) - given_in_file(from_file, recipe)  # the file's options at their defaults: not refused
    spec = f"fit:{type(model).__module__}.{type(model).__qualname__}"
    cfg = resolve_config(recipe, given, style="python", spec=spec, typed=set(given) - repeated)
    if loss_fn is not None:
        cfg.loss = f"custom:{_qualname(loss_fn)}"
    if factory is not None:
        cfg.optimizer = f"custom:{_qualname(factory)}"
    return cfg, loss_fn, factory


def _own(loss: Any, optimizer: Any, given: dict[str, Any]) -> tuple[Callable | None, Callable | None]:
    """A loss function and an optimizer factory of the caller's (or None: a name, set in ``given``)."""
    loss_fn = factory = None
    if isinstance(loss, str):
        given["loss"] = loss
    elif loss is not None:
        if not callable(loss):
            raise ValueError(f"Argument loss should be a loss name or a callable, got {type(loss).__name__}")
        loss_fn = loss
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
    return loss_fn, factory


def _from_file(config: str | os.PathLike[str] | None, loss: Any, optimizer: Any) -> dict[str, Any]:
    """The options ``config`` sets, less the loss and optimizer when fit() is given its own (an optimizer object: its arguments too)."""
    if config is None:
        return {}
    ignore = {"loss"} if loss is not None else set()
    if optimizer is not None:
        ignore |= {"optimizer"} if isinstance(optimizer, str) else {"optimizer", "momentum", "nesterov"}
    return file_options(config, "python", ignore=ignore)


def _load_last_weights(model: nn.Module, output_dir: str) -> None:
    from flint.recipes.app.rundir import RunDir
    from flint.recipes.app.runs import load_weights, read_checkpoint

    latest = RunDir(output_dir).latest_checkpoint()
    if latest is not None:
        load_weights(model, read_checkpoint(latest)["model"], latest, type(model).__name__)


def _qualname(obj: Any) -> str:
    target = getattr(obj, "func", obj)  # a functools.partial: its function
    kind = target if isinstance(target, type) else type(target) if not hasattr(target, "__qualname__") else target
    return f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', type(kind).__name__)}"
