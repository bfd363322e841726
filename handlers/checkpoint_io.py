"""Reading a checkpoint back: one error naming the file and what is wrong with it, loaded safely."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from ignite.handlers import Checkpoint

__all__ = ["CheckpointError", "read_state", "restore"]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read: missing, truncated, corrupt or unsafe.

    ``corrupt`` is True when the file itself is bad (truncated, not a checkpoint, unsafe to unpickle),
    False when reading it failed for another reason (I/O error, out of memory, a missing object).
    """

    def __init__(self, message: str, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


def read_state(path: str | os.PathLike[str], map_location: str | torch.device | None = None) -> Mapping[str, Any]:
    """The checkpoint at ``path``, loaded with ``torch.load(weights_only=True)``; :class:`CheckpointError` if it cannot be."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt, or holding objects that are not plain data
        corrupt = not isinstance(e, (OSError, MemoryError)) and "out of memory" not in str(e)
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0], corrupt) from e
    if not isinstance(state, Mapping):
        raise CheckpointError(f"cannot load checkpoint {path}: not a checkpoint dictionary", corrupt=True)
    return state


_MISFIT = (KeyError, ValueError, TypeError, RuntimeError, IndexError)  # what torch and Ignite raise for a state that does not fit


def restore(objects: Mapping[str, Any], state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """``load_state_dict`` of each of ``objects`` from ``state``, or one :class:`CheckpointError` naming the object.

    Ignite's ``Checkpoint.load_objects`` does the loading; this adds the file and the object to its
    errors, requires every object, and refuses an optimizer state saved by another kind of optimizer
    (torch would load it and fail at the first step)."""
    missing = [key for key in objects if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    for key, obj in objects.items():
        if isinstance(obj, torch.optim.Optimizer):
            _check_optimizer_state(obj, state[key], f"checkpoint {path}: its {key}")
        try:
            Checkpoint.load_objects({key: obj}, {key: state[key]})
        except _MISFIT as e:
            if type(e) not in _MISFIT:
                raise  # an error of its own kind (a run refusing other options): as it is
            detail = str(e).splitlines()[0] if str(e) else ""
            raise CheckpointError(
                f"checkpoint {path}: its {key} does not fit this run's ({type(e).__name__}: {detail}); "
                "was it saved with other options (another optimizer, model or loss)?"
            ) from e


def _check_optimizer_state(optimizer: torch.optim.Optimizer, saved: Any, what: str) -> None:
    """Refuse the state of another kind of optimizer. Its param groups' options tell: each kind has
    its own (momentum, betas, ...); a newer torch only adds options, so a difference both ways means
    another optimizer."""
    groups = saved.get("param_groups") if isinstance(saved, Mapping) else None
    if not groups or not optimizer.param_groups:
        return
    theirs, ours = set(groups[0]) - {"params"}, set(optimizer.param_groups[0]) - {"params"}
    if theirs - ours and ours - theirs:
        raise CheckpointError(
            f"{what} was saved by another optimizer than {type(optimizer).__name__} (its options "
            f"{', '.join(sorted(theirs - ours))}; this one's {', '.join(sorted(ours - theirs))}): resume with the run's optimizer"
        )
