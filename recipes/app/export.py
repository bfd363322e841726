"""``flint export``: a trained model from a run or checkpoint as ONNX, TorchScript or a state_dict, with its metadata."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flint.recipes.app.config import UsageError
from flint.recipes.app.registry import Recipe

__all__ = ["FORMATS", "METADATA_FILE", "export_model", "model_metadata", "data_metadata"]

logger = logging.getLogger(__name__)
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "state_dict": ".state_dict.pt"}
METADATA_FILE = "flint_metadata.json"  # the TorchScript extra file holding the metadata


def data_metadata(recipe: Recipe, dataset: str, task: str = "multiclass") -> dict[str, Any]:
    """What a model of ``recipe`` trained for ``task`` on ``dataset`` takes in and gives out: ``preprocessing`` (in words),
    ``mean`` and ``std`` (per channel, or None), ``classes`` (names by output index, or None).

    The recipe's own ``classes`` and ``normalization`` come first, then what Flint knows of a built-in
    dataset (:func:`flint.recipes.builtin.data.dataset_info`). A run keeps them in ``config.json``
    (``"metadata"``) for ``flint report``.

    Example:
        >>> from flint.recipes import Recipe
        >>> mine = Recipe("mine", "a model of mine", dict, {"made-up": dict}, classes=["cat", "dog"], normalization=(0.5, 0.2))
        >>> data_metadata(mine, "made-up")
        {'preprocessing': 'unknown: not a dataset Flint knows', 'mean': [0.5], 'std': [0.2], 'classes': ['cat', 'dog']}
    """
    from flint.recipes.builtin.data import DatasetInfo, dataset_info

    try:
        info = dataset_info(dataset, task)
    except ValueError:
        info = DatasetInfo("unknown: not a dataset Flint knows")
    mean, std = recipe.normalization or (info.mean, info.std)
    classes = recipe.classes or info.classes
    return {
        "preprocessing": info.preprocessing,
        "mean": list(mean) if mean is not None else None,
        "std": list(std) if std is not None else None,
        "classes": list(classes) if classes is not None else None,
    }


def model_metadata(recipe: Recipe, config: Mapping[str, Any], checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """What a user of an exported model needs without Flint's code: input, normalisation, classes, the run.

    Keys: ``recipe``, ``dataset``, ``task``, ``input_shape`` (one sample; the batch dimension comes
    first and is free), ``preprocessing`` (in words), ``mean`` and ``std`` (per channel, or None if
    the input is not normalised), ``classes`` (names by output index, or None) (these three from
    :func:`data_metadata`), ``output``, ``checkpoint`` (the file the weights came from) and ``config``
    (the run's ``config.json``).

    Example:
        >>> from flint.recipes import RECIPES
        >>> meta = model_metadata(RECIPES["lenet"], {"recipe": "lenet", "dataset": "mnist"}, "best.pt")
        >>> meta["input_shape"], meta["mean"], meta["std"], meta["classes"][:3]
        ([1, 28, 28], [0.1307], [0.3081], ['0', '1', '2'])
    """
    from flint.recipes.app.predict import OUTPUTS, output_kind
    from flint.recipes.app.tasks import run_task

    dataset = str(config.get("dataset") or recipe.default_dataset)
    task = run_task(recipe.task, config.get("task") or "")
    return {
        "recipe": recipe.name,
        "dataset": dataset,
        "task": task,
        "input_shape": list(recipe.input_shape),
        **data_metadata(recipe, dataset, task),
        "output": OUTPUTS[output_kind(task)],
        "checkpoint": Path(checkpoint).name,
        "config": dict(config),
    }


def export_model(path: str | Path, fmt: str, output: str | Path | None = None) -> Path:
    """Rebuild the run's model from ``config.json``, load the checkpoint's weights and write it as ``fmt``.

    For a run directory the checkpoint is its best (by the value each best checkpoint recorded,
    see :meth:`flint.recipes.app.rundir.RunDir.best_checkpoint`), else its latest. ``onnx`` uses ``torch.onnx.export`` (the ``export``
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
            unreadable ``config.json``; each one line naming the file.
        flint.handlers.WriteError: a file that could not be written, named, with the reason.
    """
    import torch

    from flint.handlers.files import WriteError
    from flint.recipes.app.runs import open_run

    if fmt not in FORMATS:
        raise UsageError(f"export --format {fmt!r}: choose from {', '.join(FORMATS)}")
    run = open_run(path)
    checkpoint, run_dir, config, recipe = run.checkpoint, run.run_dir, run.config, run.recipe
    target = Path(output) if output else run_dir / f"model{FORMATS[fmt]}"
    sidecar = target.with_suffix(".json")
    if fmt == "state_dict" and sidecar == target:
        raise UsageError(f"export -o {target}: the state_dict's metadata goes to the same path with .json; choose a name ending in .pt")
    model = run.model()
    metadata = model_metadata(recipe, config, checkpoint)
    example = torch.randn(2, *recipe.input_shape)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError.from_error("exported model", target, e) from None
    _WRITERS[fmt](model, example, metadata, target)
    logger.debug("Exported %s (%s) to %s", checkpoint, fmt, target)
    return target


def _write_onnx(model: Any, example: Any, metadata: dict[str, Any], target: Path) -> None:
    """``torch.onnx.export`` with a dynamic batch dimension, the metadata in ``metadata_props`` (each value as JSON)."""
    import torch

    from flint.handlers.files import write_atomic

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise RuntimeError("export --format onnx needs onnx and onnxscript: pip install 'flint[export]'") from None
    program = torch.onnx.export(model, (example,), dynamo=True, verbose=False, input_names=["input"], output_names=["output"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
    assert program is not None  # dynamo=True returns the program
    program.model.metadata_props.update({key: json.dumps(value) for key, value in metadata.items()})
    write_atomic(target, lambda tmp: program.save(tmp, external_data=False), "exported model")


def _write_torchscript(model: Any, example: Any, metadata: dict[str, Any], target: Path) -> None:
    """The traced model, the metadata as its extra file :data:`METADATA_FILE`."""
    import torch

    from flint.handlers.files import write_atomic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation: the docs say it
        traced = torch.jit.trace(model, example)
        extra = {METADATA_FILE: json.dumps(metadata, indent=2)}
        write_atomic(target, lambda tmp: traced.save(str(tmp), _extra_files=extra), "exported model")


def _write_state_dict(model: Any, example: Any, metadata: dict[str, Any], target: Path) -> None:
    """The plain weights, the metadata beside them in the same path with ``.json`` as its last suffix."""
    import torch

    from flint.handlers.files import write_atomic, write_text_atomic

    write_atomic(target, lambda tmp: torch.save(model.state_dict(), tmp), "exported model")
    write_text_atomic(target.with_suffix(".json"), json.dumps(metadata, indent=2) + "\n", "metadata file")


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript, "state_dict": _write_state_dict}  # by FORMATS' names
