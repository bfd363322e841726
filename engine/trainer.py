"""The training engine: one Ignite ``Engine`` whose step is BMXNet's forward/backward/update.

What this adds over ``ignite.engine.create_supervised_trainer``: the loss stays a tensor (no
``.item()`` host sync per step), gradient accumulation windows restart every epoch and a trailing
partial window is stepped and weighted by its samples (so a cycle equals one large batch exactly),
``TrainEvents`` fire around each real optimizer step, AMP works on CPU (bf16) as well as CUDA, and
the state counts samples seen.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
import weakref
from collections.abc import Callable, Generator, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, EventEnum, Events, State
from ignite.engine import _prepare_batch as _ignite_prepare_batch
from ignite.engine.engine import _EngineTerminateException, _EngineTerminateSingleEpochException
from ignite.engine.events import CallableEventWithFilter

__all__ = [
    "TrainEvents", "create_trainer", "batch_size_of", "samples_seen", "is_last_update_of_epoch", "iteration_in_epoch",
    "epoch_loss_total",
]  # fmt: skip

logger = logging.getLogger(__name__)

PrepareBatch = Callable[[Any, "torch.device | None", bool], tuple[Any, Any]]


class TrainEvents(EventEnum):
    """Events fired by a trainer from :func:`create_trainer`, once per real optimizer step.

    ``BEFORE_OPTIMIZER_STEP`` fires when the gradients of the whole update cycle are present (already
    unscaled under AMP): the place for clipping, gradient norms and gradient histograms.
    ``OPTIMIZER_STEPPED`` fires after ``optimizer.step()`` and ``zero_grad()``. Both can be filtered
    with ``every``/``once``, counted by ``engine.state.optimizer_step``.
    """

    BEFORE_OPTIMIZER_STEP = "before_optimizer_step"
    OPTIMIZER_STEPPED = "optimizer_stepped"


# The code of Ignite's every= filter (Events.X(every=n)): all its closures share it and hold n.
_EVERY_CODE = CallableEventWithFilter.every_event_filter(2).__code__


def _every_of(event_filter: Callable) -> int | None:
    """``n`` if ``event_filter`` is Ignite's ``every=n`` filter, else None (then it is called as Ignite does)."""
    code = getattr(event_filter, "__code__", None)
    if code is _EVERY_CODE and code.co_freevars == ("every",):
        every = event_filter.__closure__[0].cell_contents  # type: ignore[index]
        return every if isinstance(every, int) and every > 0 else None
    return None


