"""Shared fixtures: small real data, real engines, a record collector, the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flint.handlers import RecordStream

REPO = Path(__file__).resolve().parents[1]


class Collector(RecordStream):
    """A RecordStream that keeps what it is sent, for assertions."""

    def __init__(self) -> None:
        self.records: list[dict] = []
        super().__init__([self.records.append])

    def phase(self, name: str) -> list[dict]:
        return [r for r in self.records if r["phase"] == name]


@pytest.fixture(autouse=True)
def _signals_given_back():
    """``flint.recipes.app.cli.main`` keeps stop signals to the end of its process; called in-process, the next test gets them back."""
    yield
    from flint.recipes.app.stopping import STOPS

    STOPS.uninstall()


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seven batches of a 4-feature, 3-class problem (the last one smaller), fixed by a seed."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(26, 4, generator=g)
    y = torch.randint(0, 3, (26,), generator=g)
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, 26, 4)]


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def run_flint(*args: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real CLI (``python -m flint``) in a subprocess and capture its output."""
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "flint", *args],
        cwd=cwd or REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def flint():
    return run_flint
