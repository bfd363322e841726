"""The recipe's handlers attached in random orders give the same records, checkpoints and stop decisions."""

from __future__ import annotations

import json
import math
import os
import random
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Events

import flint.recipes.app.train
from flint.handlers.checkpoint_io import read_state
from flint.recipes.app.cli import main

TIMING = {"epoch_time", "samples_per_sec", "avg_epoch_time", "model_tflops", "elapsed", "wall_time"}


class SignalAt:
    """Sends this process SIGTERM as ``iteration`` starts, as a scheduler would (Preemption is listening)."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def attach(self, trainer: Any) -> None:
        trainer.add_event_handler(Events.ITERATION_STARTED(once=self.iteration), lambda _: os.kill(os.getpid(), signal.SIGTERM))


class SignalDuringValidation:
    """Sends this process SIGTERM during the first validation: the run must stop at that epoch's end."""

    def attach(self, trainer: Any, evaluator: Any) -> None:
        evaluator.add_event_handler(Events.ITERATION_STARTED(once=1), lambda _: os.kill(os.getpid(), signal.SIGTERM))


def run(tmp_path: Path, name: str, options: list[str], seed: int | None, monkeypatch, extra: list[Any]) -> dict[str, Any]:
    """Run the mlp recipe with its handlers attached in the recipe's order (None), reversed (-1), or shuffled by ``seed``."""
    attach_all = flint.recipes.app.train.attach_all

    def shuffled(handlers, trainer, evaluator):
        handlers = [*handlers, *extra]
        if seed == -1:
            handlers.reverse()  # every pair in the other order
        elif seed is not None:
            random.Random(seed).shuffle(handlers)
        attach_all(handlers, trainer, evaluator)

    monkeypatch.setattr(flint.recipes.app.train, "attach_all", shuffled)
    out = tmp_path / name
    status = main(["run", "mlp", "--batch-size", "128", "--log-interval", "5", "--update-cycle", "2", "--no-progress",
                   "--save-frequency", "2", *options, "-o", str(out)])  # fmt: skip
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    checkpoints = {p.name: read_state(p) for p in sorted((out / "checkpoints").glob("*.pt"))}  # checksum verified, left out (it covers timings)
    return {"status": status, "records": [masked(r) for r in records], "checkpoints": masked(checkpoints)}


def masked(value: Any) -> Any:
    """``value`` with each timing replaced by a mark: whether it was measured must still agree, not its value."""
    if isinstance(value, dict):
        if set(value) == {"json", "fingerprint"}:  # the run's options and fingerprint (register_state "config"): all but where it ran
            return {k: v for k, v in json.loads(value["json"]).items() if k != "output_dir"}, value["fingerprint"]
        return {k: (None if v is None else "<time>") if k in TIMING else masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return value


def assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


BLOW_UP = ["--lr-mode", "step", "--lr-steps", "1", "--lr-factor", "1e12"]  # the weights blow up in epoch 2
SCENARIOS = {
    # name: (options, extra handlers, what must have happened)
    "early stopping": (["--epochs", "5", "--early-stopping", "1", "--lr", "0.5"], [], lambda r: r["records"][-1]["stopped_early"]),
    "interrupt": (["--epochs", "4", "--interrupt-at", "3"], [], lambda r: r["status"] == 3 and "checkpoint_36.pt" in r["checkpoints"]),
    "sigterm mid-epoch": (["--epochs", "3"], [SignalAt(17)], lambda r: r["status"] == 3 and "checkpoint_18.pt" in r["checkpoints"]),
    "sigterm during validation": (["--epochs", "3"], [SignalDuringValidation()],
                                  lambda r: r["status"] == 3 and r["records"][-1]["epochs"] == 1 and "checkpoint_12.pt" in r["checkpoints"]),
    "sigterm at an epoch's end": (["--epochs", "3"], [SignalAt(11)], lambda r: r["status"] == 3 and "checkpoint_12.pt" in r["checkpoints"]),
    "nan": (["--epochs", "3", *BLOW_UP], [], lambda r: r["status"] == 1 and r["records"][-1]["status"] == "failed"),
    # found by the check at the epoch's end, not by one every 5 iterations
    "nan at an epoch's end": (["--epochs", "3", *BLOW_UP, "--log-interval", "100"], [],
                              lambda r: r["status"] == 1 and not any("_2_" in n or "_24" in n for n in r["checkpoints"])),
    # the stop (at 18, the update cycle's end) comes between two checks (15, 20), the loss no longer finite: nothing saved
    "sigterm after nan": (["--epochs", "3", *BLOW_UP], [SignalAt(17)], lambda r: r["status"] == 1 and "checkpoint_18.pt" not in r["checkpoints"]),
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_any_attach_order_gives_the_same_run(tmp_path, monkeypatch, scenario):
    options, extra, happened = SCENARIOS[scenario]
    reference = run(tmp_path, "recipe-order", options, None, monkeypatch, extra)
    assert happened(reference), reference["records"][-1]
    for seed in (-1, 1, 2):
        shuffled = run(tmp_path, f"order-{seed}", options, seed, monkeypatch, extra)
        assert shuffled["status"] == reference["status"]
        assert_same(shuffled["records"], reference["records"], "records")
        assert_same(shuffled["checkpoints"], reference["checkpoints"], "checkpoints")
