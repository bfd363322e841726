"""Flint's Engine: Ignite's own, plus a fixed sequence of events after Ignite's, so handlers compose in any order.

Ignite runs the handlers of one event in the order they were attached: a logger attached before a
metric reads last epoch's value, a checkpoint attached before validation misses the best score. A
Flint engine (from :func:`flint.engine.create_trainer` or :func:`flint.engine.create_evaluator`) also fires
:class:`FlintEvents`, each right after all handlers of the Ignite event it follows, and Flint's
handlers attach to the event of their role: what must happen before something else is on an
earlier event, whatever the order of ``attach`` calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import ignite.engine
from ignite.engine import EventEnum, Events, EventsList, State

__all__ = ["Engine", "FlintEvents", "TrainEvents", "when", "register_state", "registered_states", "iteration_in_epoch"]


class FlintEvents(EventEnum):
    """The events a Flint engine fires after Ignite's, in this order (a Flint handler's role in brackets).

    After EPOCH_STARTED's handlers:

    - ``NEW_EPOCH``: only when the epoch starts at its first batch, not when a run resumes inside
      it. Per-epoch state is reset here (metrics, the running loss, a log interval), so a state
      loaded from a mid-epoch checkpoint carries on. This is where "is the epoch resumed?" is decided.

    After ITERATION_COMPLETED's handlers (metrics updated):

    - ``ITERATION_REPORT``: per-iteration records (``BatchLogger``, ``ETA``'s progress file).

    After EPOCH_COMPLETED's handlers (metrics computed, the epoch timer stopped, ``LossGuard``):

    - ``EPOCH_REPORT``: the epoch's records (``EpochMetrics``, ``NetSummaries``' weights, ``ETA``);
    - ``VALIDATE``: the evaluator runs (``Validation``; the best score and early stopping are
      decided on the evaluator's COMPLETED, inside it);
    - ``SAVE``: checkpoints (``Checkpointing``), and stop requests taken at an epoch's end (``Preemption``).

    A stop is Ignite's ``engine.terminate()``, a flag that takes effect once the event being fired
    has run all its handlers (and, for the two COMPLETED events, these); ``Checkpointing`` then saves
    at COMPLETED, after ``LossGuard`` has checked the loss at TERMINATE.
    """

    NEW_EPOCH = "new_epoch"
    ITERATION_REPORT = "iteration_report"
    EPOCH_REPORT = "epoch_report"
    VALIDATE = "validate"
    SAVE = "save"


class TrainEvents(EventEnum):
    """Events fired by a trainer from :func:`flint.engine.create_trainer`, once per real optimizer step.

    ``BEFORE_OPTIMIZER_STEP`` fires when the gradients of the whole update cycle are present (already
    unscaled under AMP): the place for clipping, gradient norms and gradient histograms.
    ``OPTIMIZER_STEPPED`` fires after ``optimizer.step()`` and ``zero_grad()``. Both can be filtered
    with ``every``/``once``, which count optimizer steps (``flint.engine.TrainProgress``).
    """

    BEFORE_OPTIMIZER_STEP = "before_optimizer_step"
    OPTIMIZER_STEPPED = "optimizer_stepped"


# The one table of Flint's events: each one's Ignite event. A FlintEvent fires right after that
# event's handlers, in this order; on a plain Ignite engine, `when` gives that event instead. The
# trainer fires TrainEvents inside its step; their Ignite event is where a plain engine's handler
# sees the step done.
_FOLLOWS: dict[FlintEvents | TrainEvents, Events] = {
    FlintEvents.NEW_EPOCH: Events.EPOCH_STARTED,
    FlintEvents.ITERATION_REPORT: Events.ITERATION_COMPLETED,
    FlintEvents.EPOCH_REPORT: Events.EPOCH_COMPLETED,
    FlintEvents.VALIDATE: Events.EPOCH_COMPLETED,
    FlintEvents.SAVE: Events.EPOCH_COMPLETED,
    TrainEvents.BEFORE_OPTIMIZER_STEP: Events.ITERATION_COMPLETED,
    TrainEvents.OPTIMIZER_STEPPED: Events.ITERATION_COMPLETED,
}

# The same table by Ignite event, for firing. Keyed by identity: Ignite fires its events' single
# members, and hashing one runs Python code on every event.
_FIRED_AFTER: dict[int, tuple[FlintEvents, ...]] = {
    id(after): tuple(e for e in FlintEvents if _FOLLOWS[e] is after) for after in set(_FOLLOWS.values())
}


class Engine(ignite.engine.Engine):
    """Ignite's ``Engine`` (its own loop), firing :class:`FlintEvents` once they are registered.

    :func:`flint.engine.create_trainer` and :func:`flint.engine.create_evaluator` call :meth:`fire_flint_events`;
    constructed directly it behaves as Ignite's (Ignite's own engine and handler tests pass with it).
    Its override of ``_fire_event`` (the method Ignite's loop calls for every event) runs Ignite's
    and then fires the Flint events that follow the event just fired, through ``_fire_event`` again,
    so whatever watches it (a profiler, a tracer) sees them too; a Flint event that no handler was
    added for is not fired (:attr:`listened`). Named ``Engine`` like its base, so
    Ignite's messages read the same.

    Example:
        >>> seen = []
        >>> engine = Engine(lambda e, b: None)
        >>> engine.fire_flint_events()
        >>> for event in (Events.EPOCH_COMPLETED, FlintEvents.SAVE, FlintEvents.EPOCH_REPORT):
        ...     _ = engine.add_event_handler(event, lambda e, name=event.name: seen.append(name))
        >>> _ = engine.run([0], max_epochs=1)
        >>> seen
        ['EPOCH_COMPLETED', 'EPOCH_REPORT', 'SAVE']
    """

    def __init__(self, process_function: Any) -> None:
        self.listened: set[str] = set()
        """The names of the events a handler was ever added for: a Flint event no handler listens to is not fired."""
        super().__init__(process_function)
        self._fired_after: dict[int, tuple[FlintEvents, ...]] = {}  # none until fire_flint_events

    def add_event_handler(self, event_name: Any, handler: Any, *args: Any, **kwargs: Any) -> Any:
        """Ignite's; the event's name joins :attr:`listened` (an ``EventsList`` adds each of its events through here)."""
        handle = super().add_event_handler(event_name, handler, *args, **kwargs)
        if not isinstance(event_name, EventsList):
            self.listened.add(getattr(event_name, "name", event_name))  # a filtered event keeps its event's name
        return handle

    def fire_flint_events(self) -> None:
        """Register :class:`FlintEvents` and fire them from now on; ``every``/``once`` filters on them
        count iterations (``ITERATION_REPORT``) or epochs (the others), as on the Ignite event each follows."""
        self.register_events(*FlintEvents, event_to_attr={e: State.event_to_attr[_FOLLOWS[e]] for e in FlintEvents})
        self._fired_after = _FIRED_AFTER

    def _fire_event(self, event_name: Any, *event_args: Any, **event_kwargs: Any) -> None:
        super()._fire_event(event_name, *event_args, **event_kwargs)
        for event in self._fired_after.get(id(event_name), ()):
            if event._name_ not in self.listened or (event is FlintEvents.NEW_EPOCH and iteration_in_epoch(self)):
                continue  # nobody listens; or an epoch resumed inside: its state was loaded, not new
            self._fire_event(event)


def when(engine: ignite.engine.Engine, event: FlintEvents | TrainEvents) -> Any:
    """``event`` if ``engine`` fires it, else the Ignite event it follows (where handlers then run in attach order).

    Flint's handlers attach through this, so they also work on a plain Ignite ``Engine``.

    Example:
        >>> when(ignite.engine.Engine(lambda e, b: None), FlintEvents.SAVE) is Events.EPOCH_COMPLETED
        True
    """
    return event if engine.has_registered_events(event) else _FOLLOWS[event]


class Stateful(Protocol):
    def state_dict(self) -> Mapping[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


def register_state(engine: ignite.engine.Engine, key: str, obj: Stateful) -> None:
    """Have ``obj``'s ``state_dict()`` saved and restored with ``engine``'s checkpoints under ``key``.

    Stateful handlers call this in ``attach``; ``flint.handlers.Checkpointing`` saves and loads every
    object registered on its trainer beside its own ``to_save`` (Lightning's ``state_key``).

    Raises:
        ValueError: another object is registered under ``key`` on this engine.
    """
    states = registered_states(engine)
    if states.get(key, obj) is not obj:
        raise ValueError(f"two objects keep state under {key!r} on one engine: give one another state_key")
    states[key] = obj


def registered_states(engine: ignite.engine.Engine) -> dict[str, Stateful]:
    """The objects registered with :func:`register_state` on ``engine``, by key."""
    return vars(engine).setdefault("handler_states", {})


def iteration_in_epoch(engine: ignite.engine.Engine) -> int:
    """Iterations done in the current epoch (0 before its first; non-zero at EPOCH_STARTED only on a resume mid-epoch)."""
    length = engine.state.epoch_length
    return engine.state.iteration % length if length else 0
