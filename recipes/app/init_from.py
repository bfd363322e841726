"""``init_from``: a new run that starts from the weights of another run or checkpoint (fine-tuning).

Only the model's weights are taken: the optimizer, the LR schedule and the trainer's counts start
afresh. The weights must fit the model exactly; every key that does not is named.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flint.recipes.app.config import UsageError, option_text

if TYPE_CHECKING:
    import torch

__all__ = ["weight_mismatches", "load_init_weights"]

logger = logging.getLogger(__name__)

_SHOWN = 5  # keys named per kind of mismatch; the rest are counted


def weight_mismatches(model: Mapping[str, Sequence[int]], saved: Mapping[str, Sequence[int]]) -> list[str]:
    """What keeps ``saved`` weights from loading into a model, by kind: missing, mis-shaped and unexpected keys.

    Both map each state_dict key to its shape. Empty when they fit.

    Example:
        >>> weight_mismatches({"fc.weight": (2, 4), "fc.bias": (2,)}, {"fc.weight": (3, 4), "head.bias": (3,)})
        ['missing fc.bias', 'mis-shaped fc.weight (3x4 in the checkpoint, 2x4 in the model)', 'unexpected head.bias']
    """

    def listed(label: str, items: list[str]) -> list[str]:
        more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
        return [f"{label} {', '.join(items[:_SHOWN])}{more}"] if items else []

    def size(shape: Sequence[int]) -> str:
        return "x".join(map(str, shape)) or "scalar"

    missing = [k for k in model if k not in saved]
    shaped = [f"{k} ({size(saved[k])} in the checkpoint, {size(model[k])} in the model)"
              for k in model if k in saved and tuple(saved[k]) != tuple(model[k])]  # fmt: skip
    unexpected = [k for k in saved if k not in model]
    return [*listed("missing", missing), *listed("mis-shaped", shaped), *listed("unexpected", unexpected)]


def load_init_weights(model: torch.nn.Module, source: str, style: str = "cli") -> Path:
    """Load the weights of ``source`` (a run directory: its best checkpoint, else its latest, as ``flint
    evaluate`` picks it; or a checkpoint file) into ``model``; returns the checkpoint.

    Raises:
        UsageError: no such run or checkpoint, not a Flint checkpoint, or weights that do not fit
            ``model`` (each missing, mis-shaped and unexpected key named); ``init_from`` is named as
            ``style`` spells it.
        RuntimeError: a damaged checkpoint (see :func:`flint.recipes.app.runs.read_checkpoint`).
    """
    from flint.recipes.app.runs import checkpoint_of, read_checkpoint

    named = option_text("init_from", source, style)
    try:
        checkpoint, _ = checkpoint_of(Path(source))
        weights = read_checkpoint(checkpoint)["model"]
    except UsageError as e:
        raise UsageError(f"{named}: {e}") from None
    own = model.state_dict()
    problems = weight_mismatches({k: tuple(v.shape) for k, v in own.items()}, {k: tuple(v.shape) for k, v in weights.items()})
    if problems:
        raise UsageError(f"{named}: the weights of {checkpoint} do not fit the model: {'; '.join(problems)}")
    model.load_state_dict(weights)
    logger.info("Starting from the weights of %s", checkpoint)
    return checkpoint
