"""Launching on several workers: what they need of the caller is checked first; how a worker ended is said in one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recipes.app.test_resilience import start_flint, wait_for_record

SCRIPT = '''
import torch
from ignite.engine import Events
from torch.utils.data import Dataset, TensorDataset
from flint import fit


class Mapped(Dataset):
    def __init__(self, data, transform):
        self.data, self.transform = data, transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return self.transform(x), y


class Count:
    """A handler of the caller's whose state the workers train."""

    def __init__(self):
        self.steps = 0

    def attach(self, trainer):
        from flint.engine import register_state
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self.step)
        register_state(trainer, "count", self)

    def step(self, engine):
        self.steps += 1

    def state_dict(self):
        return {{"steps": self.steps}}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def main():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = TensorDataset(x, (x[:, 0] > 0).long())
    count = Count()
    summary = fit(torch.nn.Linear(4, 2), {data}, data, output_dir="out", epochs=2, batch_size=16, nproc_per_node=2,
                  progress=False, device="cpu", handlers=[count])
    print("status", summary["status"], "steps", count.steps)


{call}
'''


def run_script(tmp_path: Path, data: str = "data", call: str = 'if __name__ == "__main__":\n    main()') -> subprocess.CompletedProcess:
    (tmp_path / "train.py").write_text(SCRIPT.format(data=data, call=call))
    return subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True, timeout=900)


def test_a_call_without_the_main_guard_is_refused_before_anything_is_written(tmp_path):
    result = run_script(tmp_path, call="main()")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"flint.recipes.app.config.UsageError: nproc_per_node=2 starts worker processes that import {tmp_path / 'train.py'} "
                    'again, running this call in each: put it under if __name__ == "__main__":')  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_data_that_cannot_be_pickled_is_refused_naming_it(tmp_path):
    result = run_script(tmp_path, data="Mapped(data, lambda x: x * 2)")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "nproc_per_node=2 sends the model and data to worker processes, which needs pickling" in last
    assert "a lambda or a local function cannot be" in last and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_callers_handlers_get_the_state_the_workers_trained(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["status", "completed", "steps", "8"]  # rank 0: 2 epochs of 4 batches of 8 (the global 16 halved)
    assert "leaked semaphore" not in result.stderr


def _spawned_workers(pid: int) -> list[int]:
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    return [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc")
def test_a_killed_worker_is_one_line_naming_it_and_the_signal(tmp_path):
    out = tmp_path / "run"
    proc = start_flint("run", "lenet", "--epochs", "3", "--log-interval", "1", "--no-progress", "--nproc-per-node", "2", "-o", str(out))
    wait_for_record(proc, out, "batch", 3)
    os.kill(_spawned_workers(proc.pid)[-1], signal.SIGKILL)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 1, err
    errors = [line for line in err.splitlines() if line.startswith("flint:")]
    assert len(errors) == 1 and re.fullmatch(rf"flint: error: worker \d was killed by signal SIGKILL; the others stopped; see {out}/train.log", errors[0])
    assert "Connection reset" not in err and "Terminating process" not in err and "Traceback" not in err, err
