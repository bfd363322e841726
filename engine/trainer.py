"""The training engine: one Ignite ``Engine`` whose step is BMXNet's forward/backward/update.

What this adds over ``ignite.engine.create_supervised_trainer``: the loss stays a tensor (no
``.item()`` host sync per step), gradient accumulation windows restart every epoch and a trailing
partial window is stepped and weighted by its samples (so a cycle equals one large batch exactly),
``TrainEvents`` fire around each real optimizer step, AMP works on CPU (bf16) as well as CUDA, a
:class:`flint.engine.TrainProgress` counts samples and optimizer steps and keeps the epoch's running
loss for every handler that reads it, and the engine fires Flint's events
(``flint.engine.FlintEvents``), so handlers compose in any order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine as IgniteEngine
from ignite.engine import Events, State
from ignite.utils import convert_tensor

from flint.engine.engine import Engine, FlintEvents, TrainEvents, register_state
from flint.engine.progress import PROGRESS_KEY, TrainProgress, progress

__all__ = ["create_trainer", "TrainStep", "prepare_batch", "batch_size_of", "samples_seen", "is_last_update_of_epoch"]

logger = logging.getLogger(__name__)

PrepareBatch = Callable[[Any, "torch.device | None", bool], tuple[Any, Any]]


def prepare_batch(batch: Any, device: str | torch.device | None = None, non_blocking: bool = False) -> tuple[Any, Any]:
    """``(x, y)`` of an ``(x, y)`` batch, moved to ``device`` with Ignite's ``convert_tensor`` (tensors,
    and tensors in sequences and mappings; anything else as it is).

    Example:
        >>> x, y = prepare_batch(([torch.zeros(2)], {"label": torch.ones(2)}), "cpu")
        >>> type(x).__name__, sorted(y)
        ('list', ['label'])
    """
    x, y = batch
    return convert_tensor(x, device, non_blocking), convert_tensor(y, device, non_blocking)


_default_prepare = prepare_batch  # the factories' argument of the same name hides it


def batch_size_of(x: Any) -> int:
    """Number of samples in a batch: the leading dimension of its first tensor (no device sync)."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.dim() > 0 else 1
    if isinstance(x, dict):
        return batch_size_of(next(iter(x.values())))
    if isinstance(x, Sequence) and not isinstance(x, str) and len(x) > 0:
        return batch_size_of(x[0])
    raise TypeError(f"Cannot tell the batch size of a {type(x).__name__}")


def samples_seen(engine: IgniteEngine) -> int:
    """Samples processed so far: :attr:`TrainProgress.samples` of a Flint trainer, else the iteration count."""
    counts = progress(engine)
    return counts.samples if counts is not None else engine.state.iteration


def is_last_update_of_epoch(engine: IgniteEngine) -> bool:
    """True while the current iteration is the last one of its epoch (False if the length is unknown)."""
    length = engine.state.epoch_length
    return length is not None and engine.state.iteration % length == 0


def _resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        first = next(iter(model.parameters()), None)
        return first.device if first is not None else torch.device("cpu")
    return torch.device(device)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP's (or DataParallel's) and ``torch.compile``'s wrappers, however nested."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # torch.compile's OptimizedModule
            model = getattr(model, "_orig_mod")
        else:
            return model


class _TrainerState(State):
    """Ignite's ``State``, whose ``optimizer_step`` reads the trainer's :class:`TrainProgress`: Ignite's
    event filters read the count they go by from the state (``TrainEvents.OPTIMIZER_STEPPED(every=N)``)."""

    def __init__(self, counts: TrainProgress) -> None:
        self._counts = counts  # before State's __init__, which looks up every filter's count
        super().__init__()

    @property
    def optimizer_step(self) -> int:
        return self._counts.optimizer_step


def _autocast_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


_BEFORE, _STEPPED = TrainEvents.BEFORE_OPTIMIZER_STEP.name, TrainEvents.OPTIMIZER_STEPPED.name  # fired when listened to


