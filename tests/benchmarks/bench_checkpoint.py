"""On-demand benchmark: what the checkpoint checksum costs a save and a load.

Run it from the repository root (not collected by pytest; importing this module does nothing)::

    .venv/bin/python tests/benchmarks/bench_checkpoint.py              # about a minute on 2 CPU cores
    .venv/bin/python tests/benchmarks/bench_checkpoint.py --rounds 9 --device cuda

Two checkpoints as ``Checkpointing`` writes them: LeNet's (the recipe's model, SGD with momentum after
a step, an engine state and the RNG states) and a ~100 MB one (the same with a layer of 12.5M
parameters added: 50 MB of weights and 50 MB of momentum). A save is ``SafeDiskSaver(sync_in_background=True)`` returning (the state serialised into
the temp file; fsync, rename and directory fsync follow in its thread and are waited for outside
the timing), with ``add_checksum`` off (A) and on (B). A load is ``torch.load(weights_only=True)``
(A) against :func:`flint.handlers.checkpoint_io.read_state`, which verifies the checksum (B). The
``durable`` row adds the thread's work to the save: the time until the file is on disk. Each figure
is the median of ``--rounds`` rounds, A and B alternating; the last column is B / A. The
``checksum`` row times :func:`~flint.handlers.checkpoint_io.checksum` alone, what B adds to a save
and to a load (the least noisy figure on a busy machine).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def checkpoint(extra_params: int, device: str) -> dict[str, Any]:
    """A state like a Flint run's checkpoint of LeNet, plus a layer of ``extra_params`` float32 parameters."""
    import torch
    from ignite.engine import Engine

    from flint.engine import RNGState
    from flint.recipes import RECIPES

    torch.manual_seed(0)
    layers = [RECIPES["lenet"].build_model()] + ([torch.nn.Linear(extra_params // 1000, 1000, bias=False)] if extra_params else [])
    model = torch.nn.ModuleList(layers).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "trainer": Engine(lambda e, b: None).state_dict(),
            "rng": RNGState().state_dict()}  # fmt: skip


def timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def measure(state: dict[str, Any], folder: Path, rounds: int, device: str) -> dict[str, tuple[float, float]]:
    """``{"save": (A, B), "durable": (A, B), "load": (A, B), "checksum": (0, B)}``: median seconds without and with the checksum."""
    import torch

    from flint.handlers import SafeDiskSaver
    from flint.handlers.checkpoint_io import checksum as digest
    from flint.handlers.checkpoint_io import read_state

    savers = {False: SafeDiskSaver(folder, sync_in_background=True), True: SafeDiskSaver(folder, sync_in_background=True, add_checksum=True)}
    loaders = {False: lambda p: torch.load(p, map_location=device, weights_only=True), True: lambda p: read_state(p, device)}
    times: dict[tuple[str, bool], list[float]] = {}
    for i in range(rounds + 1):  # round 0 warms up
        for checksum in (i % 2 == 0, i % 2 != 0):
            path = folder / f"c_{int(checksum)}.pt"
            start = time.perf_counter()
            savers[checksum](state, path.name)
            save = time.perf_counter() - start
            savers[checksum].wait()
            durable = time.perf_counter() - start
            load = timed(lambda: loaders[checksum](path))
            alone = timed(lambda: digest(state)) if checksum else 0.0
            if i:
                for kind, seconds in (("save", save), ("durable", durable), ("load", load), ("checksum", alone)):
                    times.setdefault((kind, checksum), []).append(seconds)
    kinds = ("save", "durable", "load", "checksum")
    return {kind: (statistics.median(times[kind, False]), statistics.median(times[kind, True])) for kind in kinds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per case (default 7)")
    parser.add_argument("--device", default="cpu", help="where the state's tensors live (default cpu)")
    args = parser.parse_args()
    print(f"{'case':<14}{'size':>9}  {'':<8}{'A: no checksum':>15}{'B: checksum':>13}{'B / A':>8}")
    for name, extra in (("lenet", 0), ("100 MB", 12_500_000)):
        state = checkpoint(extra, args.device)
        with tempfile.TemporaryDirectory() as d:
            results = measure(state, Path(d), args.rounds, args.device)
            size = (Path(d) / "c_0.pt").stat().st_size
        for kind, (a, b) in results.items():
            ratio = f"{b / a:>8.2f}" if a else ""
            print(f"{name:<14}{size / 1e6:>7.2f}MB  {kind:<8}{a * 1e3:>12.1f} ms{b * 1e3:>10.1f} ms{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
