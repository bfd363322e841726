"""A run's directory: its lock (one run at a time, never through a link), what it holds, its status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flint.recipes.app.config import UsageError
from flint.handlers import SafeDiskSaver
from flint.recipes.app.rundir import LOCK_NAME, RunDir

HOLD = "import sys; from flint.recipes.app.rundir import RunDir\nwith RunDir(sys.argv[1]).lock():\n    print('held', flush=True); sys.stdin.read()"


def write_records(run: RunDir, *records: dict) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    with run.metrics_file.open("a") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


def test_the_lock_holds_the_pid_and_a_second_process_is_told_who_holds_it(tmp_path):
    run = RunDir(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run.path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert run.in_use().startswith(f"{holder.pid} (") and run.status() == "running"
        with pytest.raises(UsageError, match=rf"output dir {run.path} is in use by process {holder.pid} \("):
            run.check_not_in_use()
        with pytest.raises(UsageError, match="is in use by process"), run.lock():
            pass
    finally:
        holder.communicate("", timeout=900)
    assert run.in_use() is None  # released when its process ended
    with run.lock():
        assert run.lock_file.read_text().startswith(f"{os.getpid()} (")


def test_a_lock_file_that_is_a_link_or_not_a_file_is_refused_and_nothing_is_written_through_it(tmp_path):
    victim = tmp_path / "someone_elses_file"
    victim.write_text("theirs\n")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.lock_file.symlink_to(victim)
    with pytest.raises(UsageError, match=rf"output dir {run.path}: its lock file {LOCK_NAME} is a symbolic link; remove it"), run.lock():
        pass
    assert victim.read_text() == "theirs\n" and run.in_use() is None
    run.lock_file.unlink()
    run.lock_file.mkdir()
    with pytest.raises(UsageError, match="is not a regular file; remove it"), run.lock():
        pass


def test_status_follows_the_last_launch(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.status() == "new" and run.summary() is None
    write_records(run, {"phase": "training", "epoch": 1})
    assert run.status() == "failed"  # records, no summary, nobody running it: killed
    write_records(run, {"phase": "summary", "status": "interrupted", "epochs": 1})
    assert run.status() == "interrupted" and run.summary()["epochs"] == 1
    write_records(run, {"phase": "resume", "epoch": 1}, {"phase": "summary", "status": "completed", "stopped_early": True})
    assert run.status() == "stopped early"
    write_records(run, {"phase": "summary", "status": "completed", "stopped_early": False})
    assert run.status() == "completed"
    write_records(run, {"phase": "resume", "epoch": 2})
    assert run.status() == "failed" and run.summary() is None


def test_the_tail_skips_what_does_not_parse_and_reads_only_the_end(tmp_path):
    run = RunDir(tmp_path / "run")
    write_records(run, *[{"phase": "batch", "iteration": i, "pad": "x" * 100} for i in range(2000)])
    with run.metrics_file.open("a") as f:
        f.write('{"phase": "validation", "epoch": 1, "loss"\n["not", "a record"]\n')
    write_records(run, {"phase": "summary", "status": "completed"})
    tail = run.tail()
    assert tail[-1] == {"phase": "summary", "status": "completed"} and tail[-2]["iteration"] == 1999
    assert 100 < len(tail) < 2000  # the end only


def test_config_reads_or_names_the_file(tmp_path):
    run = RunDir(tmp_path)
    assert run.config() is None
    run.config_file.write_text('{"recipe": "lenet", "monitor": "loss"}')
    assert run.config()["recipe"] == "lenet" and run.monitor().text == "loss:min"
    run.config_file.write_text("[1, 2]")
    with pytest.raises(UsageError, match=f"cannot read {run.config_file}: not a JSON object"):
        run.config()
    assert run.monitor() is None


def test_a_run_that_ended_before_any_checkpoint_has_nothing_to_continue(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.failed_before_checkpoint()  # nothing there
    write_records(run, {"phase": "training", "epoch": 1, "loss": 0.5})
    assert run.failed_before_checkpoint()  # killed: no summary
    write_records(run, {"phase": "summary", "status": "failed"})
    assert run.failed_before_checkpoint()
    run.checkpoints.mkdir()
    (run.checkpoints / "checkpoint_3.pt.corrupt").write_bytes(b"")
    assert not run.failed_before_checkpoint()  # it wrote one, later set aside
    (run.checkpoints / "checkpoint_3.pt.corrupt").unlink()
    write_records(run, {"phase": "summary", "status": "completed"})
    assert not run.failed_before_checkpoint()


def test_clear_removes_only_flints_files_and_keeps_every_log(tmp_path):
    run = RunDir(tmp_path)
    run.checkpoints.mkdir()
    flints = ["config.json", "metrics.jsonl", "report.png", "predictions.csv", "mlflow.json", "model.onnx", "model.state_dict.pt", "model.state_dict.json",
              "events.out.tfevents.1.host", "checkpoints/checkpoint_46.pt", "checkpoints/best_checkpoint_2_accuracy=0.9000.pt",
              "checkpoints/checkpoint_23.pt.corrupt", "checkpoints/.checkpoint_69.pt.4242.tmp"]  # fmt: skip
    mine = ["notes.txt", "checkpoints/mine.pt", "model.py"]
    for name in flints + mine:
        (tmp_path / name).write_text(name)
    for name, text in (("train.log", "third"), ("train.log.1", "second"), ("train.log.2", "first")):
        (tmp_path / name).write_text(text)
    assert sorted(str(p.relative_to(tmp_path)) for p in run.flint_files()) == sorted(flints)
    assert SafeDiskSaver.TEMP_FILES == ".*.tmp"  # the temp files' glob RunDir uses (it imports no torch)
    assert run.clear() == tmp_path / "train.log.1"
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == sorted([*mine, "train.log.1", "train.log.2", "train.log.3"])
    assert [(tmp_path / f"train.log.{n}").read_text() for n in (1, 2, 3)] == ["third", "second", "first"]
    (tmp_path / "checkpoints" / "mine.pt").unlink()
    assert run.clear() is None and not run.checkpoints.exists()  # no log to keep; an emptied checkpoints/ goes


def test_the_last_records_of_the_tail_and_a_status_from_them(tmp_path):
    run = RunDir(tmp_path)
    lines = [{"phase": "validation", "epoch": e, "loss": 1 / e} for e in (1, 2, 3)] + [{"phase": "summary", "status": "interrupted"}]
    run.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in lines[:3]) + "{cut\n" + json.dumps(lines[3]) + "\n")
    assert run.tail(last=2) == [lines[2], lines[3]] and run.tail(last=1) == [lines[3]] and run.tail() == lines
    assert run.status(tail=run.tail(last=1)) == run.status() == "interrupted"
    assert run.status(tail=lines[:3]) == "failed"  # records whose last is no summary: a launch that ended without one