class _Engine(Engine):
    """Ignite's ``Engine`` with a cheaper loop over the data; handlers see exactly what Ignite gives them.

    What it adds: Ignite's ``_fire_event`` formats a debug message for every event even with debug
    logging off, and its loop looks each event's handler list up by the event enum's Python
    ``__hash__``, creates a generator to check the stop flags after every event and compares events
    with the enum's Python ``__eq__``; a handler registered with an ``every=`` filter costs fifteen
    more calls at every event, due or not (its wrapper; the event's counter, which hashes and
    compares the event twice; the filter): each Python call costs 1-3.5 us in a real training loop,
    where the model's compute leaves the caches cold (docs/performance.md). Here, while the
    ``ignite.engine.engine.Engine`` logger (the name is kept) has DEBUG off when an epoch starts,
    the loop calls the handlers of the four per-iteration events itself from a plan of
    ``(every, handler)`` pairs (:meth:`_plan`): an ``every=`` filter is a modulo in the loop, the
    handler called only when due. It skips events without handlers (``last_event_name`` is still
    set) and checks the stop flags inline. Handlers added or removed through the engine take effect
    as with Ignite, within the same firing too; direct edits of ``_event_handlers`` (Ignite's
    profilers make them at STARTED) are read when the next epoch starts at the latest (sooner if a
    handler is added or removed through the engine). With DEBUG on, an epoch runs Ignite's own loop
    and every event is logged.
    """

    def __init__(self, process_function: Callable[[Engine, Any], Any]) -> None:
        super().__init__(process_function)
        self.logger = logging.getLogger("ignite.engine.engine.Engine")
        self._handler_lists_version = 0  # bumped when a handler list is replaced (Ignite's removal does that)
        self._lists_by_id: dict[int, tuple[Any, list]] = {}  # id(event) -> (event, its handler list)
        self._plans: dict[int, tuple[Any, list, list]] = {}  # id(event) -> (event, its handler list, its plan)
        self._quiet_epoch = False  # True while an epoch of the loop below runs or is paused (DEBUG was off)

    def add_event_handler(self, event_name: Any, handler: Callable, *args: Any, **kwargs: Any) -> Any:
        handle = super().add_event_handler(event_name, handler, *args, **kwargs)
        for _, handlers, plan in self._plans.values():  # in place: a firing under way sees it, as Ignite's list
            plan[:] = [self._plan_item(entry) for entry in handlers]
        return handle

    def remove_event_handler(self, handler: Callable, event_name: Any) -> None:
        super().remove_event_handler(handler, event_name)  # Ignite puts a new list in place of the old one
        self._handler_lists_version += 1
        self._lists_by_id.clear()
        for key, (event, handlers, _) in list(self._plans.items()):  # a new plan: a firing under way keeps the old
            if self._event_handlers[event] is not handlers:
                del self._plans[key]

    def _handler_wrapper(self, handler: Callable, event_name: Any, event_filter: Callable) -> Callable:
        wrapper = super()._handler_wrapper(handler, event_name, event_filter)
        every = _every_of(event_filter)
        if every is not None:  # checked in the loop; the wrapper itself marks it (a profiler's copy is not)
            wrapper._flint_every = (every, handler, wrapper)  # type: ignore[attr-defined]
        return wrapper

    def _plan(self, event_name: Any) -> list[tuple[int, Callable]]:
        """The event's handlers as ``(every, f)``: call ``f(engine)`` when the event's count % every is 0.

        Cached until a handler is removed or the next epoch starts; kept in step with added ones.
        """
        entry = self._plans.get(id(event_name))
        if entry is None:  # the entry holds the event: its id is not reused while cached
            handlers = self._event_handlers[event_name]
            entry = self._plans[id(event_name)] = (event_name, handlers, [self._plan_item(h) for h in handlers])
        return entry[2]

    def _iteration_plans(self) -> tuple[list, list, list, list]:
        return (self._plan(Events.GET_BATCH_STARTED), self._plan(Events.GET_BATCH_COMPLETED),
                self._plan(Events.ITERATION_STARTED), self._plan(Events.ITERATION_COMPLETED))  # fmt: skip

    def _plan_item(self, entry: tuple[Callable, tuple, dict]) -> tuple[int, Callable]:
        func, args, kwargs = entry
        if kwargs or len(args) != 1 or not isinstance(args[0], weakref.ref) or args[0]() is not self:
            return 1, lambda engine: _call_handlers([entry])  # more arguments, or none: Ignite's general call
        mark = getattr(func, "_flint_every", None)
        if mark is not None and mark[2] is func:  # Ignite's every= wrapper: its filter inline, its handler
            return mark[0], mark[1]
        return 1, func

    def _fire_event(self, event_name: Any, *event_args: Any, **event_kwargs: Any) -> None:
        # Within a quiet epoch (the trainer's TrainEvents), DEBUG is as the epoch found it: one call less.
        if not self._quiet_epoch and self.logger.isEnabledFor(logging.DEBUG):
            return super()._fire_event(event_name, *event_args, **event_kwargs)
        self.last_event_name = event_name
        # Found by identity: hashing an Ignite event runs Python code. The entry holds the event, so
        # its id cannot be reused by another object while it is cached.
        entry = self._lists_by_id.get(id(event_name))
        if entry is None or entry[0] is not event_name:
            entry = self._lists_by_id[id(event_name)] = (event_name, self._event_handlers[event_name])
        handlers = entry[1]
        if handlers:
            _call_handlers(handlers, event_args, event_kwargs)

    def _run_once_on_dataset_as_gen(self) -> Generator[State, None, float]:
        if self.logger.isEnabledFor(logging.DEBUG):
            return (yield from super()._run_once_on_dataset_as_gen())
        # Ignite 0.5.5's loop, with the changes the class docstring lists.
        start_time = time.time()
        iter_counter = 0 if self._init_iter is None else self._init_iter
        self._init_iter = None
        should_exit = False
        version = -1
        self._plans.clear()  # rebuilt from the handler lists as they are now
        self._quiet_epoch = True
        try:
            if self._dataloader_iter is None:
                raise RuntimeError("Internal error, self._dataloader_iter is None.")
            while True:
                self.state.batch = None
                try:
                    # Identity, not the enum's __eq__: Ignite itself sets last_event_name to this member.
                    if self.last_event_name is not Events.DATALOADER_STOP_ITERATION and self.state.dataloader is not None:
                        self.last_event_name = Events.GET_BATCH_STARTED
                        if version != self._handler_lists_version:  # first, or after a removal
                            version = self._handler_lists_version
                            get_started, get_completed, started, completed = self._iteration_plans()
                        for every, func in get_started:  # the plan inline: a call only when due
                            if not self.state.iteration % every:
                                func(self)
                        if self.should_terminate or self.should_terminate_single_epoch or self.should_interrupt:
                            yield from self._maybe_terminate_or_interrupt()
                    self.state.batch = next(self._dataloader_iter)
                    self.state.output = None
                    if self.state.dataloader is not None:
                        self.last_event_name = Events.GET_BATCH_COMPLETED
                        if version != self._handler_lists_version:  # first, or after a removal
                            version = self._handler_lists_version
                            get_started, get_completed, started, completed = self._iteration_plans()
                        for every, func in get_completed:  # the plan inline: a call only when due
                            if not self.state.iteration % every:
                                func(self)
                        if self.should_terminate or self.should_terminate_single_epoch or self.should_interrupt:
                            yield from self._maybe_terminate_or_interrupt()
                    iter_counter += 1
                    should_exit = False
                except StopIteration:
                    if self.state.epoch_length is None:
                        self.state.epoch_length = iter_counter
                        if self.state.max_iters is not None:
                            self.state.max_epochs = math.ceil(self.state.max_iters / self.state.epoch_length)
                        break
                    if should_exit:
                        if not self._is_done(self.state):
                            total = self.state.epoch_length * self.state.max_epochs if self.state.max_epochs is not None else self.state.max_iters
                            warnings.warn(
                                "Data iterator can not provide data anymore but required total number of iterations to run "
                                f"is not reached. Current iteration: {self.state.iteration} vs Total iterations to run : {total}"
                            )
                        break
                    if self.state.dataloader is not None:
                        self._fire_event(Events.DATALOADER_STOP_ITERATION)
                        yield from self._maybe_terminate_or_interrupt()
                    self._setup_dataloader_iter()
                    should_exit = True
                    continue

                self.state.iteration += 1
                self.last_event_name = Events.ITERATION_STARTED
                if version != self._handler_lists_version:  # first, or after a removal
                    version = self._handler_lists_version
                    get_started, get_completed, started, completed = self._iteration_plans()
                for every, func in started:  # the plan inline: a call only when due
                    if not self.state.iteration % every:
                        func(self)
                if self.should_terminate or self.should_terminate_single_epoch or self.should_interrupt:
                    yield from self._maybe_terminate_or_interrupt()
                self.state.output = self._process_function(self, self.state.batch)
                self.last_event_name = Events.ITERATION_COMPLETED
                if version != self._handler_lists_version:  # first, or after a removal
                    version = self._handler_lists_version
                    get_started, get_completed, started, completed = self._iteration_plans()
                for every, func in completed:  # the plan inline: a call only when due
                    if not self.state.iteration % every:
                        func(self)
                if self.should_terminate or self.should_terminate_single_epoch or self.should_interrupt:
                    yield from self._maybe_terminate_or_interrupt()
                if self.state.epoch_length is not None and iter_counter == self.state.epoch_length:
                    break
                if self.state.max_iters is not None and self.state.iteration == self.state.max_iters:
                    self.should_terminate = True
                    raise _EngineTerminateException()
        except _EngineTerminateSingleEpochException:
            self._fire_event(Events.TERMINATE_SINGLE_EPOCH, iter_counter=iter_counter)
            self._setup_dataloader_iter()
        except _EngineTerminateException:
            raise
        except Exception as e:
            self.logger.error(f"Current run is terminating due to exception: {e}")
            self._handle_exception(e)
        finally:
            self._quiet_epoch = False
        return time.time() - start_time


