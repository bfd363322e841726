"""Net summaries: weight and gradient histograms every epoch, as BMXNet's ``write_net_summaries``."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from ignite.engine import Engine

from flint.engine.engine import FlintEvents, TrainEvents, when
from flint.engine.trainer import samples_seen

__all__ = ["NetSummaries"]

logger = logging.getLogger(__name__)


class NetSummaries:
    """Writes ``weights/<name>`` histograms at epoch end and ``grads/<name>`` of the epoch's last update.

    Weights are written at ``FlintEvents.EPOCH_REPORT``. Gradients are zeroed right after each
    optimizer step, so on a Flint trainer they are taken at ``TrainEvents.BEFORE_OPTIMIZER_STEP`` of
    the epoch's last iteration (the whole cycle's gradients); on another engine at its last
    ITERATION_COMPLETED. The x axis is samples seen. Ignite's
    ``WeightsHistHandler``/``GradsHistHandler`` step by epoch or iteration and cannot pick the last
    update; this adds both. Tensors holding NaN or Inf (a diverged run) are skipped with a warning,
    tensors without elements silently.
    Each histogram has ``bins`` equal-width bins between the tensor's min and max: tensorboardX's
    default (``"tensorflow"``, about 1,500 exponential buckets) costs several times as much
    (docs/performance.md); TensorBoard draws about 30 bins either way.

    Args:
        model: whose named parameters to summarise.
        writer: anything with ``add_histogram(tag, values, step, bins=...)``, e.g. a tensorboardX SummaryWriter.
        bins: passed to ``add_histogram``: a number of equal-width bins, or a NumPy or tensorboardX
            binning name such as ``"tensorflow"``. Default 64.

    Example:
        >>> import torch
        >>> from flint.engine import create_trainer
        >>> class Writer:
        ...     def __init__(self): self.tags = []
        ...     def add_histogram(self, tag, values, step, bins): self.tags.append((tag, step))
        >>> model = torch.nn.Linear(2, 1)
        >>> trainer = create_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss)
        >>> writer = Writer()
        >>> _ = NetSummaries(model, writer).attach(trainer)
        >>> _ = trainer.run([(torch.ones(4, 2), torch.ones(4, 1))] * 3, max_epochs=1)
        >>> writer.tags
        [('grads/weight', 12), ('grads/bias', 12), ('weights/weight', 12), ('weights/bias', 12)]
    """

    def __init__(self, model: torch.nn.Module, writer: Any, bins: int | str = 64) -> None:
        if isinstance(bins, bool) or not isinstance(bins, (int, str)) or (isinstance(bins, int) and bins < 1):
            raise ValueError(f"Argument bins should be a positive integer or a binning name, got {bins!r}")
        self.model, self.writer, self.bins = model, writer, bins

    def attach(self, trainer: Engine) -> NetSummaries:
        # A plain handler that checks the iteration itself: cheaper than a filter, which runs at every step.
        trainer.add_event_handler(when(trainer, TrainEvents.BEFORE_OPTIMIZER_STEP), self._on_update)
        trainer.add_event_handler(when(trainer, FlintEvents.EPOCH_REPORT), self.write_weights)
        return self

    def _on_update(self, engine: Engine) -> None:
        length = engine.state.epoch_length  # is_last_update_of_epoch, inline: called at every step
        if length is not None and engine.state.iteration % length == 0:
            self.write_grads(engine)

    def write_weights(self, engine: Engine) -> None:
        self._write("weights", {name: p for name, p in self.model.named_parameters()}, samples_seen(engine))

    def write_grads(self, engine: Engine) -> None:
        grads = {name: p.grad for name, p in self.model.named_parameters() if p.grad is not None}
        self._write("grads", grads, samples_seen(engine))

    def _write(self, kind: str, tensors: dict[str, torch.Tensor], step: int) -> None:
        for name, tensor in tensors.items():
            if not tensor.numel():  # nothing to draw; tensorboardX refuses an empty histogram
                continue
            values = tensor.detach().float().cpu()
            # A diverged run: a histogram of NaN/Inf cannot be drawn. min and max find any (NaN makes
            # both NaN) in one pass without a mask: cheaper than isfinite().all() (docs/performance.md).
            if not all(math.isfinite(v) for v in torch.aminmax(values)):
                logger.warning("Not writing %s/%s at %d samples: it holds NaN or Inf", kind, name, step)
                continue
            self.writer.add_histogram(f"{kind}/{name}", values, step, bins=self.bins)
