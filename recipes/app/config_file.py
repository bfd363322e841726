"""Options from a file: ``flint run RECIPE --config FILE`` and ``fit(config=FILE)``, and ``--print-config``.

A config file holds options by their Python names, as ``config.json`` does; JSON, YAML or TOML, told
by the suffix. A run's own ``config.json`` is taken as it is: where a run goes and what it resumes
(``output_dir``, ``resume``) and the run's bookkeeping (``recipe``, ``fingerprint``, ``metadata``, its start times)
are not options of a new run, so they are skipped. Every other key must be an option with a good
value, or the file is refused in one line naming it and the key. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Any

from flint.recipes.app.config import Config, UsageError, option_fields
from flint.recipes.app.launch_clock import RECORDED

__all__ = ["FORMATS", "SKIPPED", "read_config_file", "file_options", "given_in_file", "format_options"]

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}
SKIPPED = frozenset({"recipe", "output_dir", "resume", "fingerprint", "metadata", *RECORDED})  # config.json as train.py writes it
"""Keys a config file may hold that do not set a new run's options: ``-o`` decides where it goes."""

_NEEDS = {"yaml": ("yaml", "PyYAML", "pyyaml"), "toml": ("tomllib", "tomli", "tomli")}  # format: module, name, package


def _module(fmt: str, where: str) -> Any:
    import importlib

    module, name, package = _NEEDS[fmt]
    for candidate in (module, "tomli") if fmt == "toml" else (module,):  # tomllib is Python 3.11's, tomli before
        try:
            return importlib.import_module(candidate)
        except ImportError:
            continue
    raise UsageError(f"{where}: {fmt.upper()} needs {name}: pip install {package}")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping a JSON, YAML or TOML file holds (told by its suffix); :class:`UsageError` naming the file otherwise.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "cfg.toml"
        >>> _ = path.write_text('lr = 0.02\\nlr_steps = [3, 6]\\n')
        >>> read_config_file(path)
        {'lr': 0.02, 'lr_steps': [3, 6]}
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"{path}: unknown config format {path.suffix or '(no suffix)'!r}; use {', '.join(FORMATS)}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "yaml":
            data = _module("yaml", str(path)).safe_load(text)
        else:
            data = _module("toml", str(path)).loads(text)
    except UsageError:
        raise
    except Exception as e:  # each parser has its own error class
        raise UsageError(f"{path}: not valid {fmt.upper()}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if data is None:  # an empty YAML file
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: must hold a mapping of options by name, not a {type(data).__name__}")
    return data


def file_options(path: str | os.PathLike[str], scope: str, ignore: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The options ``path`` sets, checked one by one: :class:`UsageError` ``PATH: KEY: what is wrong`` for the first bad key.

    ``scope`` is ``"cli"`` (``flint run``) or ``"python"`` (``fit()``, which skips the data options of a
    recipe: it trains on the data it is given). Keys of :data:`SKIPPED` and ``ignore`` are skipped. A
    number written as a string (YAML reads ``1e-3`` as one) is read as the command line reads it.
    Checks of options together come later, with the command line's (``resolve_config``).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "config.json"
        >>> _ = path.write_text('{"recipe": "lenet", "output_dir": "runs/a", "lr": "1e-3", "epochs": 3}')
        >>> file_options(path, "cli")
        {'lr': 0.001, 'epochs': 3}
        >>> _ = path.write_text('{"epochs": 0}')
        >>> try:
        ...     file_options(path, "cli")
        ... except UsageError as e:
        ...     print(str(e).removeprefix(f"{path}: "))
        epochs: must be a positive integer up to 1,000,000, got 0
    """
    known = {f.name: f.metadata["option"] for f in option_fields()}
    here = {f.name for f in option_fields(scope)}
    options = {}
    for key, value in read_config_file(path).items():
        if key in SKIPPED or key in ignore:
            continue
        if key not in known:
            raise UsageError(f"{path}: unknown option {key!r}; the options are {', '.join(sorted(known))}")
        if key not in here:
            if scope == "python":
                continue  # a recipe's data options: fit() takes the data itself
            raise UsageError(f"{path}: {key} is an option of fit() only")
        if key in ("loss", "optimizer") and isinstance(value, str) and value.startswith("custom:"):
            raise UsageError(f"{path}: {key}: {value!r} was an object given to fit(); name one, or pass the object to fit() as {key}=")
        option = known[key]
        if isinstance(value, str) and option.kind == "value" and option.parse is not str:
            try:
                value = option.parse(value)
            except argparse.ArgumentTypeError as e:
                raise UsageError(f"{path}: {key}: {e}") from None
        problem = option.check(value)
        if problem:
            raise UsageError(f"{path}: {key}: {problem}, got {value!r}")
        options[key] = value
    return options


def given_in_file(options: Mapping[str, Any], recipe: Any) -> set[str]:
    """The options of a file that differ from what ``recipe`` would use: those a user set, checked as if typed
    (``--momentum`` for an optimizer without momentum is refused); a run's ``config.json`` repeats the rest.

    Example:
        >>> from flint.recipes.app.registry import load_recipe
        >>> sorted(given_in_file({"momentum": 0.9, "lr": 0.05, "epochs": 3}, load_recipe("lenet")))
        ['epochs']
    """
    defaults = {f.name: f.default_factory() if f.default is MISSING else f.default for f in option_fields()}  # type: ignore[misc]
    defaults.update(recipe.defaults)
    return {key for key, value in options.items() if defaults.get(key, MISSING) != value}


def format_options(cfg: Config, fmt: str) -> str:
    """``cfg``'s options as a config file of format ``fmt`` (``json``, ``yaml`` or ``toml``) takes them.

    Leaves out what a config file does not set (:data:`SKIPPED`); TOML, which has no null, leaves out
    options that are None (their default).

    Example:
        >>> print(format_options(Config("lenet", epochs=3, lr_mult={"fc": 0.1}), "toml").splitlines()[5:7])
        ['epochs = 3', 'batch_size = 64']
    """
    options = {f.name: getattr(cfg, f.name) for f in option_fields() if f.name not in SKIPPED}
    if fmt == "json":
        return json.dumps(options, indent=2)
    if fmt == "yaml":
        return str(_module("yaml", "--print-config yaml").safe_dump(options, sort_keys=False)).rstrip("\n")
    if fmt == "toml":
        return "\n".join(f"{key} = {_toml(value)}" for key, value in options.items() if value is not None)
    raise ValueError(f"Argument fmt should be one of json, yaml, toml, got {fmt!r}")


def _toml(value: Any) -> str:
    """A TOML value for an option's value: a bool, number, string, list or table of them (JSON's spelling is TOML's for these)."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # true/false, numbers (finite: checked), "strings"
