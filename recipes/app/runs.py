"""A run's files once it has run: its checkpoints (the best by the value each recorded), its config and its recipe.

``flint export`` and ``flint evaluate`` open runs through here; checkpoints are read only with
``torch.load(weights_only=True)``, and every problem is one line naming the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flint.handlers.checkpoint_io import CheckpointError, read_state
from flint.recipes.app.config import UsageError, style_of
from flint.recipes.app.fingerprint import check_recipe_file
from flint.recipes.app.registry import Recipe, load_recipe
from flint.recipes.app.rundir import RunDir

__all__ = ["Run", "open_run", "trained_epochs", "checkpoint_of", "read_checkpoint", "load_weights"]

logger = logging.getLogger(__name__)


def checkpoint_of(path: Path) -> tuple[Path, Path]:
    """(checkpoint file, run directory) for a run directory (its best checkpoint, else its latest) or a file.

    A file's run directory is the one holding its ``checkpoints`` folder (or the file's own folder if
    that one has the ``config.json``).
    """
    if path.is_dir():
        run = RunDir(path)
        found = run.best_checkpoint() or run.latest_checkpoint()
        if found is None:
            raise UsageError(f"no checkpoint in {run.checkpoints}")
        return found, path
    if path.is_file():
        parent = path.resolve().parent
        return path, parent if (parent / "config.json").is_file() else parent.parent  # RUN_DIR/checkpoints/FILE
    raise UsageError(f"{path} is neither a run directory nor a checkpoint file")


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A Flint checkpoint's contents, loaded with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        UsageError: the file is not a Flint checkpoint (not a PyTorch file, or one holding something
            else than a dict with a ``"model"`` state_dict); the message names the file.
        RuntimeError: the file is empty, truncated, corrupt (its content does not match its checksum),
            unreadable or holds pickled objects other than tensors and plain values; one line naming the file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)", corrupt=True)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch.save's zip, or its older pickle
        raise UsageError(f"{path} is not a PyTorch checkpoint: it is neither a zip archive nor a pickle")
    state = read_state(path, "cpu")  # loaded with weights_only=True, its checksum verified; one line naming the file
    if "model" not in state:
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            raise UsageError(f"{path} is not a Flint checkpoint: it holds bare weights (a state_dict), not a 'model' entry")
        keys = ", ".join(map(str, list(state)[:5])) or "nothing"
        raise UsageError(f"{path} is not a Flint checkpoint: no 'model' entry (it has {keys})")
    weights = state["model"]
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UsageError(f"{path} is not a Flint checkpoint: its 'model' entry is not a state_dict of tensors")
    return dict(state)


def load_weights(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], checkpoint: Path, recipe: str) -> None:
    """``model.load_state_dict(weights)``, or one line saying how the checkpoint does not fit the recipe's model."""
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # a size mismatch
        lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line] or [str(e).splitlines()[0]]
        raise RuntimeError(f"checkpoint {checkpoint} does not fit recipe {recipe}'s model: {lines[0]}") from None
    if missing or unexpected:
        parts = [f"{label} {', '.join(keys[:3])}{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]  # fmt: skip
        raise RuntimeError(f"checkpoint {checkpoint} does not fit recipe {recipe}'s model: {'; '.join(parts)}")


def trained_epochs(state: Mapping[str, Any]) -> int | None:
    """The epochs a checkpoint's trainer had completed (Ignite's state dict keeps the iteration); None if it has no trainer.

    Example:
        >>> trained_epochs({"trainer": {"iteration": 50, "epoch_length": 23}}), trained_epochs({})
        (2, None)
    """
    trainer = state.get("trainer")
    if not isinstance(trainer, Mapping):
        return None
    if "iteration" in trainer and trainer.get("epoch_length"):
        return int(trainer["iteration"]) // int(trainer["epoch_length"])
    return int(trainer["epoch"]) if "epoch" in trainer else None


@dataclass
class Run:
    """A run opened from its directory or one of its checkpoints."""

    checkpoint: Path  # the checkpoint chosen: the given file, else the run's best, else its latest
    run_dir: Path
    config: dict[str, Any]  # config.json, or the options the checkpoint carries
    recipe: Recipe
    state: dict[str, Any]  # the checkpoint's contents

    @property
    def epoch(self) -> int | None:
        return trained_epochs(self.state)

    def model(self) -> torch.nn.Module:
        """The recipe's model with the checkpoint's weights, in eval mode, on the CPU."""
        model = self.recipe.build_model()
        load_weights(model, self.state["model"], self.checkpoint, self.recipe.name)
        return model.eval()


def open_run(path: str | os.PathLike[str]) -> Run:
    """The run of a run directory (its best checkpoint) or of a checkpoint file.

    Raises:
        UsageError: no such run or checkpoint, a file that is not a Flint checkpoint, no config to
            tell its recipe, a recipe that cannot be loaded (see :func:`flint.recipes.load_recipe`).
        RuntimeError: a damaged or unreadable file; one line naming it.
    """
    checkpoint, run_dir = checkpoint_of(Path(path))
    state = read_checkpoint(checkpoint)
    config = RunDir(run_dir).config()
    where = str(run_dir)
    carried = state.get("config")
    if config is None and isinstance(carried, Mapping) and isinstance(carried.get("json"), str):
        config = json.loads(carried["json"])  # the options a checkpoint carries (flint.engine.register_state)
        config["fingerprint"] = json.loads(carried.get("fingerprint", "{}"))
        where = f"checkpoint {checkpoint}"
    if not isinstance(config, dict) or not isinstance(config.get("recipe"), str):
        raise UsageError(f"no config.json in {run_dir} (nor options in {checkpoint.name}) to tell which recipe it belongs to")
    spec = config["recipe"]
    if style_of(spec) == "python":
        raise UsageError(f"{checkpoint} was trained by fit() with a model of yours ({spec[4:]}): load "
                         "torch.load(path, weights_only=True)['model'] into it in Python")  # fmt: skip
    check_recipe_file(spec, config.get("fingerprint"), where)  # a run directory names code that is run: the code recorded
    return Run(checkpoint, run_dir, config, load_recipe(spec), state)
