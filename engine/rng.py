"""Seeding and a checkpointable snapshot of every random number generator a run draws from."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["RNGState", "seed_everything"]


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    With ``deterministic`` (default), cuDNN is also told to pick deterministic kernels and not to
    benchmark, so runs on a GPU repeat too (CPU kernels already do).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


class RNGState:
    """The states of torch (CPU and CUDA), NumPy and Python RNGs as a checkpointable object.

    ``state_dict()`` holds only tensors and plain Python values, so a checkpoint containing it loads
    with ``torch.load(weights_only=True)``. NumPy's key array and Python's 625-word state are stored
    as tensors (a list would be 625 objects for the checkpoint's pickler, slower to save:
    docs/performance.md). Put it in the objects to save; loading it restores every
    generator, so the run draws the same shuffles, dropout masks and augmentations as one that was
    never interrupted. Checkpoints holding Python's state as a list load too.

    Example:
        >>> rng = RNGState()
        >>> snapshot = rng.state_dict()
        >>> a = torch.rand(1)
        >>> rng.load_state_dict(snapshot)
        >>> bool(torch.equal(a, torch.rand(1)))
        True
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {
                "name": str(name),
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A checkpoint loaded with map_location="cuda" brings these tensors to the GPU; RNGs take CPU ones.
        torch.set_rng_state(state["torch"].cpu())
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
        n = state["numpy"]
        keys = n["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
        p = state["python"]
        internal = p["internal"]  # a tensor, or a list in checkpoints that hold it as one
        words = internal.tolist() if isinstance(internal, torch.Tensor) else internal
        random.setstate((p["version"], tuple(words), p["gauss"]))
