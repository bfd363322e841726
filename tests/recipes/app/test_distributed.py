"""Data-parallel runs on CPU (gloo): real workers, spawned by `flint run --nproc-per-node 2` or by torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.metrics import Accuracy

from flint.engine import create_evaluator
from flint.handlers import Checkpointing
from flint.recipes.app.cli import main
from flint.recipes.app.launch import _free_port
from flint.recipes.builtin.data import digits
from flint.recipes.builtin.models import LeNet
from tests.conftest import REPO, run_flint
from tests.recipes.app.test_resilience import final_model, records, start_flint, trained, wait_for_record


def test_two_workers_stop_together_resume_with_two_and_one_and_validate_on_everything(tmp_path, flint):
    common = ("run", "lenet", "--epochs", "3", "--log-interval", "1", "--no-progress", "-o", str(tmp_path))
    # SIGTERM to the launching process only: it forwards it; both workers stop at the same iteration.
    proc = start_flint(*common, "--nproc-per-node", "2")
    wait_for_record(proc, tmp_path, "batch", 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 3, err
    (stopped,) = [p.name for p in (tmp_path / "checkpoints").glob("checkpoint_*.pt")]  # written once, by rank 0
    assert 5 <= int(stopped[11:-3]) < 23 and records(tmp_path)[-1]["status"] == "interrupted"

    again = flint(*common, "--nproc-per-node", "2", "--resume", "--interrupt-at", "2")  # 2 workers again
    assert again.returncode == 3, again.stderr
    validation = [r for r in records(tmp_path) if r["phase"] == "validation"]
    assert [r["epoch"] for r in validation] == [1, 2]  # rank 0 alone writes records
    # The workers' accuracy is over the whole validation set: the same as one process evaluating the checkpoint.
    model = LeNet()
    model.load_state_dict(torch.load(tmp_path / "checkpoints" / "checkpoint_46.pt", weights_only=True)["model"])
    evaluator = create_evaluator(model, {"accuracy": Accuracy()})
    _, val_set = digits()
    accuracy = evaluator.run(torch.utils.data.DataLoader(val_set, batch_size=100)).metrics["accuracy"]
    assert validation[-1]["accuracy"] == pytest.approx(accuracy, abs=1e-9)

    assert main([*common, "--nproc-per-node", "1", "--resume"]) == 0  # and one worker finishes it
    summary = records(tmp_path)[-1]
    assert (summary["status"], summary["epochs"], summary["samples"]) == ("completed", 3, 3 * 1438)


def test_two_workers_with_batch_b_each_equal_one_worker_with_batch_2b(tmp_path, flint):
    # ffnn has no BatchNorm: DDP's gradient average over 2 x 8 samples is the mean over 16.
    common = ("run", "ffnn", "--dataset", "fake", "--epochs", "3", "--batch-size", "16", "--no-progress")
    two = flint(*common, "--nproc-per-node", "2", "-o", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    assert "leaked semaphore" not in two.stderr and "resource_tracker" not in two.stderr  # workers report through files
    assert main([*common, "-o", str(tmp_path / "one")]) == 0
    losses = [[(r["phase"], r["loss"]) for r in records(tmp_path / d) if r["phase"] in ("training", "validation")] for d in ("two", "one")]
    assert [p for p, _ in losses[0]] == [p for p, _ in losses[1]] and len(losses[0]) == 6
    assert [v for _, v in losses[0]] == pytest.approx([v for _, v in losses[1]], rel=1e-5)
    summaries = [records(tmp_path / d)[-1] for d in ("two", "one")]
    assert summaries[0]["samples"] == summaries[1]["samples"] == 3 * 64  # global samples


def test_batch_size_must_divide_among_the_workers(tmp_path, capsys):
    assert main(["run", "ffnn", "--batch-size", "15", "--nproc-per-node", "2", "-o", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == "flint: error: --batch-size 15 is global: it must divide among 2 workers\n"
    assert not (tmp_path / "run").exists()


def test_under_torchrun_each_worker_joins_its_process_group(tmp_path):
    # What a multi-node launch does on each node, here with one node of two workers.
    env = dict(os.environ)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port())]
    common = ("run", "ffnn", "--dataset", "fake", "--epochs", "2", "--batch-size", "16", "--no-progress")
    result = subprocess.run([*torchrun, "-m", "flint", *common, "-o", str(tmp_path / "two")], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert main([*common, "-o", str(tmp_path / "one")]) == 0
    losses = [[r["loss"] for r in records(tmp_path / d) if r["phase"] == "validation"] for d in ("two", "one")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["nproc_per_node"] == 1  # torchrun's workers, not spawned



ABORTING_TEARDOWN = """
import atexit, os
import torch
from torch import nn
from torch.utils.data import TensorDataset
from flint.recipes import Recipe