class TrainStep:
    """One iteration of BMXNet's loop, the trainer's process function: forward, loss, backward, and an
    update every ``accumulation_steps`` batches.

    It puts the model in train mode (also when only the module inside its DDP or ``torch.compile``
    wrapper is not: an evaluator running the plain module of a DDP-wrapped model leaves the wrapper's
    own flag set), moves the batch to ``device``, runs forward and the loss (under autocast if
    ``amp``) and back-propagates. At the end of each update cycle, and at the last iteration of an
    epoch, :meth:`optimizer_step` averages the gradients over the cycle's samples, fires
    ``TrainEvents.BEFORE_OPTIMIZER_STEP``, clips, steps, zeroes the gradients and fires
    ``TrainEvents.OPTIMIZER_STEPPED``: a cycle of N batches of size b is one step on a batch of N*b, up
    to float rounding, and a shorter last batch is weighted by its size. Its output is ``{"loss":
    detached loss tensor, "y_pred": detached prediction, "y": target}``; nothing reads a value back to
    the host. ``counts`` (:class:`flint.engine.TrainProgress`) gets the samples, steps, the cycle in
    progress and the epoch's running loss, on the device. :func:`create_trainer` builds one.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable[[Any, Any], torch.Tensor],
                 counts: TrainProgress, device: torch.device, accumulation_steps: int = 1, amp: bool = False,
                 clip_grad_norm: float | None = None, prepare_batch: PrepareBatch | None = None, non_blocking: bool = False) -> None:  # fmt: skip
        self.model, self.optimizer, self.loss_fn, self.counts, self.device = model, optimizer, loss_fn, counts, device
        self.accumulation_steps, self.amp, self.clip_grad_norm = accumulation_steps, amp, clip_grad_norm
        self.prepare_batch, self.non_blocking = prepare_batch, non_blocking
        self.amp_dtype = _autocast_dtype(device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp and self.amp_dtype == torch.float16)
        self.scaling = self.scaler.is_enabled()
        self.world = idist.get_world_size()  # data-parallel ranks see equal batches: samples seen are global
        self.inner = _unwrapped(model)

    def __call__(self, engine: Engine, batch: Any) -> dict[str, Any]:
        model, counts = self.model, self.counts
        if not (model.training and self.inner.training):
            model.train()
        if self.prepare_batch is not None:
            x, y = self.prepare_batch(batch, self.device, self.non_blocking)
        else:
            x, y = batch
            if type(x) is torch.Tensor and type(y) is torch.Tensor:  # the usual case, directly
                x, y = x.to(self.device, non_blocking=self.non_blocking), y.to(self.device, non_blocking=self.non_blocking)
            else:
                x, y = _default_prepare(batch, self.device, self.non_blocking)
        if self.amp:
            with torch.autocast(self.device.type, dtype=self.amp_dtype):
                y_pred = model(x)
                loss = self.loss_fn(y_pred, y)
        else:  # not entering a disabled autocast: it costs Python time every step
            y_pred = model(x)
            loss = self.loss_fn(y_pred, y)
        n = x.shape[0] if type(x) is torch.Tensor and x.ndim else batch_size_of(x)  # the usual case in line
        counts.samples += n * self.world
        counts.epoch_samples += n * self.world
        detached = loss.detach()
        counts.loss_sum.add_(detached, alpha=n)  # on the device: no host sync
        if self.accumulation_steps == 1:
            (self.scaler.scale(loss) if self.scaling else loss).backward()
            self.optimizer_step(engine)
        else:  # sum-weight each batch; optimizer_step divides by the cycle's samples
            (self.scaler.scale(loss * n) if self.scaling else loss * n).backward()
            counts.cycle_batches += 1
            counts.cycle_samples += n
            if counts.cycle_batches == self.accumulation_steps or is_last_update_of_epoch(engine):
                self.optimizer_step(engine)
        return {"loss": detached, "y_pred": y_pred.detach(), "y": y}

    def optimizer_step(self, engine: Engine) -> None:
        """End the update cycle: average the gradients over its samples, clip, step, zero, with the events around."""
        optimizer, counts = self.optimizer, self.counts
        if self.scaling:
            self.scaler.unscale_(optimizer)
        if self.accumulation_steps > 1 or self.clip_grad_norm is not None:
            # Read at each step: param groups may be added after the trainer was made (unfreezing).
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.accumulation_steps > 1:
            torch._foreach_div_([p.grad for p in params], float(counts.cycle_samples))
        counts.cycle_batches = counts.cycle_samples = 0
        counts.optimizer_step += 1
        # The engine's own dispatch: Ignite's public fire_event first looks the event up in a list (docs/engine.md).
        if _BEFORE in engine.listened:
            engine._fire_event(TrainEvents.BEFORE_OPTIMIZER_STEP)
        if self.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        if self.scaling:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if _STEPPED in engine.listened:
            engine._fire_event(TrainEvents.OPTIMIZER_STEPPED)

    def start(self, engine: Engine) -> None:
        """At ``STARTED``: fresh counts for a fresh run (a resumed one keeps its loaded ones), no cycle in progress."""
        if engine.state.iteration == 0:
            self.counts.restart(self.device)
        self.counts.loss_sum = self.counts.loss_sum.to(self.device)
        self.counts.cycle_batches = self.counts.cycle_samples = 0
        self.optimizer.zero_grad(set_to_none=True)

    def flush(self, engine: Engine) -> None:
        """At ``EPOCH_COMPLETED``: step a partial cycle left by data of unknown length (its last iteration could not be told)."""
        if self.counts.cycle_batches > 0:
            self.optimizer_step(engine)


def create_trainer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    device: str | torch.device | None = None,
    accumulation_steps: int = 1,
    amp: bool = False,
    clip_grad_norm: float | None = None,
    prepare_batch: PrepareBatch | None = None,
    non_blocking: bool = False,
) -> Engine:
    """Create a training engine running BMXNet's loop: forward, loss, backward, update (:class:`TrainStep`).

    The trainer's :class:`flint.engine.TrainProgress` (``flint.engine.progress(trainer)``) counts
    samples seen and optimizer steps and keeps the epoch's running loss on the device for every
    handler that reports or checks it; it is registered with the trainer
    (:func:`flint.engine.register_state`), so ``flint.handlers.Checkpointing`` saves and restores it.
    ``engine.state_dict()`` is Ignite's (epoch, iteration, lengths), before a run as after one.

    Args:
        model: the network; move it to ``device`` yourself.
        optimizer: the optimizer over the model's parameters.
        loss_fn: ``loss_fn(y_pred, y)`` returning a scalar mean loss.
        device: where batches go; default: the device of the model's first parameter.
        accumulation_steps: batches per optimizer step (default 1).
        amp: autocast in bfloat16 (float16 with a GradScaler on CUDA without bf16). Default False.
        clip_grad_norm: clip the gradients' total L2 norm to this value before each step. Default None.
        prepare_batch: ``prepare_batch(batch, device, non_blocking) -> (x, y)``; default: an ``(x, y)``
            pair of tensors moved with ``Tensor.to``, anything else with :func:`prepare_batch`.
        non_blocking: passed to ``prepare_batch``. Default False.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> trainer = create_trainer(model, opt, torch.nn.functional.mse_loss, accumulation_steps=2)
        >>> data = [(torch.ones(4, 3), torch.zeros(4, 1))] * 5
        >>> _ = trainer.run(data, max_epochs=2)
        >>> counts = progress(trainer)
        >>> counts.samples, counts.optimizer_step
        (40, 6)
    """
    if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise ValueError(f"Argument accumulation_steps should be a positive integer, got {accumulation_steps!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"Argument clip_grad_norm should be a positive number, got {clip_grad_norm!r}")
    device = _resolve_device(model, device)
    counts = TrainProgress(device)
    step = TrainStep(model, optimizer, loss_fn, counts, device, accumulation_steps, amp, clip_grad_norm, prepare_batch, non_blocking)
    trainer = Engine(step)
    trainer.state = _TrainerState(counts)
    register_state(trainer, PROGRESS_KEY, counts)
    trainer.fire_flint_events()
    trainer.register_events(*TrainEvents, event_to_attr={event: "optimizer_step" for event in TrainEvents})
    trainer.add_event_handler(Events.STARTED, step.start)
    trainer.add_event_handler(FlintEvents.NEW_EPOCH, lambda _: counts.new_epoch())  # not when resuming mid-epoch: the sums carry on
    trainer.add_event_handler(Events.EPOCH_COMPLETED, step.flush)
    trainer.scaler = step.scaler  # type: ignore[attr-defined]  # for checkpoints: to_save["scaler"]
    return trainer
