"""``flint export``: a trained model from a run or checkpoint as ONNX, TorchScript or a state_dict (seed 002)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch

from handlers import Checkpointing
from recipes.config import UsageError

__all__ = ["FORMATS", "export_model", "checkpoint_of"]

logger = logging.getLogger(__name__)
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "state_dict": ".state_dict.pt"}


def checkpoint_of(path: Path) -> tuple[Path, Path]:
    """(checkpoint file, run directory) for a run directory (its best checkpoint, else its latest) or a file."""
    if path.is_dir():
        best = sorted((path / "checkpoints").glob("best_checkpoint_*.pt"))
        found = best[-1] if best else Checkpointing.find_latest(path / "checkpoints")
        if found is None:
            raise UsageError(f"export: no checkpoint in {path / 'checkpoints'}")
        return found, path
    if path.is_file():
        return path, path.parent.parent  # RUN_DIR/checkpoints/FILE
    raise UsageError(f"export: {path} is neither a run directory nor a checkpoint file")


def export_model(path: str | Path, fmt: str, output: str | Path | None = None) -> Path:
    """Rebuild the run's model from ``config.json``, load the checkpoint's weights and write it as ``fmt``.

    ``onnx`` uses ``torch.onnx.export`` (needs the ``export`` extra: onnx, onnxscript) with a dynamic
    batch dimension; ``torchscript`` traces the model (TorchScript is deprecated in recent PyTorch);
    ``state_dict`` saves the plain weights for ``model.load_state_dict``. Returns the written path,
    by default ``RUN_DIR/model<suffix>``.
    """
    from recipes import RECIPES

    if fmt not in FORMATS:
        raise UsageError(f"export --format {fmt!r}: choose from {', '.join(FORMATS)}")
    checkpoint, run_dir = checkpoint_of(Path(path))
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise UsageError(f"export: no config.json in {run_dir} to tell which recipe {checkpoint.name} belongs to")
    recipe = RECIPES[json.loads(config_file.read_text(encoding="utf-8"))["recipe"]]
    model = recipe.build_model()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
    model.eval()
    target = Path(output) if output else run_dir / f"model{FORMATS[fmt]}"
    example = torch.randn(2, *recipe.input_shape)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise RuntimeError("export --format onnx needs onnx and onnxscript: pip install 'flint[export]'") from None
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            model, (example,), target, dynamo=True, external_data=False, verbose=False,
            input_names=["input"], output_names=["output"], dynamic_shapes=({0: batch},),
        )  # fmt: skip
    elif fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.trace(model, example).save(str(target))
        logger.info("TorchScript is deprecated in recent PyTorch; prefer --format onnx or state_dict")
    else:
        torch.save(model.state_dict(), target)
    logger.info("Exported %s (%s) to %s", checkpoint, fmt, target)
    return target
