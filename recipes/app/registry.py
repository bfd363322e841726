"""What a recipe is (a model, the datasets it trains on, its default options), and where recipes come from.

A recipe is named by ``flint run`` (and kept in ``config.json``) as one of:

- a built-in name (``lenet``, ``mlp``, ``resnet``, ``ffnn``);
- the name of an installed package's entry point in the group ``flint.recipes``;
- ``path/to/file.py`` (the file's ``RECIPE``) or ``path/to/file.py:NAME``;
- ``package.module:NAME``.

Nothing here imports torch: ``flint list`` and ``flint --help`` stay instant, and the built-ins
import their models and data only when a run builds them (:func:`lazy`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flint.recipes.app.config import UsageError
from flint.recipes.app.tasks import TASKS, own_metrics_problem, task_problem

if TYPE_CHECKING:
    from torch import nn
    from torch.utils.data import Dataset

    from flint.recipes.app.config import Config

__all__ = [
    "Recipe", "TASKS", "BUILTIN", "ENTRY_POINT_GROUP", "lazy", "load_recipe", "resolve_spec", "is_file_spec", "split_file_spec",
    "builtin_recipes", "entry_point_names",
]  # fmt: skip

BUILTIN = ("lenet", "mlp", "resnet", "ffnn")  # each is recipes.<name>.RECIPE
ENTRY_POINT_GROUP = "flint.recipes"


@dataclass(frozen=True)
class Recipe:
    """A training job's ingredients: ``flint run`` and :func:`flint.recipes.app.fit` add the loop.

    ``classes`` (names by output index) and ``normalization`` (``(mean, std)``, numbers or one per
    channel, that the datasets' inputs were standardised with) reach ``flint export``'s metadata,
    ``flint predict``'s class names and ``flint report``; without them, what Flint knows of a built-in
    dataset is used.

    Example:
        >>> recipe = Recipe("tiny", "a tiny model", build_model=dict, datasets={"mine": lambda cfg: ([], [])}, task="binary",
        ...                 classes=["no", "yes"], normalization=(0.5, 0.25))
        >>> recipe.default_dataset, recipe.task, recipe.classes, recipe.normalization
        ('mine', 'binary', ('no', 'yes'), ((0.5,), (0.25,)))
    """

    name: str  # what `flint run NAME` takes, and the default output dir runs/NAME
    description: str  # one line for `flint list`
    build_model: Callable[[], nn.Module]  # a fresh, randomly initialised model
    datasets: Mapping[str, Callable[[Config], tuple[Dataset, Dataset | None]]]  # name -> (train, val or None); first is default
    defaults: Mapping[str, Any] = field(default_factory=dict)  # Config fields this recipe sets differently
    task: str | None = None  # one of TASKS (the loss, the metrics, the monitored one); None: multiclass, or --task's
    input_shape: tuple[int, ...] = (1, 28, 28)  # one sample's shape, for export
    # validation metrics: catalogue names (flint.recipes.app.tasks.METRICS), or name -> Ignite Metric or callable (y_pred, y) -> float
    metrics: Sequence[str] | Mapping[str, Any] = ()
    target_key: str = "target"  # in a dataset of mappings, the target's key; the other keys are the model's keyword arguments
    prepare_batch: Callable[[Any, Any, bool], tuple[Any, Any]] | None = None  # (batch, device, non_blocking) -> (x, y)
    classes: Sequence[str] | None = None  # class names by output index
    normalization: tuple[Any, Any] | None = None  # (mean, std) of the inputs' standardisation, per channel

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.name) or ".." in self.name:
            raise ValueError(f"Argument name should be a plain name (letters, digits, '_', '-', '.'; no path), got {self.name!r}")
        if self.task is not None and (not self.task or task_problem(self.task)):
            raise ValueError(f"Argument task should be one of {', '.join(TASKS)} (or classification), got {self.task!r}")
        problem = own_metrics_problem(self.metrics)
        if problem:
            raise ValueError(f"Argument metrics {problem}")
        if not isinstance(self.target_key, str) or (self.prepare_batch is not None and not callable(self.prepare_batch)):
            raise ValueError(f"Argument target_key should be a string and prepare_batch a callable, got {self.target_key!r} and "
                             f"{type(self.prepare_batch).__name__}")  # fmt: skip
        if not self.datasets:
            raise ValueError(f"Recipe {self.name!r} needs at least one dataset")
        if self.classes is not None:
            if isinstance(self.classes, str) or not all(isinstance(c, str) for c in self.classes) or not self.classes:
                raise ValueError(f"Argument classes should be a list of class names (strings), got {self.classes!r}")
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.normalization is not None:
            object.__setattr__(self, "normalization", _mean_std(self.normalization))

    @property
    def default_dataset(self) -> str:
        return next(iter(self.datasets))


def _mean_std(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as two equally long tuples of floats (one per channel), std > 0; ValueError naming the value."""
    problem = f"Argument normalization should be (mean, std), each a number or one per channel, std > 0, got {value!r}"
    try:
        mean, std = ([float(v)] if isinstance(v, (int, float)) else [float(x) for x in v] for v in value)
    except (TypeError, ValueError):
        raise ValueError(problem) from None
    if not mean or len(mean) != len(std) or not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise ValueError(problem)
    return tuple(mean), tuple(std)


@dataclass(frozen=True)
class _Lazy:
    target: str
    args: tuple[Any, ...]

    def __call__(self, *args: Any) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)(*self.args, *args)


