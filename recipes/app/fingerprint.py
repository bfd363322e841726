"""A run's fingerprint: what it trains on besides its options, so that a resume cannot silently change it.

Two parts, recorded in ``config.json`` and in every checkpoint (with the options,
:class:`flint.recipes.app.config.RunConfig`): the recipe's source file (its path and a SHA-256 of its
content; built-in recipes have none: they are Flint's own) and the datasets (their lengths and a
summary of a few samples: the first, the middle and the last of each).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flint.recipes.app.config import UsageError, style_of

__all__ = ["recipe_file", "file_digest", "data_fingerprint", "fingerprint_changes", "check_recipe_file"]


def recipe_file(spec: str) -> Path | None:
    """The file that defines the recipe ``spec`` names (a recipe file, or the module of ``module:NAME`` or an
    entry point), resolved; None for a built-in or ``fit()``'s."""
    from flint.recipes.app.registry import BUILTIN, entry_point_names, is_file_spec, split_file_spec

    if spec in BUILTIN or style_of(spec) == "python":
        return None
    if is_file_spec(spec):
        return Path(split_file_spec(spec)[0]).resolve()
    if ":" not in spec:
        spec = entry_point_names().get(spec, spec)
    module = sys.modules.get(spec.partition(":")[0]) or importlib.import_module(spec.partition(":")[0])
    path = getattr(module, "__file__", None)
    return Path(path).resolve() if path else None


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's content, in hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _summary(value: Any) -> Any:
    """A sample in a few JSON values: a float tensor or array by its shape, sum, sum of squares and first
    values (compared with a tolerance: float data computed with other thread counts differs in its
    last bits), any other tensor by a SHA-256 of its bytes, containers by their parts, the rest by ``repr``."""
    import numpy as np
    import torch

    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_floating_point() or t.is_complex():
            flat = t.reshape(-1).double() if not t.is_complex() else torch.view_as_real(t).reshape(-1).double()
            return ["float", list(t.shape), float(flat.sum()), float((flat * flat).sum()), flat[:4].tolist()]
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        return [str(t.dtype), list(t.shape), hashlib.sha256(data).hexdigest()]
    if isinstance(value, Mapping):
        return {str(key): _summary(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, (tuple, list)):
        return [_summary(part) for part in value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return repr(value)
    return value


def data_fingerprint(train_set: Any, val_set: Any) -> dict[str, Any]:
    """``{"train": length, "val": length, "samples": [...]}``: the first, middle and last samples of each, summarised.

    A dataset without a length (an iterable one) counts as None and its samples are not read.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 0]))
        >>> fingerprint = data_fingerprint(data, None)
        >>> fingerprint["train"], fingerprint["val"], fingerprint["samples"][0][0]
        (3, None, ['float', [2], 1.0, 1.0, [0.0, 1.0]])
    """
    lengths, samples = {}, []
    for name, dataset in (("train", train_set), ("val", val_set)):
        n = len(dataset) if dataset is not None and hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__") else None
        lengths[name] = n
        samples += [_summary(dataset[index]) for index in (sorted({0, n // 2, n - 1}) if n else ())]
    return {**lengths, "samples": samples}


def _same(a: Any, b: Any) -> bool:
    """Equal summaries, floats within 1e-5 of each other relatively (1e-4 absolutely, for sums near zero)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-4)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def fingerprint_changes(saved: Mapping[str, Any] | None, now: Mapping[str, Any] | None) -> list[str]:
    """What changed between a run's recorded fingerprint and the one of this launch, in words; [] if nothing (or none recorded).

    Example:
        >>> old = {"recipe_file": "/r.py", "recipe_sha256": "a", "data": {"train": 10, "val": 2, "samples": [[1.0]]}}
        >>> fingerprint_changes(old, {**old, "recipe_sha256": "b", "data": {"train": 9, "val": 2, "samples": [[1.0]]}})
        ['the recipe file /r.py changed', 'the data changed (10 training samples, now 9)']
        >>> fingerprint_changes(old, {**old, "data": {"train": 10, "val": 2, "samples": [[1.0000001]]}})
        []
    """
    if not saved or not now:
        return []
    changes = []
    if saved.get("recipe_sha256") and saved.get("recipe_sha256") != now.get("recipe_sha256"):
        changes.append(f"the recipe file {saved.get('recipe_file')} changed")
    old, new = saved.get("data") or {}, now.get("data") or {}
    if old and new and not _same(old, new):
        sizes = [f"{old.get(key)} {what} samples, now {new.get(key)}" for key, what in (("train", "training"), ("val", "validation"))
                 if old.get(key) != new.get(key)]  # fmt: skip
        changes.append(f"the data changed ({'; '.join(sizes) or 'as many samples, other values'})")
    return changes


def check_recipe_file(spec: str, recorded: Mapping[str, Any] | None, where: str) -> None:
    """Before a run directory's recipe file is run again (resume, evaluate, export, predict): it must be the
    absolute path ``flint run`` recorded, with the content it had then (``recorded``: the run's fingerprint)."""
    from flint.recipes.app.registry import is_file_spec, split_file_spec

    if not is_file_spec(spec):
        return
    path = Path(split_file_spec(spec)[0])
    if not path.is_absolute():
        raise UsageError(f"{where} names the recipe file {path} by a relative path (flint run records an absolute one): "
                         "refusing to run it")  # fmt: skip
    digest = (recorded or {}).get("recipe_sha256")
    if digest is not None and path.is_file() and file_digest(path) != digest:
        raise UsageError(f"the recipe file {path} changed since the run in {where} started: refusing to run other code on it; "
                         "restore the file, or train the changed recipe in a new run")  # fmt: skip
