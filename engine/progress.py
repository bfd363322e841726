"""A trainer's counters: samples seen, optimizer steps, the update cycle in progress, the epoch's running loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

import ignite.distributed as idist
import ignite.engine
import torch

from flint.engine.engine import registered_states

__all__ = ["TrainProgress", "progress"]

PROGRESS_KEY = "train_progress"  # its key among the trainer's registered states, in checkpoints


class TrainProgress:
    """What a trainer made by :func:`flint.engine.create_trainer` counts; its step keeps it up to date.

    Read it with :func:`progress`. Ignite's ``State`` holds what Ignite's loop counts (epoch,
    iteration); this holds what Flint's step adds:

    - ``samples``: samples trained on, by all ranks under ``ignite.distributed`` (their shards have
      equal batches): BMXNet's ``global_step``, the x axis of Flint's plots;
    - ``optimizer_step``: optimizer steps taken;
    - ``epoch_samples``: the current epoch's samples, by all ranks;
    - ``loss_sum``: this rank's sum of each batch's loss times its size over the current epoch, a
      0-d tensor on the trainer's device (one in-place add per step, no host sync);
    - ``cycle_batches``, ``cycle_samples``: the batches and samples whose gradients wait for the next
      optimizer step (0 between update cycles: where a run can stop without losing gradients).

    A fresh run starts them at 0; ``epoch_samples`` and ``loss_sum`` restart at each
    ``FlintEvents.NEW_EPOCH`` (not when a run resumes inside an epoch). The trainer registers this
    object (:func:`flint.engine.register_state`, key ``"train_progress"``), so ``Checkpointing`` saves
    and restores it; ``state_dict`` gathers every rank's ``loss_sum`` (call it on every rank, as
    Ignite's ``Checkpoint`` does), so each rank resumes with its own, and with another number of
    ranks rank 0 takes the total and the epoch's loss stays whole. The update cycle is not saved (nor
    are gradients): Flint's handlers stop and save a run between cycles.

    Example:
        >>> p = TrainProgress()
        >>> p.samples, p.optimizer_step = 40, 6
        >>> copy = TrainProgress()
        >>> copy.load_state_dict(p.state_dict())
        >>> copy.samples, copy.optimizer_step, copy.epoch_loss()
        (40, 6, (0.0, 0))
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.restart(torch.device(device))

    def restart(self, device: torch.device) -> None:
        """Every count back to 0 (a fresh run), the running loss on ``device``."""
        self.samples = self.optimizer_step = self.epoch_samples = 0
        self.cycle_batches = self.cycle_samples = 0
        self.loss_sum = torch.zeros((), device=device)

    def new_epoch(self) -> None:
        """The epoch's running loss and samples back to 0."""
        self.loss_sum.zero_()
        self.epoch_samples = 0

    def epoch_loss(self) -> tuple[float, int]:
        """``(sum of batch loss x batch size, samples)`` of the epoch so far, over all ranks.

        Reads one value back from the device: call it at log points only (on every rank alike)."""
        total: torch.Tensor = idist.all_reduce(self.loss_sum.clone())  # type: ignore[assignment]
        return float(total.item()), self.epoch_samples

    def state_dict(self) -> dict[str, Any]:
        """The counts, and every rank's ``loss_sum`` (one value per rank, gathered)."""
        return {
            "samples": self.samples,
            "optimizer_step": self.optimizer_step,
            "epoch_samples": self.epoch_samples,
            "loss_sum": idist.all_gather(self.loss_sum.reshape(1)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; a 0-d ``loss_sum`` is this rank's own."""
        self.samples, self.optimizer_step = int(state["samples"]), int(state["optimizer_step"])
        self.epoch_samples = int(state["epoch_samples"])
        sums, rank = state["loss_sum"], idist.get_rank()
        if sums.ndim == 0:
            own = sums
        elif len(sums) == idist.get_world_size():
            own = sums[rank]
        else:  # saved by another number of ranks
            own = sums.sum() if rank == 0 else torch.zeros_like(sums[0])
        self.loss_sum = own.clone().to(self.loss_sum.device)


@overload
def progress(engine: ignite.engine.Engine) -> TrainProgress | None: ...
@overload
def progress(engine: ignite.engine.Engine, needed_by: str) -> TrainProgress: ...
def progress(engine: ignite.engine.Engine, needed_by: str | None = None) -> TrainProgress | None:
    """The :class:`TrainProgress` of a trainer made by :func:`flint.engine.create_trainer`; None for another engine.

    With ``needed_by`` (a handler's name), another engine raises ``TypeError`` naming that handler:
    handlers that need Flint's trainer call this in ``attach``.

    Example:
        >>> from ignite.engine import Engine
        >>> progress(Engine(lambda e, b: None)) is None
        True
        >>> progress(Engine(lambda e, b: None), "LossGuard")
        Traceback (most recent call last):
        ...
        TypeError: LossGuard needs a trainer made by flint.engine.create_trainer (it reads its TrainProgress); this engine has none
    """
    found = registered_states(engine).get(PROGRESS_KEY)
    if isinstance(found, TrainProgress):
        return found
    if needed_by is None:
        return None
    raise TypeError(
        f"{needed_by} needs a trainer made by flint.engine.create_trainer (it reads its TrainProgress); this engine has none"
    )

