"""``flint export``: a trained model from a run or checkpoint as ONNX, TorchScript or a state_dict, with its metadata."""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from handlers import Checkpointing
from recipes.config import UsageError
from recipes.registry import Recipe

__all__ = ["FORMATS", "METADATA_FILE", "export_model", "checkpoint_of", "best_checkpoint", "read_checkpoint", "model_metadata"]

logger = logging.getLogger(__name__)
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "state_dict": ".state_dict.pt"}
METADATA_FILE = "flint_metadata.json"  # the TorchScript extra file holding the metadata
_BEST = re.compile(r"^best_checkpoint_(?P<epoch>\d+)_(?P<metric>.+)=(?P<value>[^=]+)\.pt$")
_MODES = {"accuracy": "max", "loss": "min", "mae": "min"}  # the metrics Flint's recipes monitor


def _monitor(run_dir: Path) -> tuple[str, str] | None:
    """``config.json``'s ``monitor`` ("NAME:min" or "NAME:max") as (NAME, mode), if there is one."""
    from recipes.report import parse_monitor, read_config

    text = read_config(run_dir).get("monitor")
    if not text:
        return None
    try:
        return parse_monitor(text)
    except ValueError as e:
        logger.warning("%s: %s; ignored", run_dir / "config.json", e)
        return None


def best_checkpoint(directory: str | os.PathLike[str], monitor: tuple[str, str] | None = None) -> Path | None:
    """The best of ``directory``'s ``best_checkpoint_*.pt`` files by the value each recorded; None if none.

    The value and metric come from the file name (``best_checkpoint_<epoch>_<metric>=<value>.pt``),
    else from the ``best_score`` saved in the file. Higher is better for accuracy and ``"max"``
    monitors, lower for loss, MAE and ``"min"`` monitors; ``monitor`` (from ``config.json``) decides
    for its own metric, the file's saved ``best_score`` mode for any other. Ties go to the earlier epoch.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for name in ("best_checkpoint_9_accuracy=0.9500.pt", "best_checkpoint_10_accuracy=0.9900.pt"):
        ...     torch.save({"model": {}}, d / name)
        >>> best_checkpoint(d).name  # not the last by name
        'best_checkpoint_10_accuracy=0.9900.pt'
    """
    scored = []
    for path in Path(directory).glob("best_checkpoint_*.pt"):
        match = _BEST.match(path.name)
        metric, value, epoch, mode = None, math.nan, math.inf, None
        if match:
            try:
                metric, value, epoch = match["metric"], float(match["value"]), int(match["epoch"])
            except ValueError:
                metric = None
        if monitor is not None and metric == monitor[0]:
            mode = monitor[1]
        elif metric in _MODES:
            mode = _MODES[metric]
        if metric is None or mode is None:  # the name does not tell: the score saved in the file does
            saved = read_checkpoint(path).get("best_score")
            if not isinstance(saved, Mapping) or saved.get("mode") not in ("min", "max") or saved.get("value") is None:
                logger.warning("%s: no best score in its name or its content; skipped", path)
                continue
            mode = saved["mode"]
            if metric is None:
                value, epoch = float(saved["value"]), int(saved.get("epoch") or 0)
        if math.isnan(value):
            continue
        scored.append((value if mode == "max" else -value, -epoch, path))
    return max(scored)[2] if scored else None


def checkpoint_of(path: Path) -> tuple[Path, Path]:
    """(checkpoint file, run directory) for a run directory (its best checkpoint, else its latest) or a file.

    A file's run directory is the one holding its ``checkpoints`` folder (or the file's own folder if
    that one has the ``config.json``).
    """
    if path.is_dir():
        found = best_checkpoint(path / "checkpoints", _monitor(path)) or Checkpointing.find_latest(path / "checkpoints")
        if found is None:
            raise UsageError(f"export: no checkpoint in {path / 'checkpoints'}")
        return found, path
    if path.is_file():
        parent = path.resolve().parent
        return path, parent if (parent / "config.json").is_file() else parent.parent  # RUN_DIR/checkpoints/FILE
    raise UsageError(f"export: {path} is neither a run directory nor a checkpoint file")