def lazy(target: str, *args: Any) -> Callable[..., Any]:
    """A callable that imports ``"module:attr"`` only when called, then calls it with ``args`` and its own.

    The built-in recipes name their models and datasets so: listing them imports no torch. It pickles
    (spawned data-parallel workers get it), unlike a lambda.

    Example:
        >>> lazy("math:pow", 2)(10)
        1024.0
    """
    return _Lazy(target, args)


def builtin_recipes() -> dict[str, Recipe]:
    """The built-in recipes by name (importing them imports no torch)."""
    return {name: importlib.import_module(f"flint.recipes.builtin.{name}").RECIPE for name in BUILTIN}


def entry_point_names() -> dict[str, str]:
    """Installed packages' recipes: entry-point name -> ``module:attr``, without importing them."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a recipe file (``path/to/file.py[:NAME]``) rather than a name or ``module:NAME``."""
    path = spec.rsplit(":", 1)[0] if spec.count(":") == 1 and not spec.endswith(".py") else spec
    return path.endswith(".py") or "/" in path or "\\" in path


def split_file_spec(spec: str) -> tuple[str, str]:
    """``(path, NAME)`` of a recipe file spec; NAME is ``""`` when the file's ``RECIPE`` is meant.

    Example:
        >>> split_file_spec("my/recipe.py"), split_file_spec("my/recipe.py:SMALL")
        (('my/recipe.py', ''), ('my/recipe.py', 'SMALL'))
    """
    if spec.endswith(".py"):
        return spec, ""
    path, _, name = spec.rpartition(":")
    return path, name


def resolve_spec(spec: str) -> str:
    """``spec`` as it should be kept in ``config.json``: a recipe file by its absolute path, the rest as given."""
    if spec in BUILTIN or not is_file_spec(spec):
        return spec
    path, name = split_file_spec(spec)
    return f"{Path(path).resolve()}{':' + name if name else ''}"


def load_recipe(spec: str) -> Recipe:
    """The recipe ``spec`` names (see the module's docstring); :class:`UsageError` in one line if there is none."""
    if spec in BUILTIN:
        return builtin_recipes()[spec]
    if is_file_spec(spec):
        return _from_file(spec)
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UsageError(_old_layout(spec, e) or f"recipe {spec}: cannot import {module_name}: {e}") from None
        return _pick(module, attr, spec)
    points = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    if spec in points:
        try:
            found = points[spec].load()
        except Exception as e:
            raise UsageError(
                _old_layout(spec, e) or f"recipe {spec}: its entry point {points[spec].value} cannot be loaded: {type(e).__name__}: {e}"
            ) from None
        if not isinstance(found, Recipe):
            raise UsageError(f"recipe {spec}: its entry point {points[spec].value} is a {type(found).__name__}, not a flint.recipes.Recipe")
        return found
    names = [*BUILTIN, *sorted(points)]
    raise UsageError(f"unknown recipe {spec!r}: choose from {', '.join(names)}, or give path/to/file.py[:NAME] or package.module:NAME")


def _old_layout(spec: str, error: BaseException) -> str | None:
    """The one line for recipe code importing a top-level ``engine``, ``handlers`` or ``recipes``, or None."""
    top = (getattr(error, "name", None) or "").partition(".")[0] if isinstance(error, ImportError) else ""
    if top not in ("engine", "handlers", "recipes"):
        return None
    return f"recipe {spec} imports {top!r}: Flint's packages are flint.engine, flint.handlers and flint.recipes (from flint.recipes import Recipe)"


def _from_file(spec: str) -> Recipe:
    path_text, attr = split_file_spec(spec)
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"recipe {spec}: no such file {path}")
    # A unique module name per file; its folder is importable while it loads, as for a script.
    name = "flint_recipe_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(f"recipe {spec}: {path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name
    sys.path.insert(0, str(path.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # a recipe's sys.exit() at import is a failure to load, not the command's status
        del sys.modules[name]
        where = f" (line {e.lineno})" if isinstance(e, SyntaxError) else ""
        raise UsageError(_old_layout(spec, e) or f"recipe {spec}: {path} failed to load{where}: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return _pick(module, attr or "RECIPE", spec)


def _pick(module: Any, attr: str, spec: str) -> Recipe:
    found = getattr(module, attr, None)
    if isinstance(found, Recipe):
        return found
    recipes = sorted(k for k, v in vars(module).items() if isinstance(v, Recipe))
    has = f"it defines {', '.join(recipes)}" if recipes else "it defines no flint.recipes.Recipe"
    what = "no Recipe" if found is None else f"a {type(found).__name__}, not a flint.recipes.Recipe"
    raise UsageError(f"recipe {spec}: {attr} is {what}; {has}")
