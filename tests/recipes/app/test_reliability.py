"""One run per directory, checkpoints that refuse other options, untouched finished runs, and exit statuses under signals."""

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
from ignite.engine import Events

import flint.recipes.app.train
from flint.handlers import Checkpointing
from flint.handlers.checkpoint_io import read_state
from flint.recipes.app.cli import main
from tests.conftest import REPO

QUICK = ["--test-run", "--epochs", "2", "--no-progress"]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def start_flint(*args: str, cwd: Path = REPO) -> subprocess.Popen:
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, "-m", "flint", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Poll until ``path`` exists (a short sleep between looks: the other process needs the CPU)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


# A recipe whose data loading waits for a signal: SIGTERM reaches the run before training, every time.
BLOCKING_RECIPE = '''
import signal
from pathlib import Path

from flint.recipes import Recipe
from flint.recipes.app.registry import lazy


def blocked(cfg):
    Path(cfg.output_dir, "loading").write_text("")
    signal.pause()  # until a signal: its handler raises
    raise AssertionError("not reached")


RECIPE = Recipe("blocking", "waits in its data loading", build_model=lazy("flint.recipes.builtin.models:LeNet"), datasets={"digits": blocked})
'''


def test_a_second_run_on_a_directory_in_use_exits_2_and_a_killed_run_releases_it(tmp_path):
    recipe = tmp_path / "blocking.py"
    recipe.write_text(BLOCKING_RECIPE)
    out = tmp_path / "run"
    first = start_flint("run", str(recipe), "--no-progress", "-o", str(out))
    wait_for(out / "loading", first)  # it holds the directory
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    for command in (["run", "lenet", *QUICK, "-o", str(out)], ["resume", str(out)]):
        second = subprocess.run([sys.executable, "-m", "flint", *command], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert second.returncode == 2, second.stderr
        err = [line for line in second.stderr.splitlines() if not line.startswith("import time:")]
        assert err == [f"flint: error: output dir {out} is in use by process {first.pid} ({sys.executable} -m flint run {recipe} --no-progress -o {out}); wait for it or choose another -o"]
        assert "torch" not in {line.rsplit("|", 1)[-1].strip() for line in second.stderr.splitlines()}  # told at once
    first.kill()  # SIGKILL: no cleanup at all
    first.communicate(timeout=900)
    assert main(["run", "lenet", *QUICK, "-o", str(out)]) == 0  # the kernel released its lock (no checkpoint: a new run)


def test_a_signal_before_training_is_one_line_with_128_plus_n_or_3_when_a_checkpoint_exists(tmp_path):
    recipe = tmp_path / "blocking.py"
    recipe.write_text(BLOCKING_RECIPE)
    out = tmp_path / "run"
    proc = start_flint("run", str(recipe), "--no-progress", "-o", str(out))
    wait_for(out / "loading", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 143 and err.splitlines()[-1] == "flint: stopped by SIGTERM before training started; nothing to resume"
    assert "Traceback" not in err
    # A run with a checkpoint to resume from: exit 3, whatever stopped the relaunch.
    (out / "loading").unlink()
    (out / "checkpoints").mkdir()
    torch.save({}, out / "checkpoints" / "checkpoint_5.pt")
    proc = start_flint("run", str(recipe), "--no-progress", "-o", str(tmp_path / "run"), "--resume")
    wait_for(out / "loading", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 3
    assert err.splitlines()[-1] == f"flint: stopped by SIGINT before training started; flint resume {out} continues from {out / 'checkpoints' / 'checkpoint_5.pt'}"


class Signals:
    """Sends this process signals from inside the run: at an iteration's start, and again at COMPLETED
    (after the stop's checkpoint is written) or right after the first."""

    def __init__(self, first: int, signum: int, again: str) -> None:
        self.first, self.signum, self.again = first, signum, again

    def attach(self, trainer) -> None:
        def send(_):
            os.kill(os.getpid(), self.signum)
            if self.again == "at once":  # within Preemption's grace: the same signal twice (group + parent)
                os.kill(os.getpid(), self.signum)

        trainer.add_event_handler(Events.ITERATION_STARTED(once=self.first), send)
        if self.again == "after the save":
            trainer.add_event_handler(Events.COMPLETED, lambda _: os.kill(os.getpid(), self.signum))


@pytest.mark.parametrize("signum,again", [(signal.SIGTERM, "after the save"), (signal.SIGINT, "at once"), (signal.SIGINT, "after the save")])
def test_more_signals_once_the_stop_is_decided_still_exit_3_with_the_checkpoint(tmp_path, monkeypatch, capsys, signum, again):
    attach_all = flint.recipes.app.train.attach_all
    monkeypatch.setattr(flint.recipes.app.train, "attach_all", lambda hs, t, e: attach_all([*hs, Signals(30, signum, again)], t, e))
    assert main(["run", "lenet", "--epochs", "2", "--no-progress", "-o", str(tmp_path)]) == 3
    assert records(tmp_path)[-1]["status"] == "interrupted"
    assert Checkpointing.find_latest(tmp_path / "checkpoints").name == "checkpoint_30.pt"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # settled: ignored until the process ends


def test_resume_file_into_another_directory_refuses_changed_options(tmp_path, capsys):
    assert main(["run", "lenet", *QUICK, "--batch-size", "32", "-o", str(tmp_path / "a")]) == 0
    checkpoint = Checkpointing.find_latest(tmp_path / "a" / "checkpoints")
    capsys.readouterr()
    args = ["run", "lenet", *QUICK, "--batch-size", "64", "--update-cycle", "2", "--seed", "8", "--resume", str(checkpoint), "-o", str(tmp_path / "b")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err == (f"flint: error: --resume: the checkpoint {checkpoint} was trained with batch_size=32, now 64; update_cycle=1, now 2; "
                   f"seed=42, now 8; resume it unchanged, or start a new run from its weights with --init-from {checkpoint}\n")  # fmt: skip
    assert not (tmp_path / "b").exists()
    assert main(["run", "lenet", *QUICK, "--optimizer", "adam", "--resume", str(tmp_path / "a"), "-o", str(tmp_path / "c")]) == 2
    assert "optimizer='sgd', now 'adam'" in capsys.readouterr().err  # a run directory names its newest checkpoint


def test_a_checkpoint_of_another_optimizer_is_refused_in_words_even_without_its_options(tmp_path, capsys):
    assert main(["run", "lenet", *QUICK, "-o", str(tmp_path / "a")]) == 0
    old = tmp_path / "old.pt"  # as an older Flint wrote it: no options inside (and no checksum: read_state leaves it out)
    state = read_state(Checkpointing.find_latest(tmp_path / "a" / "checkpoints"))
    del state["config"]
    torch.save(state, old)
    capsys.readouterr()
    assert main(["run", "lenet", "--test-run", "--epochs", "3", "--no-progress", "--optimizer", "adam", "--resume", str(old), "-o", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"flint: error: checkpoint {old}: its optimizer was saved by another optimizer than Adam (its options dampening, momentum")


def test_resume_may_grow_epochs_not_shrink_them(tmp_path, capsys):
    assert main(["run", "lenet", "--test-run", "--epochs", "3", "--no-progress", "--interrupt-at", "1", "-o", str(tmp_path)]) == 3
    capsys.readouterr()
    assert main(["run", "lenet", "--test-run", "--epochs", "2", "--no-progress", "--resume", "-o", str(tmp_path)]) == 2
    assert "epochs=3, now 2 (it may grow, not shrink)" in capsys.readouterr().err
    assert main(["resume", str(tmp_path), "--epochs", "4"]) == 0
    assert records(tmp_path)[-1]["epochs"] == 4


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    assert main(["run", "lenet", *QUICK, "-o", str(tmp_path)]) == 0
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["resume", str(tmp_path)]) == 0
    assert "already completed 2 epochs; nothing to do" in capsys.readouterr().err
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()}
    assert after.pop(".flint.lock")[1] == before.pop(".flint.lock")[1]  # taken and let go: its owner line written again
    assert after == before  # no new events file, config.json and train.log as they were


def test_an_empty_config_json_of_an_older_flint_does_not_stop_a_resume(tmp_path, capsys):
    assert main(["run", "lenet", "--test-run", "--epochs", "3", "--no-progress", "--interrupt-at", "1", "-o", str(tmp_path)]) == 3
    (tmp_path / "config.json").write_text("")
    assert main(["run", "lenet", "--test-run", "--epochs", "3", "--no-progress", "--resume", "-o", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 3  # written again, whole


def test_bad_values_are_refused_before_anything_is_written(tmp_path, capsys):
    for args, message in [
        (["--seed", "99999999999999999999999"], "--seed 99999999999999999999999: must be an integer from 0 to 2**63-1"),
        (["--lr", "inf"], "--lr inf: must be a finite number > 0 and <= 3.40282e+38"),
        (["--wd", "inf"], "--wd inf: must be a finite number >= 0 and <= 3.40282e+38"),
        (["--warmup-lr", "nan"], "--warmup-lr nan: must be a finite number >= 0 and <= 3.40282e+38"),
        (["--lr-factor", "inf"], "--lr-factor inf: must be a finite number > 0 and <= 3.40282e+38"),
        (["--progress-file", str(tmp_path / "missing" / "p.json")], f"--progress-file {tmp_path / 'missing' / 'p.json'}: {tmp_path / 'missing'} is not a writable directory"),
    ]:  # fmt: skip
        assert main(["run", "lenet", *args, "-o", str(tmp_path / "run")]) == 2, args
        assert capsys.readouterr().err == f"flint: error: {message}\n"
        assert not (tmp_path / "run").exists()