def _call_handlers(handlers: list, event_args: tuple = (), event_kwargs: dict | None = None) -> None:
    """Call an event's handlers as Ignite's ``Engine._fire_event`` does."""
    for func, args, kwargs in handlers:
        if event_kwargs:
            kwargs.update(event_kwargs)
        if args and isinstance(args[0], weakref.ref):  # Ignite holds the engine by weak reference
            engine = args[0]()
            if engine is None:
                raise RuntimeError("Engine reference not resolved. Cannot execute event handler.")
            func(engine, *event_args, *args[1:], **kwargs)
        else:  # metrics are registered without the engine
            func(*event_args, *args, **kwargs)


def batch_size_of(x: Any) -> int:
    """Number of samples in a batch: the leading dimension of its first tensor (no device sync)."""
    if isinstance(x, torch.Tensor):
        return int(x.shape[0]) if x.dim() > 0 else 1
    if isinstance(x, dict):
        return batch_size_of(next(iter(x.values())))
    if isinstance(x, Sequence) and not isinstance(x, str) and len(x) > 0:
        return batch_size_of(x[0])
    raise TypeError(f"Cannot tell the batch size of a {type(x).__name__}")


def samples_seen(engine: Engine) -> int:
    """Samples processed so far: ``state.samples`` of a Flint trainer, else the iteration count."""
    return int(getattr(engine.state, "samples", engine.state.iteration))