def _load_error(path: Path, size: int, e: Exception) -> Exception:
    """One line saying what is wrong with a checkpoint that ``torch.load`` could not read."""
    text = str(e)
    if isinstance(e, OSError):
        return RuntimeError(f"export: cannot read checkpoint {path}: {e.strerror or text}")
    if isinstance(e, EOFError) or "central directory" in text or "PytorchStreamReader" in text:
        return RuntimeError(f"export: checkpoint {path} is truncated or corrupt: its data ends early or is damaged ({size} bytes)")
    if isinstance(e, pickle.UnpicklingError):
        unsafe = re.search(r"GLOBAL ([\w.]+)", text)
        if unsafe:
            return RuntimeError(
                f"export: checkpoint {path} holds a pickled {unsafe[1]} object, not only tensors and plain values: "
                "it is not a Flint checkpoint and is unsafe to load"
            )
        return RuntimeError(f"export: checkpoint {path} is corrupt or not a PyTorch checkpoint: its pickle data does not read as tensors and values")
    first = text.splitlines()[0] if text else ""
    if "weights_only" in text or not first:  # torch's advice to load unsafely is not ours to give
        return RuntimeError(f"export: checkpoint {path} is corrupt: {type(e).__name__} while reading it")
    return RuntimeError(f"export: cannot load checkpoint {path}: {type(e).__name__}: {first}")


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Flint checkpoint's contents, loaded with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        UsageError: the file is not a Flint checkpoint (not a PyTorch file, or one holding something
            else than a dict with a ``"model"`` state_dict); the message names the file.
        RuntimeError: the file is empty, truncated, corrupt, unreadable or holds pickled objects
            other than tensors and plain values; one line naming the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise _load_error(path, 0, e) from None
    if size == 0:
        raise RuntimeError(f"export: checkpoint {path} is empty (0 bytes)")
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch.save's zip, or its older pickle
        raise UsageError(f"export: {path} is not a PyTorch checkpoint: it is neither a zip archive nor a pickle")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise _load_error(path, size, e) from None
    if not isinstance(state, Mapping):
        raise UsageError(f"export: {path} is not a Flint checkpoint: it holds a {type(state).__name__}, not a dict with a 'model' entry")
    if "model" not in state:
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UsageError(f"export: {path} is not a Flint checkpoint: it holds bare weights (a state_dict), not a 'model' entry")
        keys = ", ".join(map(str, list(state)[:5])) or "nothing"
        raise UsageError(f"export: {path} is not a Flint checkpoint: no 'model' entry (it has {keys})")
    weights = state["model"]
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UsageError(f"export: {path} is not a Flint checkpoint: its 'model' entry is not a state_dict of tensors")
    return dict(state)


