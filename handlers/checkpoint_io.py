"""A checkpoint's content checksum, and reading a checkpoint back: loaded safely, verified, one error naming the file."""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from ignite.handlers import Checkpoint

__all__ = ["CHECKSUM_KEY", "CheckpointError", "checksum", "read_state", "restore", "verify_checksum"]

CHECKSUM_KEY = "checksum"  # the reserved key of a checkpoint dict that holds its checksum


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read: missing, truncated, corrupt or unsafe.

    ``corrupt`` is True when the file itself is bad (truncated, not a checkpoint, unsafe to unpickle,
    its content not matching its checksum), False when reading it failed for another reason (I/O error, out of memory, a missing object).
    """

    def __init__(self, message: str, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


def checksum(state: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of ``state``'s content: every tensor's dtype, shape and bytes, every plain value, in order.

    Streams over the objects as they are (no serialisation; a tensor on a GPU is copied to the host
    one at a time). Lists and tuples count alike, so do dict kinds: what ``torch.load`` gives back of
    a saved state has the checksum of that state. ``CHECKSUM_KEY`` at the top level is left out.

    Example:
        >>> state = {"model": {"w": torch.ones(2)}, "epoch": 3}
        >>> checksum(state) == checksum({"model": {"w": torch.ones(2)}, "epoch": 3}) != checksum({**state, "epoch": 4})
        True
    """
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return f"sha256:{digest.hexdigest()}"


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest`` in an encoding that tells types, lengths and nesting apart."""
    if isinstance(value, torch.Tensor):
        flat = (value.to_dense() if value.layout != torch.strided else value).reshape(-1)  # a copy only if not contiguous
        digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy(force=True))  # its bytes (copied to the host only from a GPU)
    elif isinstance(value, Mapping):
        digest.update(f"M{len(value)}".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, (str, bytes)):
        data = value.encode() if isinstance(value, str) else value
        digest.update(f"{type(value).__name__}{len(data)}:".encode())
        digest.update(data)
    else:  # int, float, bool, None, torch.dtype, torch.device: repr is exact and round-trips
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def verify_checksum(state: Mapping[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """``state`` without its ``CHECKSUM_KEY``; :class:`CheckpointError` (``corrupt``) if its content does not match it.

    A state without the key (a checkpoint saved without a checksum) is returned as it is."""
    state = dict(state)
    saved = state.pop(CHECKSUM_KEY, None)
    if saved is not None and saved != checksum(state):
        raise CheckpointError(f"checkpoint {path} is corrupt: its content does not match its checksum", corrupt=True)
    return state


def read_state(path: str | os.PathLike[str], map_location: str | torch.device | None = None) -> Mapping[str, Any]:
    """The checkpoint at ``path``, loaded with ``torch.load(weights_only=True)`` and its checksum verified.

    Raises :class:`CheckpointError` if it cannot be read or its content does not match its checksum."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt, or holding objects that are not plain data
        raise _unreadable(path, e) from None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path} is not a Flint checkpoint: it holds a {type(state).__name__}, not a dict", corrupt=True)
    return verify_checksum(state, path)


def _unreadable(path: str | os.PathLike[str], e: Exception) -> CheckpointError:
    """One line saying what is wrong with a checkpoint that ``torch.load`` could not read (torch's own text can
    run to a page, and its advice to load an unsafe file is not Flint's to give)."""
    text = str(e)
    first = text.splitlines()[0] if text else ""
    if isinstance(e, OSError):
        return CheckpointError(f"cannot read checkpoint {path}: {e.strerror or first}")
    if isinstance(e, MemoryError) or "out of memory" in text:
        return CheckpointError(f"cannot load checkpoint {path}: out of memory")
    if isinstance(e, EOFError) or "central directory" in text or "PytorchStreamReader" in text:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        return CheckpointError(f"checkpoint {path} is truncated or corrupt: its data ends early or is damaged ({size} bytes)", corrupt=True)
    if isinstance(e, pickle.UnpicklingError):
        unsafe = re.search(r"GLOBAL ([\w.]+)", text)
        if unsafe:
            return CheckpointError(f"checkpoint {path} holds a pickled {unsafe[1]} object, not only tensors and plain values: "
                                   "it is not a Flint checkpoint and is unsafe to load", corrupt=True)  # fmt: skip
        return CheckpointError(f"checkpoint {path} is corrupt or not a PyTorch checkpoint: its pickle data does not read as tensors "
                               "and values", corrupt=True)  # fmt: skip
    if "weights_only" in text or not first:
        return CheckpointError(f"checkpoint {path} is corrupt: {type(e).__name__} while reading it", corrupt=True)
    return CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {first}", corrupt=True)


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
