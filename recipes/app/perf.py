"""Performance helpers for the training job: channels-last batches, model FLOPs and utilisation, handler costs."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import HandlersTimeProfiler

from flint.engine import FlintEvents, TrainEvents, prepare_batch

__all__ = ["ChannelsLast", "train_flops_per_sample", "peak_flops", "profile_table"]

# Dense tensor-core peaks (FLOP/s) per device-name fragment, for model FLOPs utilisation. Low precision
# is bf16/fp16; "fp32" is the plain (non-TF32) rate. Unknown devices report no utilisation.
_PEAKS = {
    "H200": {"low": 989e12, "fp32": 67e12},
    "H100": {"low": 989e12, "fp32": 67e12},
    "A100": {"low": 312e12, "fp32": 19.5e12},
    "L4": {"low": 121e12, "fp32": 30e12},
}


class ChannelsLast:
    """``prepare(batch, device, non_blocking)``, then an image batch (4-D tensor) in channels-last (NHWC) memory format.

    Example:
        >>> x, _ = ChannelsLast()((torch.zeros(2, 3, 4, 4), torch.zeros(2)))
        >>> x.is_contiguous(memory_format=torch.channels_last)
        True
    """

    def __init__(self, prepare: Callable[[Any, Any, bool], tuple[Any, Any]] = prepare_batch) -> None:
        self.prepare = prepare

    def __call__(self, batch: Any, device: torch.device | str | None = None, non_blocking: bool = False) -> tuple[Any, Any]:
        x, y = self.prepare(batch, device, non_blocking)
        if isinstance(x, torch.Tensor) and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def train_flops_per_sample(model: torch.nn.Module, sample: torch.Tensor | None) -> float | None:
    """Training FLOPs per sample: the forward's, counted by ``torch.utils.flop_counter``, times 3 (backward ~2x); None without a sample."""
    from torch.utils.flop_counter import FlopCounterMode

    if sample is None:
        return None

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(sample[:1])
    except Exception:  # an operator the counter cannot trace: report no FLOPs rather than fail the run
        return None
    finally:
        model.train(was_training)
    return 3.0 * counter.get_total_flops()


def peak_flops(device: torch.device, low_precision: bool) -> float | None:
    """The device's dense peak FLOP/s if known (CUDA devices in ``_PEAKS``), else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peaks in _PEAKS.items():
        if fragment in name:
            return peaks["low" if low_precision else "fp32"]
    return None


def profile_table(profiler: HandlersTimeProfiler, engine: Engine) -> str:
    """Ignite's per-handler cost table, plus the handlers' total cost per iteration in microseconds."""
    results = profiler.get_results()
    with contextlib.redirect_stdout(io.StringIO()) as text:  # Ignite prints the table
        HandlersTimeProfiler.print_results(results)  # type: ignore[arg-type]
    per_iteration_events = {Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, Events.GET_BATCH_STARTED, Events.GET_BATCH_COMPLETED,
                            FlintEvents.ITERATION_REPORT, *TrainEvents}  # fmt: skip
    spent = sum(
        sum(times)
        for event, handlers in profiler.event_handlers_times.items()
        if event in per_iteration_events
        for times in handlers.values()
    )
    iterations = max(1, len(profiler.processing_times))
    processing = sum(profiler.processing_times) / iterations
    return (
        text.getvalue().rstrip()
        + f"\nPer iteration: handlers {1e6 * spent / iterations:.1f} us, step {1e3 * processing:.3f} ms"
        + f" ({iterations} iterations)"
    )
