"""The training engine: one Ignite ``Engine`` whose step is BMXNet's forward/backward/update.

What this adds over ``ignite.engine.create_supervised_trainer``: the loss stays a tensor (no
``.item()`` host sync per step), gradient accumulation windows restart every epoch and a trailing
partial window is stepped and weighted by its samples (so a cycle equals one large batch exactly),
``TrainEvents`` fire around each real optimizer step, AMP works on CPU (bf16) as well as CUDA, the
state counts samples seen and keeps the epoch's running loss for every handler that reads it, and
the engine fires Flint's events (``flint.engine.FlintEvents``), so handlers compose in any order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine as IgniteEngine
from ignite.engine import Events
from ignite.engine import _prepare_batch as _ignite_prepare_batch

from flint.engine.engine import Engine, FlintEvents, TrainEvents, register_state

__all__ = ["create_trainer", "batch_size_of", "samples_seen", "is_last_update_of_epoch", "epoch_loss_total"]

logger = logging.getLogger(__name__)

PrepareBatch = Callable[[Any, "torch.device | None", bool], tuple[Any, Any]]


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
    """Samples processed so far: ``state.samples`` of a Flint trainer, else the iteration count."""
    return int(getattr(engine.state, "samples", engine.state.iteration))


def is_last_update_of_epoch(engine: IgniteEngine) -> bool:
    """True while the current iteration is the last one of its epoch (False if the length is unknown)."""
    length = engine.state.epoch_length
    return length is not None and engine.state.iteration % length == 0


def epoch_loss_total(engine: IgniteEngine) -> tuple[float, int]:
    """``(sum of batch loss x batch size, samples)`` of the epoch so far, over all ranks, from a trainer
    made by :func:`create_trainer`. Reads one value back from the device: call it at log points only."""
    state: Any = engine.state
    if not isinstance(getattr(state, "loss_sum", None), torch.Tensor):
        raise TypeError("the engine keeps no running loss (state.loss_sum): use a trainer from flint.engine.create_trainer")
    total: torch.Tensor = idist.all_reduce(state.loss_sum.clone())  # type: ignore[assignment]
    return float(total.item()), int(state.epoch_samples)


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


class _RankLossSums:
    """Every rank's running loss in the checkpoint, which one rank writes: each rank resumes with its own.

    ``state.loss_sum`` is this rank's sum; the trainer's state dict holds only the saving rank's.
    ``state_dict`` gathers them (call it on every rank, as Ignite's ``Checkpoint`` does); with another
    number of ranks, rank 0 takes the total, so the epoch's loss stays whole.
    """

    def __init__(self, trainer: Engine) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": idist.all_gather(self.trainer.state.loss_sum.reshape(1))}  # type: ignore[attr-defined]

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        sums, rank = state["loss_sum"], idist.get_rank()
        own = sums[rank] if len(sums) == idist.get_world_size() else (sums.sum() if rank == 0 else torch.zeros_like(sums[0]))
        self.trainer.state.loss_sum = own.clone()  # type: ignore[attr-defined]


def _autocast_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


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
    """Create a training engine running BMXNet's loop: forward, loss, backward, update.

    Each iteration puts the model in train mode, moves the batch to ``device``, runs forward and
    the loss (under autocast if ``amp``) and back-propagates. Every ``accumulation_steps``
    iterations of an epoch (the "update cycle") and at the last iteration of an epoch, the gradients
    are averaged over the samples of the cycle, ``TrainEvents.BEFORE_OPTIMIZER_STEP`` fires,
    gradients are clipped if asked, the optimizer steps and gradients are zeroed. With equal batches
    a cycle of N batches of size b is one step on a batch of N*b, up to float rounding; a shorter
    last batch is weighted by its size.

    ``engine.state.output`` is ``{"loss": detached loss tensor, "y_pred": detached prediction,
    "y": target}``; nothing in the step reads a value back to the host. ``engine.state.samples``
    counts samples seen (by all ranks under ``ignite.distributed``, whose shards have equal batches)
    and ``engine.state.optimizer_step`` optimizer steps; both are saved by ``engine.state_dict()``.
    ``engine.state.cycle_batches`` is the number of batches whose gradients wait for the next step
    (0 between update cycles: where a run can stop without losing gradients).

    The step also keeps the epoch's running loss on the device, for every handler that reports or
    checks it (one in-place add per step instead of one per handler): ``engine.state.loss_sum`` is
    the sum of each batch's loss times its size on this rank, ``engine.state.epoch_samples`` the
    samples of the epoch on all ranks; both restart at each epoch (not when resuming mid-epoch) and
    are saved by ``engine.state_dict()``; every rank's ``loss_sum`` is also registered
    (``flint.engine.register_state``, key ``loss_sums``), so under ``ignite.distributed`` each rank resumes
    with its own, and with another number of ranks the epoch's total stays whole.
    Read them with :func:`epoch_loss_total`.

    The model is put back in train mode when it, or the module inside its DDP or ``torch.compile``
    wrapper, is not: an evaluator running the plain module of a DDP-wrapped model leaves the
    wrapper's own flag set.

    Args:
        model: the network; move it to ``device`` yourself.
        optimizer: the optimizer over the model's parameters.
        loss_fn: ``loss_fn(y_pred, y)`` returning a scalar mean loss.
        device: where batches go; default: the device of the model's first parameter.
        accumulation_steps: batches per optimizer step (default 1).
        amp: autocast in bfloat16 (float16 with a GradScaler on CUDA without bf16). Default False.
        clip_grad_norm: clip the gradients' total L2 norm to this value before each step. Default None.
        prepare_batch: ``prepare_batch(batch, device, non_blocking) -> (x, y)``; default: an ``(x, y)``
            pair of tensors moved with ``Tensor.to``, anything else with Ignite's ``_prepare_batch``.
        non_blocking: passed to ``prepare_batch``. Default False.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> trainer = create_trainer(model, opt, torch.nn.functional.mse_loss, accumulation_steps=2)
        >>> data = [(torch.ones(4, 3), torch.zeros(4, 1))] * 5
        >>> state = trainer.run(data, max_epochs=2)
        >>> state.samples, state.optimizer_step
        (40, 6)
    """
    if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
        raise ValueError(f"Argument accumulation_steps should be a positive integer, got {accumulation_steps!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise ValueError(f"Argument clip_grad_norm should be a positive number, got {clip_grad_norm!r}")
    device = _resolve_device(model, device)
    amp_dtype = _autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and amp_dtype == torch.float16)
    world = idist.get_world_size()  # data-parallel ranks see equal batches: samples seen are global

    scaling = scaler.is_enabled()
    # An evaluator may run the plain module while this trains a wrapper of it (DDP): its eval() then
    # leaves the wrapper's own flag True, so the wrapped module's flag is the one to check as well.
    inner = _unwrapped(model)

    def optimizer_step(engine: Engine) -> None:
        if scaling:
            scaler.unscale_(optimizer)
        if accumulation_steps > 1 or clip_grad_norm is not None:
            # Read at each step: param groups may be added after the trainer was made (unfreezing).
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        state: Any = engine.state  # Ignite's State takes new attributes; mypy does not know them
        if accumulation_steps > 1:
            torch._foreach_div_([p.grad for p in params], float(state.cycle_samples))
        state.cycle_batches = state.cycle_samples = 0
        state.optimizer_step += 1
        # Ignite's fire_event first finds the event in a list, comparing with Python's __eq__: ~95 calls.
        engine._fire_event(TrainEvents.BEFORE_OPTIMIZER_STEP)
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        if scaling:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        engine._fire_event(TrainEvents.OPTIMIZER_STEPPED)

    def update(engine: Engine, batch: Any) -> dict[str, Any]:
        if not (model.training and inner.training):
            model.train()
        if prepare_batch is None:  # two tensors: Tensor.to (Ignite's general _prepare_batch costs twice as much)
            x, y = batch
            if type(x) is torch.Tensor and type(y) is torch.Tensor:
                x, y = x.to(device, non_blocking=non_blocking), y.to(device, non_blocking=non_blocking)
            else:
                x, y = _ignite_prepare_batch(batch, device, non_blocking)
        else:
            x, y = prepare_batch(batch, device, non_blocking)
        if amp:
            with torch.autocast(device.type, dtype=amp_dtype):
                y_pred = model(x)
                loss = loss_fn(y_pred, y)
        else:  # a disabled autocast still costs ~3 us of Python per step
            y_pred = model(x)
            loss = loss_fn(y_pred, y)
        n = batch_size_of(x)
        state: Any = engine.state
        state.samples += n * world
        state.epoch_samples += n * world
        detached = loss.detach()
        state.loss_sum.add_(detached, alpha=n)  # on the device: no host sync
        if accumulation_steps == 1:
            scaler.scale(loss).backward()
            optimizer_step(engine)
        else:
            # Sum-weight each batch; optimizer_step divides by the cycle's samples.
            scaler.scale(loss * n).backward()
            state.cycle_batches += 1
            state.cycle_samples += n
            if state.cycle_batches == accumulation_steps or is_last_update_of_epoch(engine):
                optimizer_step(engine)
        return {"loss": detached, "y_pred": y_pred.detach(), "y": y}

    trainer = Engine(update)
    trainer.fire_flint_events()
    trainer.register_events(
        *TrainEvents,
        event_to_attr={
            TrainEvents.BEFORE_OPTIMIZER_STEP: "optimizer_step",
            TrainEvents.OPTIMIZER_STEPPED: "optimizer_step",
        },
    )
    trainer.state_dict_user_keys.extend(["samples", "optimizer_step", "loss_sum", "epoch_samples"])
    register_state(trainer, "loss_sums", _RankLossSums(trainer))  # one value per rank; also across a change of ranks

    @trainer.on(Events.STARTED)
    def _start(engine: Engine) -> None:
        state: Any = engine.state
        if state.iteration == 0:  # a fresh run; a resumed one keeps its loaded counters
            state.samples = state.optimizer_step = state.epoch_samples = 0
            state.loss_sum = torch.zeros((), device=device)
        state.loss_sum = state.loss_sum.to(device)
        state.cycle_batches = state.cycle_samples = 0  # the update cycle in progress
        optimizer.zero_grad(set_to_none=True)

    @trainer.on(FlintEvents.NEW_EPOCH)  # not when resuming mid-epoch: the loaded sums carry on
    def _new_epoch(engine: Engine) -> None:
        state: Any = engine.state
        state.loss_sum.zero_()
        state.epoch_samples = 0

    @trainer.on(Events.EPOCH_COMPLETED)
    def _flush_partial_cycle(engine: Engine) -> None:
        # Only reached with data of unknown length, where the last iteration could not be detected.
        if engine.state.cycle_batches > 0:  # type: ignore[attr-defined]
            optimizer_step(engine)

    trainer.scaler = scaler  # type: ignore[attr-defined]  # for checkpoints: to_save["scaler"]
    return trainer
