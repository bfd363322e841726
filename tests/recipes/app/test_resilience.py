"""Resilience of real `flint` processes: preemption, kills, NaN losses, full disks, unsafe checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flint.handlers import Checkpointing
from flint.recipes.app.cli import main
from tests.conftest import REPO

TIMING = ("epoch_time", "samples_per_sec", "avg_epoch_time", "wall_time")


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def trained(recs: list[dict]) -> list[dict]:
    """What the training produced: every record but resume markers and summaries, without timings."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs if r["phase"] not in ("resume", "summary")]


def start_flint(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ)
    return subprocess.Popen(
        [sys.executable, "-m", "flint", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **kwargs,
    )  # fmt: skip


def wait_for_record(proc: subprocess.Popen, run_dir: Path, phase: str, iteration: int, timeout: float = 900) -> None:
    """Poll metrics.jsonl until a record of ``phase`` at or past ``iteration`` is there."""
    deadline = time.monotonic() + timeout
    path = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists() and any(
            r.get("phase") == phase and r.get("iteration", 0) >= iteration
            for r in (json.loads(line) for line in path.read_text().splitlines() if line.endswith("}"))
        ):
            return
        time.sleep(0.05)
    raise TimeoutError(f"no {phase} record at iteration {iteration} in {timeout} s")


def wait_for_growth(proc: subprocess.Popen, path: Path, lines: int, timeout: float = 900) -> None:
    """Poll until ``path`` has more than ``lines`` complete lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists() and path.read_text().count("\n") > lines:
            return
        time.sleep(0.02)
    raise TimeoutError(f"{path} did not grow past {lines} lines in {timeout} s")


def final_model(run_dir: Path) -> dict:
    return torch.load(Checkpointing.find_latest(run_dir / "checkpoints"), weights_only=True)["model"]


SCHEDULE = ("--lr-mode", "cosine", "--warmup-epochs", "1", "--warmup-lr", "0.01")


@pytest.mark.parametrize(
    "options",
    [pytest.param(("--update-cycle", "3"), marks=pytest.mark.slow), ("--data-on-device", *SCHEDULE)],
    ids=["update-cycle", "on-device-schedule"],
)
def test_sigterm_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, flint, options):
    common = ("run", "lenet", "--epochs", "2", "--log-interval", "1", "--no-progress", *options)  # 23 iterations an epoch
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert flint(*common, "-o", str(straight)).returncode == 0

    proc = start_flint(*common, "-o", str(broken))
    wait_for_record(proc, broken, "batch", 27)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 3, err
    assert "Received SIGTERM" in err and records(broken)[-1]["status"] == "interrupted"
    stopped = Checkpointing.find_latest(broken / "checkpoints")
    iteration = int(stopped.stem.split("_")[1])
    assert 27 <= iteration < 46 and iteration != 23  # mid-epoch 2
    if "--update-cycle" in options:
        assert (iteration - 23) % 3 == 0  # at the end of an update cycle: no accumulated gradient lost

    resumed = flint(*common, "-o", str(broken), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed from {stopped}" in resumed.stderr
    assert [r["iteration"] for r in records(broken) if r["phase"] == "resume"] == [iteration]
    assert trained(records(broken)) == trained(records(straight))  # every batch, epoch and validation record
    a, b = final_model(straight), final_model(broken)
    assert all(torch.equal(a[k], b[k]) for k in a)

    before = records(broken)
    again = flint(*common, "-o", str(broken), "--resume")  # a scheduler relaunching a finished run changes nothing
    assert again.returncode == 0 and "already completed 2 epochs" in again.stderr and records(broken) == before


# resnet writes 90 MB checkpoints each epoch: slow on 2 cores, run with -m slow.
@pytest.mark.parametrize("recipe", ["lenet", "mlp", pytest.param("resnet", marks=pytest.mark.slow), "ffnn"])
def test_every_recipe_resumes_bit_exactly_at_an_epoch_boundary(tmp_path, recipe):
    common = ["run", recipe, "--dataset", "fake", "--test-run", "--epochs", "3", "--batch-size", "4", "--no-progress"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert main([*common, "-o", str(straight)]) == 0
    assert main([*common, "-o", str(broken), "--interrupt-at", "1"]) == 3
    assert records(broken)[-1]["status"] == "interrupted"
    torch.rand(3)  # a relaunched process starts elsewhere; the checkpoint must put every RNG back
    assert main([*common, "-o", str(broken), "--resume"]) == 0
    assert trained(records(broken)) == trained(records(straight))
    a, b = final_model(straight), final_model(broken)
    assert all(torch.equal(a[k], b[k]) for k in a)


def checkpoints_all_load(run_dir: Path) -> list[str]:
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))
    for name in names:
        torch.load(run_dir / "checkpoints" / name, weights_only=True)  # raises on a half-written file
    return names


def test_a_sigkill_inside_a_checkpoint_write_leaves_the_earlier_ones_and_the_run_resumes_exactly(tmp_path, flint):
    # Deterministic: the temp files of the coming checkpoints are named pipes this test reads from. The
    # first bytes to arrive mean the run is inside that checkpoint's write (it blocks once the pipe is full):
    # it is killed there.
    common = ("run", "lenet", "--test-run", "--epochs", "8", "--no-progress")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert flint(*common, "-o", str(straight)).returncode == 0
    proc = start_flint(*common, "-o", str(broken))
    checkpoints = broken / "checkpoints"
    while not (checkpoints / "checkpoint_1.pt").exists():  # the saver made (it clears stale temp files then)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    pipes = [checkpoints / f".checkpoint_{k}.pt.{proc.pid}.tmp" for k in range(3, 9)]
    for pipe in pipes:
        os.mkfifo(pipe)
    readers = {os.open(pipe, os.O_RDONLY | os.O_NONBLOCK): pipe for pipe in pipes}
    writing = None
    while writing is None:
        assert proc.poll() is None, proc.communicate()
        for fd, pipe in readers.items():
            with contextlib.suppress(BlockingIOError):
                if os.read(fd, 1 << 16):
                    writing = pipe
        time.sleep(0.01)
    proc.kill()  # inside the write of `writing`'s checkpoint
    proc.communicate()
    for fd in readers:
        os.close(fd)
    assert not (checkpoints / writing.name[1:].rsplit(".", 2)[0]).exists()  # never renamed into place
    assert checkpoints_all_load(broken)  # the earlier ones, whole
    last = flint(*common, "-o", str(broken), "--resume")
    assert last.returncode == 0, last.stderr
    assert not any(p.name.endswith(".tmp") for p in checkpoints.iterdir())  # stale temp files (the pipes) cleared
    a, b = final_model(straight), final_model(broken)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("kills", [15])
def test_sigkill_at_random_moments_never_leaves_a_broken_checkpoint(tmp_path, flint, kills):
    # One-batch epochs with a checkpoint each: most of the run is spent writing checkpoints.
    common = ("run", "lenet", "--test-run", "--epochs", "20", "--no-progress")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert flint(*common, "-o", str(straight)).returncode == 0
    rng = random.Random(kills)
    killed_in_a_write = 0
    for attempt in range(kills):
        if attempt and records(broken)[-1].get("status") == "completed":
            break  # the last attempt finished the run before its kill
        written = len(records(broken)) if attempt else 0
        proc = start_flint(*common, "-o", str(broken), *(["--resume"] if attempt else []))
        wait_for_growth(proc, broken / "metrics.jsonl", written)  # past startup: training
        time.sleep(rng.uniform(0.0, 0.8))  # the kill moment: somewhere in the next epochs
        if proc.poll() is not None:
            break
        proc.kill()
        proc.communicate()
        killed_in_a_write += any(p.name.endswith(".tmp") for p in (broken / "checkpoints").iterdir())
        checkpoints_all_load(broken)  # may be none yet: killed before the first save
    last = flint(*common, "-o", str(broken), "--resume")
    assert last.returncode == 0, last.stderr
    assert not any(p.name.endswith(".tmp") for p in (broken / "checkpoints").iterdir())  # stale temp files cleared
    checkpoints_all_load(broken)
    a, b = final_model(straight), final_model(broken)
    assert all(torch.equal(a[k], b[k]) for k in a)
    print(f"{kills} kills, {killed_in_a_write} during a checkpoint write")


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    common = ["run", "lenet", "--test-run", "--epochs", "3", "--no-progress", "-o", str(tmp_path)]
    assert main([*common, "--interrupt-at", "2"]) == 3
    newest = Checkpointing.find_latest(tmp_path / "checkpoints")
    newest.write_bytes(newest.read_bytes()[:2000])  # e.g. a disk that lied about a flush
    capsys.readouterr()
    assert main([*common, "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is truncated or corrupt" in err and "trying the previous checkpoint" in err
    assert [r["checkpoint"] for r in records(tmp_path) if r["phase"] == "resume"] == [str(newest.with_name("checkpoint_1.pt"))]
    assert newest.with_name(newest.name + ".corrupt").exists() and records(tmp_path)[-1]["epochs"] == 3
    for path in Checkpointing.find_all(tmp_path / "checkpoints"):
        path.write_bytes(b"")
    capsys.readouterr()
    assert main([*common, "--epochs", "4", "--resume"]) == 1
    assert "can be loaded" in capsys.readouterr().err.splitlines()[-1]
    assert main([*common, "--epochs", "4", "--resume"]) == 1  # all set aside: never a silent restart
    assert "set aside as .corrupt; refusing to start the run over" in capsys.readouterr().err.splitlines()[-1]


def test_a_checkpoint_that_runs_code_is_refused_by_the_cli(tmp_path, capsys):
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": RunsCode()}, evil)
    assert main(["run", "lenet", "--test-run", "--no-progress", "-o", str(tmp_path / "run"), "--resume", str(evil)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (f"flint: error: checkpoint {evil} holds a pickled posix.system object, not "
                                                                "only tensors and plain values: it is not a Flint checkpoint and is unsafe to load")  # fmt: skip
    assert not (tmp_path / "pwned").exists()


def test_a_nan_loss_stops_without_saving_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    # The LR jumps 1e12-fold after epoch 1: the weights blow up in epoch 2. (--profile: its Ignite
    # profiler must not swallow the error.)
    args = ["run", "mlp", "--epochs", "3", "--lr-mode", "step", "--lr-steps", "1", "--lr-factor", "1e12", "--no-progress", "--profile"]
    assert main([*args, "-o", str(tmp_path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("flint: error: the training loss became nan or inf at or before iteration") and "(epoch 2)" in last
    good = tmp_path / "checkpoints" / "checkpoint_45.pt"  # end of epoch 1 (45 batches of 32)
    assert last.endswith(f"the last good checkpoint is {good}")
    assert Checkpointing.find_all(tmp_path / "checkpoints") == [good]
    assert all(torch.isfinite(t).all() for t in torch.load(good, weights_only=True)["model"].values())
    assert records(tmp_path)[-1]["status"] == "failed"


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))  # a checkpoint (~0.5 MB) no longer fits


def test_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(tmp_path):
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "flint", "run", "lenet", "--test-run", "--epochs", "2", "--no-progress", "-o", str(tmp_path)]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=900)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "rror" in line]
    assert len(errors) == 1 and errors[0].startswith(f"flint: error: cannot write checkpoint {tmp_path / 'checkpoints'}")
    assert os.listdir(tmp_path / "checkpoints") == []
    recs = records(tmp_path)
    assert recs[-1]["status"] == "failed" and [r["epoch"] for r in recs if r["phase"] == "validation"] == [1]


def test_an_unusable_output_dir_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["run", "lenet", "--test-run", "-o", str(tmp_path / "file" / "run")]) == 1
    assert capsys.readouterr().err == f"flint: error: cannot write to output dir {tmp_path / 'file' / 'run'}: Not a directory\n"


def test_sigterm_to_the_whole_process_group_with_dataloader_workers(tmp_path):
    # As Slurm or a terminal does: the workers get the signal too, and must leave the stop to the main process.
    args = ("run", "lenet", "--dataset", "fake", "--batch-size", "8", "--epochs", "3", "--num-workers", "2",
            "--log-interval", "1", "--no-progress", "-o", str(tmp_path))  # fmt: skip
    proc = start_flint(*args, start_new_session=True)
    wait_for_record(proc, tmp_path, "batch", 3)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 3, err
    assert records(tmp_path)[-1]["status"] == "interrupted" and Checkpointing.find_latest(tmp_path / "checkpoints")


def test_a_dangling_checkpoints_link_is_one_line_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").symlink_to(tmp_path / "gone")
    assert main(["run", "lenet", "--test-run", "--no-progress", "-o", str(out)]) == 2
    assert capsys.readouterr().err == (f"flint: error: output dir {out}: checkpoints is a symbolic link to {tmp_path / 'gone'}, "
                                       "which does not exist\n")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]
