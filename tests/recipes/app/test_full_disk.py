"""A full disk under a real `flint run`, wherever it strikes: exit 1, one line naming the file, no traceback, no hang.

Each test mounts a small tmpfs (skipped where mounting is refused): the whole run directory on one that
fills at a chosen point, or one file of the run on a full one (a dangling symlink in the run directory).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flint.handlers import WriteError
from flint.recipes.app.rundir import LOCK_NAME, RunDir
from tests.conftest import REPO
from tests.full_disk import small_disk

FULL = "No space left on device"


def flint_run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "flint", "run", "lenet", "--test-run", "--no-progress", "-o", str(out), *extra]
    # Before the fix a full disk under TensorBoard hung the run for good: the timeout is the only bound.
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def assert_failed_naming(result: subprocess.CompletedProcess, what: str, path: str | Path) -> None:
    """Exit 1, and the terminal shows one error line, naming the file and the full disk, and no traceback."""
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("flint:")]
    assert len(errors) == 1, result.stderr
    assert re.fullmatch(rf"flint: error: cannot write {what} {path}: {FULL}", errors[0], re.IGNORECASE), errors[0]
    for noise in ("Traceback", "--- Logging error ---", "Exception ignored"):
        assert noise not in result.stderr, result.stderr


def checkpoints_load(out: Path) -> list[str]:
    """The checkpoint files of the run (each loads with weights_only=True), and no temp file left."""
    folder = out / "checkpoints"
    names = sorted(os.listdir(folder)) if folder.exists() else []
    assert not [n for n in names if n.endswith(".tmp")], names
    for name in names:
        assert "model" in torch.load(folder / name, weights_only=True)
    return names


def whole_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_full_disk_while_tensorboard_writes_ends_the_run_with_one_line(tmp_path):
    # 40 KB: the first histograms (the gradients of iteration 1) do not fit. tensorboardX's writer
    # thread died here and the run hung, deaf to SIGTERM, until killed.
    with small_disk(tmp_path / "disk", "40k") as disk:
        out = disk / "run"
        result = flint_run(out, "--epochs", "2")
        assert_failed_naming(result, "TensorBoard events file", re.escape(str(out / "events.out.tfevents.")) + r"\S+")
        assert checkpoints_load(out) == []
        assert whole_lines(out / "metrics.jsonl")[-1]["status"] == "failed"


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_keeps_the_last_good_one(tmp_path):
    # 1.25 MB: epoch 1's two checkpoints (0.5 MB each) and the small files fit, checkpoint_2.pt does not.
    with small_disk(tmp_path / "disk", "1250k") as disk:
        out = disk / "run"
        result = flint_run(out, "--epochs", "3")
        assert_failed_naming(result, "checkpoint", re.escape(str(out / "checkpoints" / "checkpoint_2.pt")))
        assert checkpoints_load(out) == ["best_checkpoint_1_accuracy=0.2500.pt", "checkpoint_1.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("name, what", [("metrics.jsonl", "metrics file"), ("train.log", "log file")])
def test_a_full_disk_under_a_record_file_ends_the_run_with_one_line(tmp_path, name, what):
    # The file alone on a 4 KB disk: it fills after a few epochs (train.log sooner than metrics.jsonl).
    with small_disk(tmp_path / "disk", "4k") as disk:
        out = tmp_path / "run"
        out.mkdir()
        (out / name).symlink_to(disk / name)
        result = flint_run(out, "--epochs", "40")
        assert_failed_naming(result, what, re.escape(str(out / name)))
        assert len(checkpoints_load(out)) >= 2  # earlier epochs' checkpoints, whole
        records = whole_lines(out / "metrics.jsonl")  # whole lines only, also where the disk filled
        assert 2 <= max(r.get("epoch", 0) for r in records) < 40  # it filled mid-run, after some epochs


@pytest.mark.slow
def test_a_full_disk_under_the_progress_file_ends_the_run_with_one_line(tmp_path):
    # One 4 KB page: the file takes it, so its next atomic rewrite (a second file first) does not fit.
    with small_disk(tmp_path / "disk", "4k") as disk:
        out, progress = tmp_path / "run", disk / "progress.json"
        result = flint_run(out, "--epochs", "3", "--progress-file", str(progress))
        assert_failed_naming(result, "progress file", re.escape(str(progress)))
        assert json.loads(progress.read_text())["epoch"] == 1  # the last good one, whole
        assert checkpoints_load(out) == ["best_checkpoint_1_accuracy=0.2500.pt", "checkpoint_1.pt"]  # epoch 1's


def test_a_lock_file_that_cannot_be_written_is_named_and_released(tmp_path):
    with small_disk(tmp_path / "disk", "4k") as disk:
        filler = disk / "filler"
        filler.write_bytes(b"x" * 4096)  # the disk is full: the lock file is made, its first write fails
        run = RunDir(disk)
        with pytest.raises(WriteError) as error, run.lock():
            pass
        assert str(error.value) == f"cannot write lock file {disk / LOCK_NAME}: {FULL}"
        filler.unlink()
        with run.lock():  # nothing held on: the directory is free again
            assert run.lock_file.read_text().startswith(f"{os.getpid()} (")