def _load_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], checkpoint: Path, recipe: str) -> None:
    """``model.load_state_dict(weights)``, or one line saying how the checkpoint does not fit the recipe's model."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # a size mismatch
        lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line] or [str(e).splitlines()[0]]
        raise RuntimeError(f"export: checkpoint {checkpoint} does not fit recipe {recipe}'s model: {lines[0]}") from None
    if missing or unexpected:
        parts = [f"{label} {', '.join(keys[:3])}{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]  # fmt: skip
        raise RuntimeError(f"export: checkpoint {checkpoint} does not fit recipe {recipe}'s model: {'; '.join(parts)}")


def model_metadata(recipe: Recipe, config: Mapping[str, Any], checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """What a user of an exported model needs without Flint's code: input, normalisation, classes, the run.

    Keys: ``recipe``, ``dataset``, ``task``, ``input_shape`` (one sample; the batch dimension comes
    first and is free), ``preprocessing`` (in words), ``mean`` and ``std`` (per channel, or None if
    the input is not normalised), ``classes`` (names by output index, or None), ``output``,
    ``checkpoint`` (the file the weights came from) and ``config`` (the run's ``config.json``).

    Example:
        >>> from recipes import RECIPES
        >>> meta = model_metadata(RECIPES["lenet"], {"recipe": "lenet", "dataset": "mnist"}, "best.pt")
        >>> meta["input_shape"], meta["mean"], meta["std"], meta["classes"][:3]
        ([1, 28, 28], [0.1307], [0.3081], ['0', '1', '2'])
    """
    from recipes.data import DatasetInfo, dataset_info

    dataset = str(config.get("dataset") or recipe.default_dataset)
    try:
        info = dataset_info(dataset, recipe.task)
    except ValueError:
        info = DatasetInfo("unknown: not a dataset Flint knows")
    classification = recipe.task == "classification"
    return {
        "recipe": recipe.name,
        "dataset": dataset,
        "task": recipe.task,
        "input_shape": list(recipe.input_shape),
        "preprocessing": info.preprocessing,
        "mean": list(info.mean) if info.mean is not None else None,
        "std": list(info.std) if info.std is not None else None,
        "classes": list(info.classes) if info.classes is not None else None,
        "output": "logits, one per class (softmax gives probabilities)" if classification else "the predicted values",
        "checkpoint": Path(checkpoint).name,
        "config": dict(config),
    }


def _write_atomically(target: Path, write: Any) -> None:
    """``write(temp_path)``, then rename the temp file over ``target``: a reader never sees half a file."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, target)
    except OSError as e:
        raise RuntimeError(f"export: cannot write {target}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def export_model(path: str | Path, fmt: str, output: str | Path | None = None) -> Path:
    """Rebuild the run's model from ``config.json``, load the checkpoint's weights and write it as ``fmt``.

    For a run directory the checkpoint is its best (by the value each best checkpoint recorded,
    see :func:`best_checkpoint`), else its latest. ``onnx`` uses ``torch.onnx.export`` (the ``export``
    extra: onnx, onnxscript) with a dynamic batch dimension and the metadata of
    :func:`model_metadata` in the model's ``metadata_props`` (each value as JSON); ``torchscript``
    traces the model (TorchScript is deprecated in recent PyTorch) and stores the metadata as the
    extra file ``flint_metadata.json``; ``state_dict`` saves the plain weights for
    ``model.load_state_dict(torch.load(path, weights_only=True))`` and the metadata beside them, in
    the same path with ``.json`` as its last suffix. Files are written atomically. Returns the
    written path, by default ``RUN_DIR/model<suffix>``.

    Raises:
        UsageError: an unknown format, a path that is not a run directory or checkpoint, a run
            without checkpoints or ``config.json``, or a file that is not a Flint checkpoint.
        RuntimeError: a damaged checkpoint or one that does not fit the recipe's model, an
            unreadable ``config.json``, a write that failed; each one line naming the file.
    """
    from recipes import RECIPES

    if fmt not in FORMATS:
        raise UsageError(f"export --format {fmt!r}: choose from {', '.join(FORMATS)}")
    checkpoint, run_dir = checkpoint_of(Path(path))
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise UsageError(f"export: no config.json in {run_dir} to tell which recipe {checkpoint.name} belongs to")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RuntimeError(f"export: cannot read {config_file}: {e}".splitlines()[0]) from None
    name = config.get("recipe") if isinstance(config, dict) else None
    if name not in RECIPES:
        raise RuntimeError(f"export: {config_file} names recipe {name!r}; Flint's recipes are {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    target = Path(output) if output else run_dir / f"model{FORMATS[fmt]}"
    sidecar = target.with_suffix(".json")
    if fmt == "state_dict" and sidecar == target:
        raise UsageError(f"export -o {target}: the state_dict's metadata goes to the same path with .json; choose a name ending in .pt")
    model = recipe.build_model()
    _load_weights(model, read_checkpoint(checkpoint)["model"], checkpoint, recipe.name)
    model.eval()
    metadata = model_metadata(recipe, config, checkpoint)
    example = torch.randn(2, *recipe.input_shape)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise RuntimeError("export --format onnx needs onnx and onnxscript: pip install 'flint[export]'") from None
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(
            model, (example,), dynamo=True, verbose=False, input_names=["input"], output_names=["output"],
            dynamic_shapes=({0: batch},),
        )  # fmt: skip
        program.model.metadata_props.update({key: json.dumps(value) for key, value in metadata.items()})
        _write_atomically(target, lambda tmp: program.save(tmp, external_data=False))
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation: the docs say it
            traced = torch.jit.trace(model, example)
            extra = {METADATA_FILE: json.dumps(metadata, indent=2)}
            _write_atomically(target, lambda tmp: traced.save(str(tmp), _extra_files=extra))
    else:
        _write_atomically(target, lambda tmp: torch.save(model.state_dict(), tmp))
        _write_atomically(sidecar, lambda tmp: tmp.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8"))
    logger.debug("Exported %s (%s) to %s", checkpoint, fmt, target)
    return target