def build():
    if os.environ.get("RANK") == "1":  # a worker whose teardown crashes, as torch's did now and then
        atexit.register(os.abort)
    return nn.Linear(4, 2)


def data(cfg):
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x[:48], (x[:48, 0] > 0).long()), TensorDataset(x[48:], (x[48:, 0] > 0).long())


RECIPE = Recipe("tiny", "a worker that aborts at exit", build_model=build, datasets={"made-up": data}, input_shape=(4,))
"""


@pytest.mark.parametrize("launcher", ["spawn", "torchrun"])
def test_a_finished_run_is_not_failed_by_a_worker_crashing_in_teardown(tmp_path, launcher):
    # Once every rank has passed the last barrier, the run's outcome is written: the workers exit
    # without the interpreter's and torch's teardown, where rank 1 aborted (SIGABRT) now and then.
    recipe = tmp_path / "aborting.py"
    recipe.write_text(ABORTING_TEARDOWN)
    args = ("run", str(recipe), "--epochs", "2", "--batch-size", "16", "--no-progress", "-o", str(tmp_path / "run"))
    if launcher == "spawn":
        result = run_flint(*args, "--nproc-per-node", "2")
    else:
        result = run_under_torchrun(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert records(tmp_path / "run")[-1]["status"] == "completed"

# --- resuming with several workers is bit-exact: spawned, under torchrun, after an elastic restart ---------
# lenet has BatchNorm: a worker training in eval mode (its evaluator's eval() on the plain module) shows up here.
RESUMABLE = ("run", "lenet", "--epochs", "4", "--log-interval", "5", "--no-progress")  # 23 iterations an epoch


def torchrun(*options: str) -> list[str]:
    """torchrun on this machine (c10d rendezvous on a free port), running the CLI: the rest of the command."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *options, "-m", "flint"]


def run_under_torchrun(*args: str, options: tuple[str, ...] = (), env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*torchrun(*options), *args], env={**os.environ, **(env or {})},
                          cwd=REPO, capture_output=True, text=True, timeout=900)  # fmt: skip


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory):
    """The uninterrupted 2-worker runs to compare with, one per launcher (the launchers set threads differently)."""
    runs: dict[str, Path] = {}

    def get(launcher: str) -> Path:
        if launcher not in runs:
            out = tmp_path_factory.mktemp(f"unbroken-{launcher}") / "run"
            if launcher == "spawn":
                result = run_flint(*RESUMABLE, "--nproc-per-node", "2", "-o", str(out), timeout=900)
            else:
                result = run_under_torchrun(*RESUMABLE, "-o", str(out))
            assert result.returncode == 0, result.stderr[-3000:]
            runs[launcher] = out
        return runs[launcher]

    return get


def as_one_run(recs: list[dict]) -> list[dict]:
    """The records as one unbroken run: at each resume, those written after its checkpoint are dropped
    (after a SIGKILL they were written again), then as ``trained``: no resume markers, summaries or timings."""
    kept: list[dict] = []
    for r in recs:
        if r["phase"] == "resume":
            kept = [k for k in kept if k.get("iteration", 0) <= r["iteration"]]
        kept.append(r)
    return trained(kept)


