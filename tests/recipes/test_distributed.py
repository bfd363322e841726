"""Data-parallel runs on CPU (gloo): real spawned workers through `flint run --nproc-per-node 2`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from ignite.metrics import Accuracy

from engine import create_evaluator
from recipes.cli import _free_port, main
from recipes.data import digits
from recipes.lenet import LeNet
from tests.conftest import REPO
from tests.recipes.test_resilience import records, start_flint, wait_for_record


def test_two_workers_stop_together_resume_with_two_and_one_and_validate_on_everything(tmp_path, flint):
    common = ("run", "lenet", "--epochs", "3", "--log-interval", "1", "--no-progress", "-o", str(tmp_path))
    # SIGTERM to the launching process only: it forwards it; both workers stop at the same iteration.
    proc = start_flint(*common, "--nproc-per-node", "2")
    wait_for_record(proc, tmp_path, "batch", 5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
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
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port())]
    common = ("run", "ffnn", "--dataset", "fake", "--epochs", "2", "--batch-size", "16", "--no-progress")
    result = subprocess.run([*torchrun, "-m", "recipes", *common, "-o", str(tmp_path / "two")], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert main([*common, "-o", str(tmp_path / "one")]) == 0
    losses = [[r["loss"] for r in records(tmp_path / d) if r["phase"] == "validation"] for d in ("two", "one")]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert json.loads((tmp_path / "two" / "config.json").read_text())["nproc_per_node"] == 1  # torchrun's workers, not spawned
