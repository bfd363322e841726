"""Checkpointing: the latest checkpoints and the best one by a validation metric, resumable exactly."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint

from flint.engine.engine import FlintEvents, registered_states, when
from flint.engine.progress import PROGRESS_KEY
from flint.handlers.checkpoint_io import CHECKSUM_KEY, CheckpointError, read_state, restore
from flint.handlers.meters import BestScore
from flint.handlers.safe_disk_saver import SafeDiskSaver

__all__ = ["Checkpointing"]

logger = logging.getLogger(__name__)
_LATEST = re.compile(r"^checkpoint_(\d+)\.pt$")
_RESERVED = {"best_score", "best_checkpointer", "checkpointer", CHECKSUM_KEY}  # keys of a checkpoint that are Checkpointing's own


class Checkpointing:
    """Keeps the latest ``n_latest`` checkpoints and the best ``n_best`` by a validation metric.

    Two Ignite ``Checkpoint`` handlers over a :class:`SafeDiskSaver`: ``checkpoint_<iteration>.pt``
    at the trainer's ``FlintEvents.SAVE`` every ``every`` epochs and at COMPLETED (the last epoch, a
    stop: early stopping, an interrupt, a preemption), and ``best_checkpoint_<epoch>_<metric>=<value>.pt``
    at the SAVE of an epoch whose validation beat the best (judged on the evaluator's COMPLETED).
    SAVE and COMPLETED come after the epoch's records, validation and early-stopping decision, so a
    checkpoint holds the same state whatever order handlers were attached in.

    Each file holds every object of ``to_save``, every handler state registered on the trainer
    (:func:`flint.engine.register_state`: ``BatchLogger``, ``EpochMetrics``, ``EpochTimer``,
    ``LRSchedule``, ...), the best score and both handlers' rotation lists, so a resumed run keeps
    rotating and comparing as if never stopped. Everything is tensors and plain values: files load
    with ``torch.load(weights_only=True)``. Each file also holds a checksum of its content (key
    ``"checksum"``, see :func:`flint.handlers.checkpoint_io.checksum`), verified by every load: a
    file whose content does not match it is corrupt, like a truncated one.

    Saves return once the state is serialised; fsync and rename finish in a background thread
    (``SafeDiskSaver(sync_in_background=True)``), which the next save and the trainer's COMPLETED
    wait for. Call :meth:`wait` before reading the directory if the run ended otherwise (an error).

    Args:
        dirname: the checkpoint directory.
        to_save: name -> object with ``state_dict``/``load_state_dict`` (model, optimizer, trainer,
            ``flint.engine.RNGState()``, ...); attached handlers' states are added by themselves.
        n_latest: latest checkpoints kept. Default 2.
        metric: the evaluator metric to monitor; None keeps no best checkpoint. Default None.
        mode: ``"max"`` or ``"min"``: which direction of ``metric`` is better. Default ``"max"``.
        n_best: best checkpoints kept. Default 1.
        every: epochs between latest checkpoints (the last epoch and a stop are always saved). Default 1.

    Example:
        >>> import tempfile, torch
        >>> from ignite.engine import Engine
        >>> d = tempfile.mkdtemp()
        >>> model = torch.nn.Linear(1, 1)
        >>> trainer = Engine(lambda e, b: None)
        >>> ckpt = Checkpointing(d, {"model": model, "trainer": trainer}).attach(trainer)
        >>> _ = trainer.run([0, 1], max_epochs=3)
        >>> sorted(os.listdir(d)), Checkpointing.find_latest(d).name
        (['checkpoint_4.pt', 'checkpoint_6.pt'], 'checkpoint_6.pt')
    """

    def __init__(
        self,
        dirname: str | os.PathLike[str],
        to_save: Mapping[str, Any],
        *,
        n_latest: int = 2,
        metric: str | None = None,
        mode: str = "max",
        n_best: int = 1,
        every: int = 1,
    ) -> None:
        for name, value in (("n_latest", n_latest), ("n_best", n_best), ("every", every)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Argument {name} should be a positive integer, got {value!r}")
        reserved = sorted(_RESERVED & set(to_save))
        if reserved:
            raise ValueError(f"Argument to_save should not use the keys {', '.join(map(repr, reserved))}: Checkpointing writes its own there")
        self.dirname = Path(dirname)
        self.metric, self.every = metric, every
        self.best = BestScore(mode)
        self.to_save = dict(to_save)
        self.trainer: Engine | None = None
        self.best_checkpoint: Checkpoint | None = None
        if metric is not None:
            sign = 1.0 if mode == "max" else -1.0
            self.best_checkpoint = Checkpoint(
                {},  # the objects are set at each save: see _objects
                SafeDiskSaver(self.dirname, sync_in_background=True, add_checksum=True),
                filename_prefix="best",
                score_function=lambda _: sign * float(self.best.value),  # type: ignore[arg-type]
                score_name=metric,
                n_saved=n_best,
                # The name shows the metric itself; Ignite's {score} would show the negated value in "min" mode.
                global_step_transform=lambda *_: f"{self.best.epoch}_{metric}={self.best.value:.4f}",
                filename_pattern="{filename_prefix}_{name}_{global_step}.{ext}",
            )
        self.latest = Checkpoint(
            {},
            SafeDiskSaver(self.dirname, sync_in_background=True, add_checksum=True),
            n_saved=n_latest,
            global_step_transform=lambda engine, _: engine.state.iteration,
            filename_pattern="{name}_{global_step}.{ext}",
            include_self=True,
        )
        self._saved_at: int | None = None
        self._best_unsaved = False  # the last validation beat the best; saved at the trainer's SAVE

    def attach(self, trainer: Engine, evaluator: Engine | None = None) -> Checkpointing:
        """Save the latest every ``every`` epochs and when the run ends or stops; track the best on ``evaluator``."""
        self.trainer = trainer
        if evaluator is not None and self.best_checkpoint is not None:
            evaluator.add_event_handler(Events.COMPLETED, self._on_validation, trainer)
        trainer.add_event_handler(when(trainer, FlintEvents.SAVE), self._on_save)
        trainer.add_event_handler(Events.COMPLETED, self._on_completed)
        return self

    def _objects(self) -> dict[str, Any]:
        """What a checkpoint holds: ``to_save``, the trainer's registered handler states, the best score."""
        handlers = registered_states(self.trainer) if self.trainer is not None else {}
        clash = sorted(set(handlers) & (set(self.to_save) | _RESERVED))
        if clash:
            raise ValueError(f"to_save and the trainer's handler states both use {', '.join(map(repr, clash))}")
        objects = {**self.to_save, **handlers, "best_score": self.best}
        if self.best_checkpoint is not None:
            objects["best_checkpointer"] = self.best_checkpoint
        return objects

    def wait(self) -> None:
        """Block until every save so far is on disk; raise the first write error (``OSError``)."""
        errors = []
        for checkpoint in (self.latest, self.best_checkpoint):
            if checkpoint is not None:
                try:
                    checkpoint.save_handler.wait()  # type: ignore[union-attr,attr-defined]  # a SafeDiskSaver
                except OSError as e:
                    errors.append(e)
        if errors:
            raise errors[0]

    def _on_validation(self, evaluator: Engine, trainer: Engine) -> None:
        assert self.metric is not None
        if self.best.update(float(evaluator.state.metrics[self.metric]), trainer.state.epoch):
            self._best_unsaved = True

    def _on_save(self, trainer: Engine) -> None:
        if self._best_unsaved and self.best_checkpoint is not None:  # first: the latest then lists it
            self._best_unsaved = False
            self.best_checkpoint.to_save = self._objects()
            self.best_checkpoint(trainer)
        if trainer.state.epoch % self.every == 0:
            self.save_latest(trainer)

    def _on_completed(self, trainer: Engine) -> None:
        self.save_latest(trainer)  # the last epoch, or where the run stopped
        self.wait()

    def save_latest(self, trainer: Engine) -> None:
        """Write a latest checkpoint now, unless one was already written at this iteration."""
        if self._saved_at != trainer.state.iteration:
            self.latest.to_save = self._objects()
            self.latest(trainer)
            self._saved_at = trainer.state.iteration

    @staticmethod
    def find_all(dirname: str | os.PathLike[str]) -> list[Path]:
        """The latest checkpoints in ``dirname``, newest (highest iteration) first."""
        found = [(int(m.group(1)), p) for p in Path(dirname).glob("checkpoint_*.pt") if (m := _LATEST.match(p.name))]
        return [p for _, p in sorted(found, reverse=True)]

    @staticmethod
    def find_latest(dirname: str | os.PathLike[str]) -> Path | None:
        """The latest checkpoint in ``dirname`` by iteration, or None if there is none."""
        found = Checkpointing.find_all(dirname)
        return found[0] if found else None

    def load_latest_valid(self, map_location: str | torch.device | None = None) -> Path | None:
        """Load the newest latest checkpoint that reads, falling back to older ones; None if there is none.

        A corrupt one (truncated, not a checkpoint, unsafe, its content not matching its checksum) is logged and renamed to ``<name>.corrupt``
        (kept, never deleted), so it is not tried again and the next save does not count it. Any other
        failure (an I/O error, a checkpoint lacking an object of this run) is raised as is. Raises
        :class:`CheckpointError` if checkpoints exist and none can be loaded.
        """
        errors = []
        for path in self.find_all(self.dirname):
            try:
                self.load(path, map_location=map_location)
            except CheckpointError as e:
                if not e.corrupt:
                    raise
                errors.append(str(e))
                logger.warning("%s; trying the previous checkpoint (this one is kept as %s.corrupt)", e, path.name)
                idist.barrier()  # every rank has read it before rank 0 sets it aside
                if idist.get_rank() == 0:
                    path.replace(path.with_name(path.name + ".corrupt"))
                continue
            return path
        if errors:
            raise CheckpointError(f"no checkpoint in {self.dirname} can be loaded: {errors[-1]}")
        return None

    def load(self, path: str | os.PathLike[str], map_location: str | torch.device | None = None) -> None:
        """Restore every object (and the handlers' own state) from the checkpoint at ``path``.

        Loads with ``weights_only=True`` only; raises :class:`CheckpointError` naming the file if it
        cannot be read or lacks an object of ``to_save``. A registered handler state the file does
        not hold (a handler the saving run did not have) is logged and left as it is.
        """
        path = Path(path)
        state = _upgraded(read_state(path, map_location))
        objects = self._objects()
        restore({k: v for k, v in objects.items() if k in state or k in self.to_save}, state, path)  # to_save: all required
        for key in [k for k in objects if k not in state and k not in ("best_score", "best_checkpointer")]:  # to_save's are all there
            # a handler attached now that the run saving it did not have (or a checkpoint without that entry)
            logger.warning("Checkpoint %s holds no state for %s: it starts afresh", path, key)
        if "checkpointer" in state:
            self.latest.load_state_dict(state["checkpointer"])
        self._saved_at = None
        logger.info("Resumed from %s", path)


def _upgraded(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """A checkpoint without a :class:`flint.engine.TrainProgress` entry, whose trainer entry holds those counts
    (each rank's running loss in ``loss_sums``): they move to that entry."""
    trainer, sums = state.get("trainer"), state.get("loss_sums")
    if PROGRESS_KEY in state or not isinstance(trainer, Mapping) or "samples" not in trainer:
        return state
    loss_sum = sums["loss_sum"] if isinstance(sums, Mapping) and "loss_sum" in sums else trainer["loss_sum"].reshape(1)
    counts = {key: trainer[key] for key in ("samples", "optimizer_step", "epoch_samples")}
    return {**state, PROGRESS_KEY: {**counts, "loss_sum": loss_sum}}