def is_last_update_of_epoch(engine: Engine) -> bool:
    """True while the current iteration is the last one of its epoch (False if the length is unknown)."""
    length = engine.state.epoch_length
    return length is not None and engine.state.iteration % length == 0


def iteration_in_epoch(engine: Engine) -> int:
    """Iterations done in the current epoch: non-zero at EPOCH_STARTED only when resuming mid-epoch."""
    length = engine.state.epoch_length
    return engine.state.iteration % length if length else 0


def epoch_loss_total(engine: Engine) -> tuple[float, int]:
    """``(sum of batch loss x batch size, samples)`` of the epoch so far, over all ranks, from a trainer
    made by :func:`create_trainer`. Reads one value back from the device: call it at log points only."""
    state: Any = engine.state
    if not isinstance(getattr(state, "loss_sum", None), torch.Tensor):
        raise TypeError("the engine keeps no running loss (state.loss_sum): use a trainer from engine.create_trainer")
    total: torch.Tensor = idist.all_reduce(state.loss_sum.clone())  # type: ignore[assignment]
    return float(total.item()), int(state.epoch_samples)


def _resolve_device(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        first = next(iter(model.parameters()), None)
        return first.device if first is not None else torch.device("cpu")
    return torch.device(device)


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
    are saved by ``engine.state_dict()``. Read them with :func:`epoch_loss_total`.

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
    before, stepped = TrainEvents.BEFORE_OPTIMIZER_STEP, TrainEvents.OPTIMIZER_STEPPED

    def optimizer_step(engine: Any) -> None:  # always the _Engine made below
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
        # Ignite's public fire_event first scans its list of allowed events (about 20 comparisons,
        # 6 us); these two were registered when the engine was made, so they are fired directly. In a
        # quiet epoch, from the event's plan (see _Engine): what _fire_event does, without its calls.
        if engine._quiet_epoch:
            engine.last_event_name = before
            entry = engine._plans.get(id(before))
            for every, func in entry[2] if entry is not None else engine._plan(before):
                if not state.optimizer_step % every:
                    func(engine)
        else:  # DEBUG on: Ignite's _fire_event logs it
            engine._fire_event(before)
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        if scaling:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if engine._quiet_epoch:
            engine.last_event_name = stepped
            entry = engine._plans.get(id(stepped))
            for every, func in entry[2] if entry is not None else engine._plan(stepped):
                if not state.optimizer_step % every:
                    func(engine)
        else:
            engine._fire_event(stepped)

    def update(engine: Engine, batch: Any) -> dict[str, Any]:
        if not model.training:
            model.train()
        if prepare_batch is None:  # two tensors: Tensor.to, inline (Ignite's general _prepare_batch costs twice as much)
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
        else:  # not even a nullcontext: each Python call costs 1-3.5 us here (docs/performance.md)
            y_pred = model(x)
            loss = loss_fn(y_pred, y)
        n = x.shape[0] if type(x) is torch.Tensor and x.ndim else batch_size_of(x)  # its first case, inline
        state: Any = engine.state
        state.samples += n * world
        state.epoch_samples += n * world
        detached = loss.detach()  # once: each op outside the model costs tens of us in a real CPU loop
        state.loss_sum.add_(detached, alpha=n)  # on the device: no host sync
        if accumulation_steps == 1:
            (scaler.scale(loss) if scaling else loss).backward()
            optimizer_step(engine)
        else:
            # Sum-weight each batch; optimizer_step divides by the cycle's samples.
            scaler.scale(loss * n).backward()
            state.cycle_batches += 1
            state.cycle_samples += n
            if state.cycle_batches == accumulation_steps or is_last_update_of_epoch(engine):
                optimizer_step(engine)
        return {"loss": detached, "y_pred": y_pred.detach(), "y": y}

    trainer = _Engine(update)
    trainer.register_events(
        *TrainEvents,
        event_to_attr={
            TrainEvents.BEFORE_OPTIMIZER_STEP: "optimizer_step",
            TrainEvents.OPTIMIZER_STEPPED: "optimizer_step",
        },
    )
    trainer.state_dict_user_keys.extend(["samples", "optimizer_step", "loss_sum", "epoch_samples"])

    @trainer.on(Events.STARTED)
    def _start(engine: Engine) -> None:
        state: Any = engine.state
        if state.iteration == 0:  # a fresh run; a resumed one keeps its loaded counters
            state.samples = state.optimizer_step = state.epoch_samples = 0
            state.loss_sum = torch.zeros((), device=device)
        state.loss_sum = state.loss_sum.to(device)
        state.cycle_batches = state.cycle_samples = 0  # the update cycle in progress
        optimizer.zero_grad(set_to_none=True)

    @trainer.on(Events.EPOCH_STARTED)
    def _new_epoch(engine: Engine) -> None:
        state: Any = engine.state
        if not iteration_in_epoch(engine):  # resuming mid-epoch keeps the loaded sums
            state.loss_sum.zero_()
            state.epoch_samples = 0

    @trainer.on(Events.EPOCH_COMPLETED)
    def _flush_partial_cycle(engine: Engine) -> None:
        # Only reached with data of unknown length, where the last iteration could not be detected.
        if engine.state.cycle_batches > 0:  # type: ignore[attr-defined]
            optimizer_step(engine)

    trainer.scaler = scaler  # type: ignore[attr-defined]  # for checkpoints: to_save["scaler"]
    return trainer
