"""A run's history as Keras's ``History`` holds it: one dict per epoch, read from its ``metrics.jsonl``."""

from __future__ import annotations

import math
import os
from typing import Any

from flint.recipes.app.console import epoch_values
from flint.recipes.app.report import latest_per_epoch, read_records

__all__ = ["run_history"]


def run_history(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One dict per epoch of the whole run in ``run_dir`` (every launch), in epoch order.

    Each holds ``epoch`` and the numbers of the epoch's console line
    (:func:`flint.recipes.app.console.epoch_values`): the training ones by name (``loss``,
    ``accuracy``...), the validation ones prefixed ``val_``. The last ``training`` and ``validation``
    record of each epoch count, as in ``flint report`` (an attempt that died before its checkpoint,
    then the resumed one); a number written as ``null`` (not finite) is NaN.

    Example:
        >>> import json, tempfile
        >>> from pathlib import Path
        >>> run = Path(tempfile.mkdtemp())
        >>> records = [{"phase": "training", "epoch": 1, "loss": 0.5, "lr": [0.1]}, {"phase": "validation", "epoch": 1, "loss": None},
        ...            {"phase": "training", "epoch": 1, "loss": 0.4, "lr": [0.1]}]
        >>> _ = (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in records))
        >>> run_history(run)
        [{'epoch': 1, 'loss': 0.4, 'val_loss': nan}]
    """
    records = read_records(run_dir)
    last = {phase: {r["epoch"]: {k: math.nan if v is None else v for k, v in r.items()} for r in latest_per_epoch(records, phase)}
            for phase in ("training", "validation")}  # fmt: skip
    epochs = sorted({*last["training"], *last["validation"]})
    return [{"epoch": e, **epoch_values(last["training"].get(e), last["validation"].get(e))} for e in epochs]