def assert_same_run(run: Path, reference: Path) -> None:
    assert as_one_run(records(run)) == as_one_run(records(reference))  # every batch, epoch and validation record
    a, b = final_model(reference), final_model(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_workers_interrupted_at_an_epoch_and_resumed_equal_an_unbroken_run(tmp_path, flint, unbroken):
    out = tmp_path / "run"
    stopped = flint(*RESUMABLE, "--nproc-per-node", "2", "--interrupt-at", "2", "-o", str(out), timeout=900)
    assert stopped.returncode == 3, stopped.stderr
    resumed = flint(*RESUMABLE, "--nproc-per-node", "2", "--resume", "-o", str(out), timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["iteration"] for r in records(out) if r["phase"] == "resume"] == [46]
    assert_same_run(out, unbroken("spawn"))


@pytest.mark.slow
def test_two_workers_stopped_mid_epoch_and_resumed_equal_an_unbroken_run(tmp_path, flint, unbroken):
    # Mid-epoch: each worker's running loss of the epoch is in the checkpoint, and each gets its own back.
    out = tmp_path / "run"
    proc = start_flint(*RESUMABLE, "--nproc-per-node", "2", "-o", str(out))
    wait_for_record(proc, out, "batch", 30)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 3, err
    iteration = int(Checkpointing.find_latest(out / "checkpoints").stem.split("_")[1])
    assert iteration % 23, iteration  # mid-epoch
    resumed = flint(*RESUMABLE, "--nproc-per-node", "2", "--resume", "-o", str(out), timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, unbroken("spawn"))


@pytest.mark.slow
def test_under_torchrun_an_interrupted_run_exits_1_and_resumes_bit_exactly(tmp_path, unbroken):
    out = tmp_path / "run"
    stopped = run_under_torchrun(*RESUMABLE, "--interrupt-at", "2", "-o", str(out))
    # The workers exit 3, as flint does; torchrun reports them as failed and exits 1 itself.
    assert stopped.returncode == 1 and "exitcode  : 3" in stopped.stderr, stopped.stderr[-3000:]
    assert records(out)[-1]["status"] == "interrupted"
    assert Checkpointing.find_latest(out / "checkpoints").name == "checkpoint_46.pt"
    resumed = run_under_torchrun(*RESUMABLE, "--resume", "-o", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(out, unbroken("torchrun"))


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _rank(pid: int) -> str | None:
    env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
    return env.get("RANK")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds torchrun's workers through /proc")
def test_torchrun_restarts_the_workers_after_one_is_killed_and_the_run_equals_an_unbroken_one(tmp_path, unbroken):
    out = tmp_path / "run"
    env = {**os.environ, "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}  # see docs/distributed.md
    proc = subprocess.Popen([*torchrun("--max-restarts", "1"), *RESUMABLE, "--resume", "-o", str(out)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    wait_for_record(proc, out, "batch", 30)  # in epoch 2
    while Checkpointing.find_latest(out / "checkpoints") is None:  # epoch 1's (renamed into place in the background)
        assert proc.poll() is None
        time.sleep(0.02)
    workers = {_rank(pid): pid for pid in _children(proc.pid)}
    os.kill(workers["1"], signal.SIGKILL)  # a worker dies (OOM killer, node fault); torchrun stops the other one
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    resumes = [r for r in records(out) if r["phase"] == "resume"]
    assert len(resumes) == 1 and resumes[0]["iteration"] % 23 == 0, resumes  # both restarted from an epoch's checkpoint
    assert records(out)[-1]["status"] == "completed"
    assert_same_run(out, unbroken("torchrun"))


def test_torchrun_restarts_through_its_shared_store_are_refused_with_the_remedy(tmp_path, monkeypatch, capsys):
    # What torchrun --max-restarts 1 (without TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1) puts in each worker's environment.
    torchrun_env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    for name, value in {**torchrun_env, "TORCHELASTIC_MAX_RESTARTS": "1", "TORCHELASTIC_USE_AGENT_STORE": "True"}.items():
        monkeypatch.setenv(name, value)
    assert main(["run", "ffnn", "--dataset", "fake", "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flint: error: torchrun --max-restarts 1: ") and "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_under_torchrun_restarts_through_its_shared_store_are_refused(tmp_path):
    out = tmp_path / "run"
    result = run_under_torchrun("run", "ffnn", "--dataset", "fake", "-o", str(out), options=("--max-restarts", "1"))
    assert result.returncode == 1 and "exitcode  : 2" in result.stderr  # every attempt refused, then torchrun gives up
    assert "flint: error: torchrun --max-restarts 1: " in result.stderr and not out.exists()
