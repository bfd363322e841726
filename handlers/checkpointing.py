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

from handlers.meters import BestScore
from handlers.safe_disk_saver import SafeDiskSaver

__all__ = ["Checkpointing", "CheckpointError"]

logger = logging.getLogger(__name__)
_LATEST = re.compile(r"^checkpoint_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read: missing, truncated, corrupt or unsafe.

    ``corrupt`` is True when the file itself is bad (truncated, not a checkpoint, unsafe to unpickle),
    False when reading it failed for another reason (I/O error, out of memory, a missing object).
    """

    def __init__(self, message: str, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


class Checkpointing:
    """Keeps the latest ``n_latest`` checkpoints and the best ``n_best`` by a validation metric.

    Two Ignite ``Checkpoint`` handlers over a :class:`SafeDiskSaver`: ``checkpoint_<iteration>.pt``
    written at each trainer EPOCH_COMPLETED (attach after validation), and
    ``best_checkpoint_<epoch>_<metric>=<value>.pt`` written when a validation result beats the best.
    Each file holds every object of ``to_save`` plus the best score and both handlers' rotation
    lists, so a resumed run keeps rotating and comparing as if never stopped. Everything is tensors
    and plain values: files load with ``torch.load(weights_only=True)``.

    Saves return once the state is serialised; fsync and rename finish in a background thread
    (``SafeDiskSaver(sync_in_background=True)``), which the next save and the trainer's COMPLETED
    wait for. Call :meth:`wait` before reading the directory if the run ended otherwise (an error).

    Args:
        dirname: the checkpoint directory.
        to_save: name -> object with ``state_dict``/``load_state_dict`` (model, optimizer, trainer,
            ``engine.RNGState()``, ...).
        n_latest: latest checkpoints kept. Default 2.
        metric: the evaluator metric to monitor; None keeps no best checkpoint. Default None.
        mode: ``"max"`` or ``"min"``: which direction of ``metric`` is better. Default ``"max"``.
        n_best: best checkpoints kept. Default 1.

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
    ) -> None:
        for name, value in (("n_latest", n_latest), ("n_best", n_best)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Argument {name} should be a positive integer, got {value!r}")
        self.dirname = Path(dirname)
        self.metric = metric
        self.best = BestScore(mode)
        self.objects: dict[str, Any] = {**to_save, "best_score": self.best}
        self.best_checkpoint: Checkpoint | None = None
        if metric is not None:
            sign = 1.0 if mode == "max" else -1.0
            self.best_checkpoint = Checkpoint(
                dict(self.objects),
                SafeDiskSaver(self.dirname, sync_in_background=True),
                filename_prefix="best",
                score_function=lambda engine: sign * float(engine.state.metrics[metric]),
                score_name=metric,
                n_saved=n_best,
                # The name shows the metric itself; Ignite's {score} would show the negated value in "min" mode.
                global_step_transform=lambda *_: f"{self.best.epoch}_{metric}={self.best.value:.4f}",
                filename_pattern="{filename_prefix}_{name}_{global_step}.{ext}",
            )
            self.objects["best_checkpointer"] = self.best_checkpoint
        self.latest = Checkpoint(
            self.objects,
            SafeDiskSaver(self.dirname, sync_in_background=True),
            n_saved=n_latest,
            global_step_transform=lambda engine, _: engine.state.iteration,
            filename_pattern="{name}_{global_step}.{ext}",
            include_self=True,
        )
        self._saved_at: int | None = None

    def attach(self, trainer: Engine, evaluator: Engine | None = None, every: int = 1) -> Checkpointing:
        """Save the latest every ``every`` epochs, at the last epoch and when the trainer is terminating
        (early stopping); track the best on ``evaluator`` COMPLETED."""
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"Argument every should be a positive integer, got {every!r}")
        if evaluator is not None and self.best_checkpoint is not None:
            evaluator.add_event_handler(Events.COMPLETED, self._on_validation, trainer)

        def due(engine: Engine, epoch: int) -> bool:
            return epoch % every == 0 or epoch == engine.state.max_epochs or bool(engine.should_terminate)

        trainer.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self.save_latest)
        trainer.add_event_handler(Events.COMPLETED, lambda _: self.wait())  # also after a stop (terminate)
        return self

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
        assert self.metric is not None and self.best_checkpoint is not None
        if self.best.update(float(evaluator.state.metrics[self.metric]), trainer.state.epoch):
            self.best_checkpoint(evaluator)

    def save_latest(self, trainer: Engine) -> None:
        """Write a latest checkpoint now, unless one was already written at this iteration."""
        if self._saved_at != trainer.state.iteration:
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

        A corrupt one (truncated, not a checkpoint, unsafe) is logged and renamed to ``<name>.corrupt``
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
        cannot be read or lacks an object of ``to_save``.
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # truncated, corrupt, or holding objects that are not plain data
            corrupt = not isinstance(e, (OSError, MemoryError)) and "out of memory" not in str(e)
            raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}".splitlines()[0], corrupt) from e
        if not isinstance(state, Mapping):
            raise CheckpointError(f"cannot load checkpoint {path}: not a checkpoint dictionary", corrupt=True)
        missing = [k for k in self.objects if k not in state and k not in ("best_score", "best_checkpointer")]
        if missing:
            raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
        Checkpoint.load_objects({k: v for k, v in self.objects.items() if k in state}, state)
        if "checkpointer" in state:
            self.latest.load_state_dict(state["checkpointer"])
        self._saved_at = None
        logger.info("Resumed from %s", path)
